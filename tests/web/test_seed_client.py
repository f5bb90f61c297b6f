"""The original lab's own browser client still works against our `/rtc`, served same-origin.

The lab's `frontend/index.html` (section 5 of the seed text) is extracted at test time and served at
`/seed/` by this module, which doubles as the test's URLconf (the product's URLs plus that one page).
A signed-in staff user clicks its Start button in headless Chromium with a fake microphone: the page
posts the raw SDP (`Content-Type: application/sdp`, no CSRF token) to `/rtc`, reads the call id from
`Location`, and on Stop posts `/rtc/<id>/hangup` with no body and no token (accepted because the
browser says it is same-origin). The engine runs speech-less in a thread of its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from django.db import connections
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, URLResolver, include, path
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import AgentProfile, Call
from scripts.screenshots import CHROMIUM
from tests.factories import PASSWORD, StaffUserFactory
from tests.web.conftest import ThreadedEngine

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page
    from pytest_django.live_server_helper import LiveServer

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

# shared/ lies beside the checkout (as in CI's clean clone) or at the workplace's fixed place.
_SEED_NAME = "seed/lab3-webrtc-realtime-voice-agent.txt"
_SEED_CANDIDATES = [
    Path(__file__).resolve().parents[3] / "shared" / _SEED_NAME,
    Path("/work/shared") / _SEED_NAME,
]
SEED_TEXT = next((path for path in _SEED_CANDIDATES if path.is_file()), _SEED_CANDIDATES[0])
BROWSER_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
]


def seed_index_html() -> str:
    """The lab's frontend/index.html, as printed in section 5 of the seed text."""
    if not SEED_TEXT.is_file():
        pytest.skip(f"the seed text is not on this machine ({SEED_TEXT})")
    text = SEED_TEXT.read_text()
    start = text.index("<!DOCTYPE html>")
    end = text.index("</html>", start) + len("</html>")
    return text[start:end]


def seed_page(request: HttpRequest) -> HttpResponse:
    response = HttpResponse(seed_index_html())
    # The lab's page is one file of inline script and style: it brings its own policy (our middleware
    # keeps a response's own), which also lets Playwright's wait_for_function evaluate its predicate.
    response["Content-Security-Policy"] = "default-src 'self' 'unsafe-inline' 'unsafe-eval'"
    return response


urlpatterns: list[URLPattern | URLResolver] = [
    path("seed/", seed_page),
    path("", include("voiceagent.urls")),
]


@pytest.fixture
def seed_site(settings: SettingsWrapper, live_server: LiveServer) -> str:
    settings.ROOT_URLCONF = __name__
    return live_server.url


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Browser]:
    """Headless Debian Chromium with a fake microphone. Playwright's sync API runs an event loop in
    the test's thread, so the test's own (synchronous, non-overlapping) ORM calls must be allowed."""
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BROWSER_FLAGS)
        try:
            yield launched
        finally:
            launched.close()


def wait_until(condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def log_lines(page: Page) -> list[str]:
    return [line.strip() for line in page.locator("#activity .activity-item").all_inner_texts()]


def test_the_labs_client_starts_and_stops_a_call_through_our_rtc(
    seed_site: str, engine_in_thread: Callable[..., ThreadedEngine], browser: Browser, transactional_db: None
) -> None:
    try:
        engine = engine_in_thread()
        AgentProfile.objects.get_or_create(is_default=True, defaults={"name": "Default agent"})
        user = StaffUserFactory.create()
        page = browser.new_context().new_page()
        page.set_default_timeout(15_000)
        page.goto(f"{seed_site}/accounts/login/")
        page.fill("#id_username", user.username)
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{seed_site}/")

        page.goto(f"{seed_site}/seed/")
        page.click("#start")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#activity .activity-item')]"
            ".some(row => row.textContent.includes('Call ID:') || row.textContent.includes('Error'))"
        )
        lines = log_lines(page)
        assert not any("Error" in line for line in lines), lines
        call = Call.objects.get()
        assert any(f"Call ID: {call.id}" in line for line in lines), lines
        assert call.provider_call_id in engine.call_ids()
        assert (call.user_id, call.mode, call.transport) == (user.pk, "audio", "proxy")
        page.wait_for_function(
            "() => [...document.querySelectorAll('#activity .activity-item')]"
            ".some(row => row.textContent.includes('Peer — connected'))"
        )

        page.click("#stop")

        def ended() -> bool:
            call.refresh_from_db()
            return call.status == Call.Status.ENDED

        wait_until(ended)
        assert call.end_reason == "hung up by the user"
        wait_until(lambda: call.provider_call_id not in engine.call_ids())
        page.context.close()
    finally:
        # Playwright's running loop makes Django key this thread's connection by context; close it here,
        # where it was opened, or PostgreSQL refuses to drop the test database at the end.
        connections.close_all()
