"""No secret ever leaves the process: not in a response, a header, a cookie, a log line or a page.

Recognisable values are planted as the API key (OPENAI_API_KEY / REALTIME_API_KEY, which the local
engine is started with, so calls really work), the webhook signing secret, SECRET_KEY and the metrics
token. Then the main flows run for real, error paths included: call set-up through /rtc against the
local engine and against upstreams that fail, echo our Authorization header back, or time out; client
secrets; hang-up; webhooks with bad and good signatures; the console, history and admin pages; 404
and 500 pages with DEBUG off (and Django's debug page, which must mask them too). Every response
(status line, headers, body) and all log output (every record at DEBUG, formatted by our own
formatter and by each configured handler's, tracebacks included, plus whatever reached stdout and
stderr) is searched for the planted values and the forms they travel in (the signing secret's
base64 text and its decoded key bytes).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

import voiceagent.asgi  # noqa: F401  (its django.setup() re-applies LOGGING: import it before capturing)
from calls.observer.worker import run_embedded_worker
from realtime_local.webhooks import sign
from tests.engine.conftest import RunningEngine, StartEngine, make_offer, start_engine
from tests.factories import CallFactory, SipCallFactory, StaffUserFactory, WebhookDeliveryFactory
from tests.web.conftest import (
    FakeUpstream,
    Respond,
    channel_layer,
    close_async_orm_connections,
    default_agent,
    fake_upstream,
    point_settings_at,
)

__all__ = ["channel_layer", "close_async_orm_connections", "default_agent", "fake_upstream", "start_engine"]

pytestmark = [pytest.mark.timeout(240)]

_TAG = secrets.token_hex(6)
API_KEY = f"sk-planted-api-key-{_TAG}"
SIGNING_KEY_BYTES = f"planted-signing-key-{_TAG}".encode()
SIGNING_SECRET = "whsec_" + base64.b64encode(SIGNING_KEY_BYTES).decode()
SECRET_KEY = f"planted-django-secret-key-{_TAG}-0123456789abcdefghijklmnopqrstuvwxyz"
METRICS_TOKEN = f"planted-metrics-token-{_TAG}"

#: Every form a planted secret could travel in, with a name for the failure message.
NEEDLES: dict[str, str] = {
    "API key": API_KEY,
    "API key (without its prefix)": API_KEY.removeprefix("sk-"),
    "signing secret": SIGNING_SECRET,
    "signing secret (base64 part)": SIGNING_SECRET.removeprefix("whsec_"),
    "signing key bytes": SIGNING_KEY_BYTES.decode(),
    "SECRET_KEY": SECRET_KEY,
    "metrics token": METRICS_TOKEN,
}


class Capture(logging.Handler):
    """Keeps every record, formatted by a plain formatter and by each configured handler's."""

    def __init__(self, formatters: list[logging.Formatter]) -> None:
        super().__init__(level=logging.DEBUG)
        self.formatters = [logging.Formatter("%(levelname)s %(name)s %(message)s"), *formatters]
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        for formatter in self.formatters:
            try:
                self.lines.append(formatter.format(record))
            except Exception as exc:  # a formatter that cannot format a record must not hide it
                self.lines.append(f"{record.name} {record.msg!r} {record.args!r} ({exc})")


@contextmanager
def all_logs_at_debug() -> Iterator[Capture]:
    """Attach a capturing handler to the root logger and to every logger that does not propagate,
    with every level at DEBUG for the duration."""
    loggers = [logging.getLogger()] + [
        logger
        for logger in logging.root.manager.loggerDict.values()
        if isinstance(logger, logging.Logger) and not logger.propagate
    ]
    formatters = [
        handler.formatter
        for logger in loggers
        for handler in logger.handlers
        if handler.formatter is not None
    ]
    capture = Capture(formatters)
    levels = {logger: logger.level for logger in loggers}
    for logger in loggers:
        logger.addHandler(capture)
        logger.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for logger in loggers:
            logger.removeHandler(capture)
            logger.setLevel(levels[logger])


