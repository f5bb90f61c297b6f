"""The shipped Caddyfile in front of the product over HTTPS: WebSocket upgrade, the signed webhook
passed through intact, forged forwarding headers replaced.

Runs when Caddy is installed (`apt-get install caddy`; Debian 12 ships 2.6). The shipped file is the
source: only its site address (plus a `tls` line with a certificate made here, instead of ACME), its
upstream port and its log path are substituted, and global options keep Caddy's state in a temporary
folder (no admin endpoint, no HTTP redirect listener).
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect
from websockets.typing import Origin

from scripts.screenshots import DemoServer, demo_server, free_port
from tests.deploy.test_nginx_proxy import (
    WEBHOOK_SECRET,
    incoming_call_body,
    self_signed_certificate,
    svix_headers,
    wait_for_https,
)
from tests.e2e.console import wait_for_rows

CADDY = "/usr/bin/caddy"
SHIPPED = Path(__file__).resolve().parent.parent.parent / "deploy" / "Caddyfile"

pytestmark = [
    pytest.mark.timeout(240),
    pytest.mark.skipif(not Path(CADDY).exists(), reason="Caddy is not installed (apt-get install caddy)"),
]


def render_shipped_caddyfile(
    *, upstream_port: int, https_port: int, cert: Path, key: Path, state: Path
) -> str:
    text = SHIPPED.read_text()
    substitutions = [
        (
            "\temail admin@voiceagent.example.com\n",
            f"\temail admin@voiceagent.example.com\n\tadmin off\n\tauto_https disable_redirects\n"
            f"\tstorage file_system {state}\n",
        ),
        ("\nvoiceagent.example.com {\n", f"\nhttps://127.0.0.1:{https_port} {{\n\ttls {cert} {key}\n"),
        ("reverse_proxy 127.0.0.1:8000", f"reverse_proxy 127.0.0.1:{upstream_port}"),
        ("output file /var/log/caddy/voiceagent.log", f"output file {state / 'access.log'}"),
    ]
    for old, new in substitutions:
        assert text.count(old) == 1, f"the shipped Caddyfile no longer contains {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture(scope="module")
def app() -> Iterator[DemoServer]:
    with demo_server(
        debug=False,
        extra_env={
            "TRUST_PROXY_HEADERS": "true",
            "HTTPS": "true",
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "OPENAI_SIGNING_SECRET": WEBHOOK_SECRET,
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def caddy_url(app: DemoServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("caddy")
    cert, key = self_signed_certificate(state)
    https_port = free_port()
    config = state / "Caddyfile"
    config.write_text(
        render_shipped_caddyfile(
            upstream_port=int(app.base_url.rsplit(":", 1)[1]),
            https_port=https_port,
            cert=cert,
            key=key,
            state=state,
        )
    )
    log = state / "caddy.log"
    env = {**os.environ, "HOME": str(state), "XDG_DATA_HOME": str(state), "XDG_CONFIG_HOME": str(state)}
    with log.open("wb") as output:
        process = subprocess.Popen(
            [CADDY, "run", "--config", str(config), "--adapter", "caddyfile"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        url = f"https://127.0.0.1:{https_port}"
        wait_for_https(url + "/healthz", process, log)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def test_a_signed_webhook_passes_through_caddy_with_its_signature_intact(
    app: DemoServer, caddy_url: str
) -> None:
    body = incoming_call_body(event_type="realtime.call.ended", call_id="rtc_through_caddy_0001")
    with httpx.Client(verify=False, timeout=10) as client:
        plain = client.post(
            f"{caddy_url}/telephony/webhook", content=body, headers=svix_headers(body, "msg_caddy_1")
        )
        chunked = client.post(
            f"{caddy_url}/telephony/webhook",
            content=iter([body[:40], body[40:]]),
            headers=svix_headers(body, "msg_caddy_2"),
        )
        altered = client.post(
            f"{caddy_url}/telephony/webhook",
            content=body.replace(b"4242", b"4243"),
            headers=svix_headers(body, "msg_caddy_3"),
        )
    assert (plain.status_code, plain.json()) == (200, {"outcome": "ignored"}), plain.text
    assert (chunked.status_code, chunked.json()) == (200, {"outcome": "ignored"}), chunked.text
    assert altered.status_code == 400
    rows = wait_for_rows(
        app, "SELECT webhook_id FROM calls_webhookdelivery WHERE webhook_id LIKE 'msg_caddy_%'"
    )
    assert sorted(rows) == [("msg_caddy_1",), ("msg_caddy_2",)]


def test_the_live_feed_websocket_is_upgraded_through_caddy(caddy_url: str) -> None:
    """Without a session the consumer accepts the socket, then closes it with 4403: the 101 and the
    close frame both came through Caddy."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    url = caddy_url.replace("https://", "wss://") + f"/ws/calls/{uuid.uuid4()}/"
    with (
        connect(url, ssl=context, origin=Origin(caddy_url), open_timeout=10) as socket,
        pytest.raises(ConnectionClosed) as closed,
    ):
        socket.recv(timeout=10)
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code in (4403, 4404)


def test_a_forged_forwarded_proto_is_replaced_by_caddy(caddy_url: str) -> None:
    forged = {"X-Forwarded-Proto": "http"}
    with httpx.Client(verify=False, timeout=10) as client:
        form = client.get(f"{caddy_url}/accounts/login/", headers=forged)
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text)
        assert token is not None
        answer = client.post(
            f"{caddy_url}/accounts/login/",
            data={"csrfmiddlewaretoken": token.group(1), "username": "nobody", "password": "wrong"},
            headers={**forged, "Origin": caddy_url, "Referer": f"{caddy_url}/accounts/login/"},
        )
    assert answer.status_code == 200  # CSRF passed as https: Caddy's X-Forwarded-Proto won
    assert answer.headers["strict-transport-security"].startswith("max-age=")


def test_a_body_over_the_limit_is_refused_before_django(caddy_url: str) -> None:
    with httpx.Client(verify=False, timeout=20) as client:
        response = client.post(
            f"{caddy_url}/rtc?mode=audio",
            content=b"v=0\r\n" + b"a" * (2 * 1024 * 1024),
            headers={"content-type": "application/sdp"},
        )
    # Caddy stops reading at max_size: Debian's 2.6 then answers 502 (the cut body fails the proxied
    # request), later versions 413. Either way the body never reaches Django whole.
    assert response.status_code in (413, 502), (response.status_code, response.text[:200])
    assert "json" not in response.headers.get("content-type", "")  # Caddy's answer, not Django's
