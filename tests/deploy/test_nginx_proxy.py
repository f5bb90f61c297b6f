"""The shipped nginx recipe in front of the product, over HTTPS, with a real browser call through it.

deploy/nginx/voiceagent.conf is the source: only its ports, certificate paths and ACME root are
substituted (each substitution must match the shipped text exactly, so a changed recipe breaks this
test rather than being silently bypassed), and it is included by a minimal main config, as Debian's
/etc/nginx/nginx.conf includes sites-enabled/. nginx (the Debian package) runs as a child process with
a certificate made here by openssl for 127.0.0.1.

Behind it runs `manage.py serve` as in production (DEBUG off: Secure cookies and whitenoise;
HTTPS=true: https redirect and HSTS; TRUST_PROXY_HEADERS=true) with the local engine (text-only: the
call needs no speech here). Headless Chromium signs in over https, launches a call (SDP offer through
nginx to /rtc), and the console's live feed (`wss://…/ws/calls/<id>/`) is upgraded through nginx (101
in nginx's access log) and carries Django's messages. A webhook signed with svix is POSTed through nginx
and accepted by Django's verification: nginx passed body and webhook-* headers byte for byte.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import re
import signal
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, WebSocket, expect
from svix.webhooks import Webhook

from scripts.screenshots import DemoServer, chromium, demo_server, free_port, new_page, sign_in
from tests.e2e.console import wait_for_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parent.parent.parent
SHIPPED = REPO / "deploy" / "nginx" / "voiceagent.conf"
NGINX = "/usr/sbin/nginx"
WEBHOOK_SECRET = "whsec_" + "bmdpbngtdGVzdC1zaWduaW5nLXNlY3JldC0zMmJ5dGVz"  # 32 bytes, base64
CONNECT_TIMEOUT_MS = 30_000


@dataclasses.dataclass(frozen=True)
class Proxy:
    https_url: str
    http_url: str
    error_log: Path
    access_log: Path

    def log_tail(self) -> str:
        return self.error_log.read_text(errors="replace")[-3000:]


def render_shipped_config(
    *,
    upstream_port: int,
    http_port: int,
    https_port: int,
    cert: Path,
    key: Path,
    acme_root: Path,
    access_log: Path,
) -> str:
    """The shipped server blocks with this test's ports and paths (IPv6 listeners dropped: loopback v4)."""
    text = SHIPPED.read_text()
    substitutions = [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};", 1),
        ("    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n", 1),
        ("    listen [::]:80;\n", "", 1),
        ("    listen 443 ssl http2;\n", f"    listen 127.0.0.1:{https_port} ssl http2;\n", 1),
        ("    listen [::]:443 ssl http2;\n", "", 1),
        ("/etc/letsencrypt/live/voiceagent.example.com/fullchain.pem", str(cert), 1),
        ("/etc/letsencrypt/live/voiceagent.example.com/privkey.pem", str(key), 1),
        ("root /var/www/letsencrypt;", f"root {acme_root};", 1),
        ("/var/log/nginx/voiceagent.access.log", str(access_log), 1),
    ]
    for old, new, count in substitutions:
        assert text.count(old) == count, f"the shipped nginx config no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def main_config(prefix: Path, site: Path) -> str:
    """What Debian's nginx.conf provides around a site, with every path inside `prefix`."""
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers must read the test's files
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""{user}worker_processes 1;
error_log {prefix / "error.log"} info;
pid {prefix / "nginx.pid"};
events {{ worker_connections 256; }}
http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log {prefix / "access.log"};
{temp}
    include {site};
}}
"""


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert),
            "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


def wait_for_https(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"nginx exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            httpx.get(url, verify=False, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"nginx did not answer {url}:\n{log.read_text()[-3000:]}")


@pytest.fixture(scope="module")
def app() -> Iterator[DemoServer]:
    with demo_server(
        debug=False,
        engine=True,
        startup_timeout_s=120.0,
        extra_env={
            "TRUST_PROXY_HEADERS": "true",
            "HTTPS": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OPENAI_SIGNING_SECRET": WEBHOOK_SECRET,
            "REALTIME_LOCAL_NO_SPEECH": "1",
            "REALTIME_LOCAL_NO_SIP": "1",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def proxy(app: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    prefix = tmp_path_factory.mktemp("nginx")
    acme = prefix / "acme"
    (acme / ".well-known" / "acme-challenge").mkdir(parents=True)
    (acme / ".well-known" / "acme-challenge" / "token").write_text("challenge-answer")
    cert, key = self_signed_certificate(prefix)
    upstream_port = int(app.base_url.rsplit(":", 1)[1])
    http_port, https_port = free_port(), free_port()
    site = prefix / "voiceagent.conf"
    site.write_text(
        render_shipped_config(
            upstream_port=upstream_port,
            http_port=http_port,
            https_port=https_port,
            cert=cert,
            key=key,
            acme_root=acme,
            access_log=prefix / "access.log",
        )
    )
    conf = prefix / "nginx.conf"
    conf.write_text(main_config(prefix, site))
    error_log = prefix / "error.log"
    checked = subprocess.run(
        [NGINX, "-t", "-p", str(prefix), "-e", str(error_log), "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(
        [NGINX, "-p", str(prefix), "-e", str(error_log), "-c", str(conf), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        https_url = f"https://127.0.0.1:{https_port}"
        wait_for_https(https_url + "/healthz", process, error_log)
        yield Proxy(
            https_url=https_url,
            http_url=f"http://127.0.0.1:{http_port}",
            error_log=error_log,
            access_log=prefix / "access.log",
        )
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful shutdown of master and workers
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


@pytest.fixture(scope="module")
def silence_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three seconds of silence as the fake microphone (the call needs a track, not words)."""
    path = tmp_path_factory.mktemp("audio") / "silence.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(48_000)
        out.writeframes(b"\x00\x00" * 48_000 * 3)
    return path