class Seen:
    """Everything that left the process in responses, as text."""

    def __init__(self) -> None:
        self.responses: list[tuple[str, str]] = []

    def add(self, what: str, response: Any) -> Any:
        headers = "\n".join(f"{name}: {value}" for name, value in response.items())
        cookies = "\n".join(morsel.OutputString() for morsel in response.cookies.values())
        body = b"" if getattr(response, "streaming", False) else response.content
        text = f"{response.status_code}\n{headers}\n{cookies}\n{body.decode('latin-1')}"
        self.responses.append((what, text))
        return response


def leaks(texts: list[tuple[str, str]]) -> list[str]:
    found = []
    for where, text in texts:
        for name, needle in NEEDLES.items():
            if needle in text:
                at = text.index(needle)
                found.append(f"{name} in {where}: …{text[max(0, at - 80) : at + 80]!r}…")
    return found


@pytest.fixture
def planted(settings: SettingsWrapper) -> None:
    settings.OPENAI_API_KEY = API_KEY
    settings.REALTIME_API_KEY = API_KEY
    settings.OPENAI_SIGNING_SECRET = SIGNING_SECRET
    settings.SECRET_KEY = SECRET_KEY
    settings.METRICS_TOKEN = METRICS_TOKEN
    settings.TELEPHONY_MAX_CONCURRENT_CALLS = None
    settings.TELEPHONY_BUSINESS_HOURS = ""


async def signed_in(user: User) -> AsyncClient:
    client = AsyncClient(raise_request_exception=False)
    await client.aforce_login(user)
    return client


def webhook_body(call_id: str) -> bytes:
    data = {
        "call_id": call_id,
        "sip_headers": [
            {"name": "From", "value": "<sip:+15551230000@example.test>"},
            {"name": "To", "value": "<sip:+15559870000@example.test>"},
        ],
    }
    return json.dumps(
        {
            "object": "event",
            "id": f"evt_{secrets.token_hex(8)}",
            "type": "realtime.call.incoming",
            "created_at": int(time.time()),
            "data": data,
        }
    ).encode()


async def run_engine_flows(
    seen: Seen, logs: Capture, engine: RunningEngine, staff: User, superuser: User
) -> None:
    """Set-up, hang-up, client secret, webhooks (bad, good), pages: against the real local engine."""
    client = await signed_in(staff)
    created = seen.add(
        "POST /rtc", await client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    )
    assert created.status_code == 201, created.content
    call_id = created["Location"].rsplit("/", 1)[-1]
    await observed(logs, call_id)
    seen.add(
        "POST hang-up", await client.post(f"/rtc/{call_id}/hangup", headers={"Origin": "http://testserver"})
    )
    secret = seen.add("client secret", await client.post("/api/realtime/client-secret"))
    assert secret.status_code == 200 and secret.json()["value"] != API_KEY
    seen.add(
        "bad mode",
        await client.post("/api/realtime/client-secret", {"mode": "x"}, content_type="application/json"),
    )
    seen.add(
        "register",
        await client.post("/api/calls", {"provider_call_id": "rtc_nope"}, content_type="application/json"),
    )

    provider_call_id = await engine.incoming_call(**{"from": "+15551230000", "to": "+15559870000"})
    body = webhook_body(provider_call_id)
    good_headers = sign(
        secret=SIGNING_SECRET, webhook_id=f"wh_{secrets.token_hex(6)}", timestamp=int(time.time()), body=body
    )
    webhook = AsyncClient()
    for what, headers in [
        ("webhook unsigned", {}),
        (
            "webhook bad signature",
            {**good_headers, "webhook-signature": "v1,AAAA" + good_headers["webhook-signature"][7:]},
        ),
        (
            "webhook stale",
            sign(secret=SIGNING_SECRET, webhook_id="wh_old", timestamp=int(time.time()) - 3600, body=body),
        ),
        ("webhook good", good_headers),
        ("webhook repeat", good_headers),
    ]:
        seen.add(
            what,
            await webhook.post(
                "/telephony/webhook", data=body, content_type="application/json", headers=headers
            ),
        )
    from telephony.services import wait_for_answers

    await wait_for_answers(grace_s=10)
    await run_page_flows(seen, client, await signed_in(superuser))


