"""The Content-Security-Policy in a real Chromium: the product's pages load without a single
violation, the console may reach what it needs (our WebSocket, the Realtime API's origin for the
direct transport), and anything else is blocked (a positive control, so "no violation" means
something). Runs `manage.py serve` without the engine (the DemoServer harness of scripts/screenshots.py).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page

from scripts.screenshots import DemoServer, chromium, demo_server, free_port, new_page, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

#: Collects every CSP violation of the page, from the first script on (init scripts are not subject
#: to the page's CSP).
RECORD_VIOLATIONS = """
window.__cspViolations = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__cspViolations.push({directive: e.violatedDirective, blocked: e.blockedURI, sample: e.sample});
});
"""


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server(extra_env={"REALTIME_LOCAL_PORT": str(free_port())}) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def page(server: DemoServer, browser: Browser) -> Iterator[Page]:
    page = new_page(browser, bypass_csp=False)
    page.context.add_init_script(RECORD_VIOLATIONS)
    sign_in(page, server)
    yield page
    page.context.close()


def violations(page: Page) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = page.evaluate("window.__cspViolations")
    return found


def test_the_pages_load_without_violations(page: Page, server: DemoServer) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    assert "script-src 'self'" in (page.request.get(server.url("/")).headers["content-security-policy"])
    assert violations(page) == []  # the console, after sign-in

    page.goto(server.url("/calls/"))
    detail_links = page.locator("a[href^='/calls/'][href$='/']").evaluate_all(
        "(links) => links.map((a) => a.getAttribute('href')).filter((h) => h !== '/calls/compare/')"
    )
    paths = ["/calls/", *detail_links[:2], "/calls/compare/", "/admin/", "/admin/calls/call/"]
    for path in paths:
        page.goto(server.url(path))
        page.wait_for_load_state("load")
        assert violations(page) == [], (path, violations(page))
    assert not [text for text in errors if "Content Security Policy" in text], errors


def test_the_console_reaches_its_socket_and_the_api_origin_but_nothing_else(page: Page) -> None:
    config = json.loads(page.locator("#console-config").text_content() or "{}")
    outcome = page.evaluate(
        """async (base) => {
            const tryFetch = async (url) => {
                try { await fetch(url, {mode: 'no-cors'}); return 'fetched'; }
                catch (e) { return 'failed'; }
            };
            const api = await tryFetch(base + '/models');
            const socket = new WebSocket(`ws://${location.host}/ws/calls/00000000-0000-0000-0000-000000000000/`);
            await new Promise((done) => {
                socket.onclose = done;
                socket.onerror = done;
                setTimeout(done, 3000);
            });
            const elsewhere = await tryFetch('http://192.0.2.1:9/exfiltrate');
            await new Promise((done) => setTimeout(done, 200));
            return {api, elsewhere};
        }""",
        config["realtimeBaseUrl"],
    )
    blocked = [violation["blocked"] for violation in violations(page)]
    # Only the foreign address was refused by the policy (the API may simply not be up: that is a
    # network error, not a violation).
    assert blocked == ["http://192.0.2.1:9/exfiltrate"], (outcome, violations(page))
