"""The console and the admin in a real headless Chromium against `manage.py serve`.

Also saves screenshots of every page to artifacts/screenshots/ for review.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect

from scripts.screenshots import (
    DEFAULT_OUT,
    DEMO_PASSWORD,
    VISITOR_USERNAME,
    DemoServer,
    chromium,
    demo_server,
    new_page,
    sign_in,
    take_screenshots,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server() as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    """A signed-in console page; the test fails if the page logs a JavaScript or network error."""
    page = new_page(browser)
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(f"{message.text} ({message.location.get('url')})")

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught: {error}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    sign_in(page, server)
    yield page
    page.context.close()
    assert errors == []


def _log_lines(page: Page) -> list[str]:
    return [line.strip() for line in page.locator("#activity .activity-item").all_inner_texts()]


def test_anonymous_visit_goes_to_login_and_sign_in_opens_the_console(
    server: DemoServer, browser: Browser
) -> None:
    page = new_page(browser)
    page.goto(server.url("/"))
    expect(page).to_have_url(server.url("/accounts/login/?next=/"))
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo-password-for-screenshots")
    page.click("button[type=submit]")
    expect(page).to_have_url(server.url("/"))
    expect(page.locator("html")).to_have_attribute("data-console-ready", "true")
    expect(page.locator("#status-text")).to_have_text("Idle")
    expect(page.locator("#duration")).to_have_text("00:00.000")
    assert any("Ready" in line for line in _log_lines(page))
    page.context.close()


def test_console_styles_and_modules_load_from_our_static_files(console: Page) -> None:
    background = console.evaluate("getComputedStyle(document.body).backgroundImage")
    assert "gradient" in background
    color = console.evaluate("getComputedStyle(document.body).color")
    assert color == "rgb(238, 244, 255)"


def test_switching_modes_by_click_and_keyboard(console: Page) -> None:
    audio, webcam, screen = (console.locator(f"[data-mode='{m}']") for m in ("audio", "webcam", "screen"))
    expect(audio).to_have_attribute("aria-checked", "true")
    webcam.click()
    expect(webcam).to_have_attribute("aria-checked", "true")
    expect(audio).to_have_attribute("aria-checked", "false")
    webcam.press("ArrowRight")
    expect(screen).to_have_attribute("aria-checked", "true")
    expect(screen).to_be_focused()
    lines = _log_lines(console)
    assert any("Mode — webcam" in line for line in lines), lines
    assert any("Mode — screen" in line for line in lines), lines


def test_launch_without_a_microphone_says_so_and_can_be_retried(console: Page) -> None:
    # This browser has no (fake) capture device, so the call client fails before any request.
    console.click("#launch")
    error = console.locator("#activity .activity-item.error")
    expect(error).to_contain_text("could not open the microphone")
    expect(console.locator("#status-text")).to_have_text("Error")
    expect(console.locator("#launch")).to_be_enabled()
    expect(console.locator("#end")).to_be_disabled()
    assert console.evaluate("window.voiceagentConsole.callId") is None


def test_transport_picker_switches_and_is_logged(console: Page) -> None:
    proxy, direct = console.locator("[data-transport='proxy']"), console.locator("[data-transport='direct']")
    expect(proxy).to_have_attribute("aria-checked", "true")
    direct.click()
    expect(direct).to_have_attribute("aria-checked", "true")
    expect(proxy).to_have_attribute("aria-checked", "false")
    assert any("Transport — direct" in line for line in _log_lines(console))


def test_clear_empties_the_activity_log(console: Page) -> None:
    assert console.locator("#activity .activity-item").count() >= 1
    console.click("#clear-log")
    expect(console.locator("#activity .activity-item")).to_have_count(0)


def test_duration_clock_counts_milliseconds(console: Page) -> None:
    result = console.evaluate(
        """async () => {
            const { formatElapsed, DurationClock } = await import('/static/console/clock.js');
            const el = document.createElement('span');
            let now = 1000;
            const clock = new DurationClock(el, { now: () => now });
            clock.start();
            now += 61234;
            clock.stop();
            now += 5000;  // stopped: later time does not count
            clock.render();
            return { formatted: formatElapsed(3599999), shown: el.textContent, running: clock.running };
        }"""
    )
    assert result == {"formatted": "59:59.999", "shown": "01:01.234", "running": False}


def test_sign_out_returns_to_the_login_page(console: Page, server: DemoServer) -> None:
    console.click("[data-testid=logout]")
    expect(console).to_have_url(server.url("/accounts/login/"))
    console.goto(server.url("/"))
    expect(console).to_have_url(server.url("/accounts/login/?next=/"))


def test_admin_call_page_shows_the_conversation_and_the_events(console: Page, server: DemoServer) -> None:
    console.goto(server.url(f"/admin/calls/call/{server.call_id}/change/"))
    expect(console.locator("#transcript .bubble")).to_have_count(7)
    expect(console.locator("#events .event-list > li")).to_have_count(20)
    payload = console.locator("#events .event-payload").first
    expect(payload).to_be_hidden()
    console.locator("#events summary").first.click()
    expect(payload).to_contain_text('"model": "gpt-realtime"')


def test_a_non_staff_user_sees_the_403_page_after_signing_in(server: DemoServer, browser: Browser) -> None:
    page = new_page(browser)
    page.goto(server.url("/accounts/login/"))
    page.fill("#id_username", VISITOR_USERNAME)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("[data-testid=forbidden-reason]")).to_contain_text("for staff accounts")
    expect(page.locator("#launch")).to_have_count(0)
    page.context.close()


def test_screenshots_of_every_page(server: DemoServer, browser: Browser) -> None:
    shots = take_screenshots(server, browser, DEFAULT_OUT)
    names = {path.stem for path in shots}
    expected = {
        "login",
        "console",
        "history",
        "compare",
        "call_transcript",
        "admin_calls",
        "admin_call",
        "forbidden",
    }
    assert expected <= names
    for path in shots:
        assert Path(path).stat().st_size > 20_000, f"{path} looks empty"