@pytest.fixture(scope="module")
def browser(silence_wav: Path) -> Iterator[Browser]:
    with chromium(fake_microphone=silence_wav, extra_args=["--ignore-certificate-errors"]) as launched:
        yield launched


def state_of(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        "() => { const c = window.voiceagentConsole; return {state: c.state, peer: c.peerState,"
        " feed: c.feedState, server: c.serverStatus, events: c.eventsCount}; }"
    )
    return result


def test_a_browser_call_through_nginx_over_https_gets_its_live_feed_over_an_upgraded_websocket(
    app: DemoServer, proxy: Proxy, browser: Browser
) -> None:
    through_proxy = dataclasses.replace(app, base_url=proxy.https_url)
    page: Page = new_page(browser)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    page.on("console", on_console)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    websockets: list[str] = []
    frames: list[str] = []

    def on_websocket(socket: WebSocket) -> None:
        websockets.append(socket.url)
        socket.on("framereceived", lambda payload: frames.append(str(payload)))

    page.on("websocket", on_websocket)

    # Signing in needs the Secure session cookie and a CSRF check that trusts https: both only work
    # because Django believes nginx's X-Forwarded-Proto.
    sign_in(page, through_proxy)
    assert page.url.startswith(proxy.https_url)
    page.click("[data-transport='proxy']")
    page.click("#launch")
    try:
        page.wait_for_function(
            "() => window.voiceagentConsole.peerState === 'connected'"
            " && window.voiceagentConsole.feedState === 'open'",
            timeout=CONNECT_TIMEOUT_MS,
        )
    except Exception as exc:
        state = state_of(page)
        raise AssertionError(
            f"no connected call with a live feed ({exc}): {state} {errors}\n"
            f"{proxy.log_tail()}\n{app.log_tail()}"
        ) from None
    expect(page.locator("#status-text")).to_have_text("Connected")
    call_id = page.evaluate("() => window.voiceagentConsole.callId")
    https_port = proxy.https_url.rsplit(":", 1)[1]
    assert f"wss://127.0.0.1:{https_port}/ws/calls/{call_id}/" in websockets
    # Django's first message on the feed (the call's status) came down the upgraded socket. The call's
    # events follow as the observer stores them (how many depends on the observer, not on the proxy).
    page.wait_for_function("() => window.voiceagentConsole.serverStatus !== null", timeout=10_000)
    assert any('"type": "status"' in frame or '"type":"status"' in frame for frame in frames), frames
    print(f"\nlive feed through nginx: {len(frames)} frame(s), {state_of(page)['events']} event(s)")
    row = wait_for_rows(app, "SELECT transport FROM calls_call WHERE id = ?", call_id.replace("-", ""))
    assert row == [("proxy",)]

    page.click("#end")
    expect(page.locator("#status-text")).to_have_text("Idle")
    wait_for_rows(app, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", call_id.replace("-", ""))
    page.context.close()
    assert errors == []

    # nginx logged the upgrade: 101 Switching Protocols on the live feed's path.
    access = proxy.access_log.read_text()
    assert re.search(rf'"GET /ws/calls/{call_id}/ HTTP/1\.1" 101 ', access), access[-2000:]
    # The console's recording chunks (when the agent profile records) went through the recording
    # location (streamed to daphne) and were all stored.
    chunks = re.findall(rf'"POST /calls/{call_id}/recording\?\S* HTTP/[0-9.]+" (\d+) ', access)
    assert all(status == "200" for status in chunks), chunks
    print(f"recording chunks through nginx: {len(chunks)}")


def incoming_call_body(
    *, event_type: str = "realtime.call.incoming", call_id: str = "rtc_through_nginx_0001"
) -> bytes:
    event = {
        "object": "event",
        "id": "evt_through_proxy",
        "type": event_type,
        "created_at": int(time.time()),
        "data": {
            "call_id": call_id,
            "sip_headers": [
                {"name": "From", "value": "<sip:+15550104242@example.test>;tag=é-ünicode"},
                {"name": "To", "value": "<sip:+15550100000@example.test>"},
            ],
        },
    }
    # Odd but legal JSON layout (spaces, a newline, non-ASCII): any re-encoding would break the signature.
    return json.dumps(event, indent=1, ensure_ascii=False).encode() + b"\r\n"


def svix_headers(body: bytes, webhook_id: str) -> dict[str, str]:
    now = dt.datetime.now(tz=dt.UTC)
    signature = Webhook(WEBHOOK_SECRET).sign(webhook_id, now, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def test_a_signed_webhook_passes_through_nginx_with_its_signature_intact(
    app: DemoServer, proxy: Proxy
) -> None:
    body = incoming_call_body()
    with httpx.Client(verify=False, timeout=10) as client:
        response = client.post(
            f"{proxy.https_url}/telephony/webhook", content=body, headers=svix_headers(body, "msg_nginx_1")
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "accepted"}
    rows = wait_for_rows(
        app, "SELECT type, outcome FROM calls_webhookdelivery WHERE webhook_id = ?", "msg_nginx_1"
    )
    assert rows == [("realtime.call.incoming", "accepted")]


def test_a_chunked_webhook_is_passed_through_whole(app: DemoServer, proxy: Proxy) -> None:
    """A body sent without Content-Length (chunked) reaches Django as the same bytes."""
    body = incoming_call_body(call_id="rtc_through_nginx_0002")
    with httpx.Client(verify=False, timeout=10) as client:
        response = client.post(
            f"{proxy.https_url}/telephony/webhook",
            content=iter([body[:50], body[50:]]),
            headers=svix_headers(body, "msg_nginx_2"),
        )
    assert response.status_code == 200, response.text
    assert response.json() == {"outcome": "accepted"}


def test_a_webhook_altered_on_the_way_is_refused_through_nginx(proxy: Proxy) -> None:
    body = incoming_call_body()
    headers = svix_headers(body, "msg_nginx_3")
    with httpx.Client(verify=False, timeout=10) as client:
        response = client.post(
            f"{proxy.https_url}/telephony/webhook", content=body.replace(b"4242", b"4243"), headers=headers
        )
    assert response.status_code == 400
    assert "signature verification failed" in response.json()["error"]


def test_plain_http_is_redirected_to_https_but_the_acme_challenge_is_served(proxy: Proxy) -> None:
    with httpx.Client(timeout=10) as client:
        redirected = client.get(f"{proxy.http_url}/calls/?page=2")
        challenge = client.get(f"{proxy.http_url}/.well-known/acme-challenge/token")
    assert redirected.status_code == 301
    assert redirected.headers["location"] == "https://127.0.0.1/calls/?page=2"
    assert challenge.status_code == 200
    assert challenge.text == "challenge-answer"


def test_a_forged_forwarded_proto_from_the_client_is_replaced_by_nginx(proxy: Proxy) -> None:
    """nginx sets X-Forwarded-Proto to its own scheme: a client claiming `http` on an https request
    does not make Django see plain http (its CSRF check of the https Origin would then fail: 403)."""
    forged = {"X-Forwarded-Proto": "http"}
    with httpx.Client(verify=False, timeout=10) as client:
        form = client.get(f"{proxy.https_url}/accounts/login/", headers=forged)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None
        answer = client.post(
            f"{proxy.https_url}/accounts/login/",
            data={"csrfmiddlewaretoken": token.group(1), "username": "nobody", "password": "wrong"},
            headers={**forged, "Origin": proxy.https_url, "Referer": f"{proxy.https_url}/accounts/login/"},
        )
    assert answer.status_code == 200  # the form again, with its error: CSRF passed as https
    assert "csrfmiddlewaretoken" in answer.text
    # HTTPS=true: Django sends HSTS on what it sees as https (and does not redirect it again).
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_metrics_are_not_served_through_the_public_proxy(proxy: Proxy) -> None:
    """/metrics is scraped on the app's loopback port; through nginx every peer would be the proxy."""
    with httpx.Client(verify=False, timeout=10) as client:
        response = client.get(f"{proxy.https_url}/metrics", headers={"Authorization": "Bearer anything"})
    assert response.status_code == 404


def test_one_request_id_in_nginx_log_and_django_response(proxy: Proxy) -> None:
    """nginx's $request_id becomes Django's request id: the response echoes it, the access log has it."""
    with httpx.Client(verify=False, timeout=10) as client:
        response = client.get(f"{proxy.https_url}/healthz", headers={"X-Request-ID": "client-chosen"})
    request_id = response.headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id
    deadline = time.monotonic() + 5  # nginx writes the line once the response has gone out
    while f"rid={request_id}" not in proxy.access_log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert f"rid={request_id}" in proxy.access_log.read_text()