async def observed(logs: Capture, call_id: str) -> None:
    """Wait until the observer worker has opened the call's sideband (with our key in its handshake)."""
    for _ in range(300):
        if any(call_id in line and "observing provider call" in line for line in logs.lines):
            await asyncio.sleep(0.5)  # the handshake follows the log line
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the observer never attached to the call")


async def run_page_flows(seen: Seen, staff: AsyncClient, admin: AsyncClient) -> None:
    """The console, history and admin pages, metrics, and 404s."""
    call = await sync_to_async(CallFactory.create)(error="The Realtime API refused the request.")
    sip = await sync_to_async(SipCallFactory.create)()
    await sync_to_async(WebhookDeliveryFactory.create)(call=sip)
    for path in [
        "/",
        "/calls/",
        "/calls/compare/",
        f"/calls/{call.pk}/",
        "/no-such-page/",
        "/accounts/login/",
    ]:
        seen.add(f"staff GET {path}", await staff.get(path))
    for path in [
        "/admin/",
        "/admin/calls/call/",
        f"/admin/calls/call/{call.pk}/change/",
        f"/admin/calls/call/{sip.pk}/change/",
        "/admin/calls/agentprofile/",
        "/admin/calls/webhookdelivery/",
        "/admin/calls/event/",
        "/admin/calls/mcpserver/",
        "/admin/calls/mcpserver/add/",
        "/admin/auth/user/",
        "/admin/password_change/",
        "/admin/jsi18n/",
    ]:
        seen.add(f"admin GET {path}", await admin.get(path))
    anonymous = AsyncClient()
    seen.add("metrics without token", await anonymous.get("/metrics"))
    seen.add("metrics wrong token", await anonymous.get("/metrics", headers={"Authorization": "Bearer nope"}))
    seen.add("healthz", await anonymous.get("/healthz"))
    seen.add("readyz", await anonymous.get("/readyz"))
    seen.add(
        "login failure", await anonymous.post("/accounts/login/", {"username": "x", "password": API_KEY})
    )


def echoing(status: int) -> Respond:
    """An upstream that answers `status` with our own Authorization header in its error message
    (OpenAI's 401 quotes the key it got, masked; a broken proxy may quote it whole)."""

    async def respond(request: web.Request) -> web.Response:
        auth = request.headers.get("Authorization", "")
        message = f"Incorrect API key provided: {auth.removeprefix('Bearer ')} (header was {auth!r})"
        return web.json_response({"error": {"message": message, "code": "invalid_api_key"}}, status=status)

    return respond


async def slow(request: web.Request) -> web.Response:
    await asyncio.sleep(2)
    return web.Response(status=200)


async def html_error(request: web.Request) -> web.Response:
    return web.Response(
        status=502, text=f"<html>bad gateway for {request.headers.get('Authorization')}</html>"
    )


async def run_failing_upstream_flows(
    seen: Seen,
    start_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    staff: User,
) -> None:
    client = await signed_in(staff)
    web_call = await sync_to_async(CallFactory.create)(user=staff, status="active", ended_at=None)
    for name, respond in [
        ("401 echo", echoing(401)),
        ("500 echo", echoing(500)),
        ("429 echo", echoing(429)),
        ("html 502", html_error),
        ("timeout", slow),
    ]:
        upstream = await start_upstream(respond)
        point_settings_at(settings, base_url=upstream.base_url, api_key=API_KEY)
        seen.add(
            f"/rtc {name}", await client.post("/rtc", data=await make_offer(), content_type="application/sdp")
        )
        seen.add(f"client secret {name}", await client.post("/api/realtime/client-secret"))
        seen.add(
            f"hang-up {name}",
            await client.post(f"/rtc/{web_call.pk}/hangup", headers={"Origin": "http://testserver"}),
        )
        assert any(API_KEY in request.headers.get("Authorization", "") for request in upstream.seen)


@pytest.mark.usefixtures("planted", "default_agent")
async def test_planted_secrets_never_appear_in_responses_or_logs(
    transactional_db: None,
    start_engine: StartEngine,
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    capfd: pytest.CaptureFixture[str],
    channel_layer: Any,
) -> None:
    seen = Seen()
    staff = await sync_to_async(StaffUserFactory.create)()
    superuser = await sync_to_async(StaffUserFactory.create)(is_superuser=True)
    with all_logs_at_debug() as logs:
        # The observer worker as `serve` embeds it: it opens each call's sideband with our key.
        worker = asyncio.create_task(run_embedded_worker())
        engine = await start_engine(api_key=API_KEY)
        point_settings_at(settings, base_url=engine.base_url, api_key=API_KEY)
        await run_engine_flows(seen, logs, engine, staff, superuser)
        await run_failing_upstream_flows(seen, fake_upstream, settings, staff)
        worker.cancel()
        await asyncio.wait([worker], timeout=15)
        # The worker's lease thread keeps its own database connection open: close it too.
        from django.db import connections

        from calls.observer.worker import _lease_executor

        await asyncio.get_running_loop().run_in_executor(_lease_executor, connections.close_all)
    out, err = capfd.readouterr()

    found = leaks(seen.responses) + leaks([("log", line) for line in logs.lines])
    found += leaks([("stdout", out), ("stderr", err)])
    assert not found, "\n".join(found)
    # The flows did run (and logged): a silent run would prove nothing.
    assert len(seen.responses) > 40
    assert any("refused" in line or "failed" in line for line in logs.lines)
    assert any("Authorization" in line for line in logs.lines), "the sideband handshake was not logged"


# --- error pages -----------------------------------------------------------------------------------


@pytest.mark.usefixtures("planted")
@pytest.mark.parametrize("debug", [False, True], ids=["DEBUG off", "DEBUG on (debug page)"])
async def test_error_pages_show_no_secret(
    debug: bool,
    transactional_db: None,
    settings: SettingsWrapper,
    capfd: pytest.CaptureFixture[str],
    channel_layer: Any,
) -> None:
    """A crashing view's 500 (and 404s): the production page, and Django's debug page, which lists
    the settings: ours are named so that its filter masks them (…KEY, …SECRET, …TOKEN)."""
    settings.ROOT_URLCONF = "tests.security.urls"
    settings.DEBUG = debug
    seen = Seen()
    client = AsyncClient(raise_request_exception=False)
    with all_logs_at_debug() as logs:
        crashed = seen.add("500", await client.get("/boom", headers={"Authorization": f"Bearer {API_KEY}"}))
        seen.add("404", await client.get("/nothing-here"))
    out, err = capfd.readouterr()

    assert crashed.status_code == 500
    if debug:
        assert b"OPENAI_API_KEY" in crashed.content  # the settings are listed, masked
    found = leaks(seen.responses) + leaks([("log", line) for line in logs.lines])
    found += leaks([("stdout", out), ("stderr", err)])
    assert not found, "\n".join(found)


@pytest.mark.parametrize(
    "text",
    [
        "Incorrect API key provided: sk-proj-abc*****************************xyz.",
        "Authorization: Bearer ek_68af3b2c1d",
        "signing with whsec_c2VjcmV0LXNpZ25pbmcta2V5",
        f"the key {API_KEY} was refused",
    ],
)
def test_upstream_text_loses_its_credentials(text: str, planted: None) -> None:
    from calls.services.realtime_client import _upstream_error

    error = _upstream_error(401, json.dumps({"error": {"message": text, "code": "invalid_api_key"}}).encode())
    assert "[redacted]" in error.message
    assert not any(part in error.message for part in ("sk-proj", "ek_68", "whsec_", API_KEY))
