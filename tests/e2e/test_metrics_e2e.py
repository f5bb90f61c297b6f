"""Issue 10's metrics acceptance: `/metrics` shows our series moving during a real browser call.

`manage.py serve` (daphne, the embedded observer, the local engine with speech; the DemoServer harness)
runs with METRICS_TOKEN set; headless Chromium's fake microphone speaks into a proxy call from the
signed-in console. Scraped before, during and after the call: live web calls go 0 → 1 → 0, the proxy
set-up is counted as ok and timed, events are stored and each has an observer-lag sample.
"""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from scripts.screenshots import DemoServer, chromium, demo_server
from tests.e2e.console import open_call_console, query, wait_for_rows
from tests.e2e.test_web_call_e2e import CONNECT_TIMEOUT_MS, question_wav
from voiceagent.monitoring.metrics import labelled_total

pytestmark = [pytest.mark.e2e, pytest.mark.speech, pytest.mark.timeout(420)]

__all__ = ["question_wav"]

TOKEN = "e2e-metrics-token-0123456789"
Scrape = Callable[..., float]


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server(engine=True, startup_timeout_s=240.0, extra_env={"METRICS_TOKEN": TOKEN}) as running:
        yield running


@pytest.fixture(scope="module")
def browser(question_wav: Path) -> Iterator[Browser]:
    with chromium(fake_microphone=question_wav) as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    with open_call_console(server, browser) as page:
        yield page


def scrape(server: DemoServer) -> Scrape:
    """One scrape of the server's /metrics, as Prometheus does it (bearer token)."""
    request = urllib.request.Request(server.url("/metrics"), headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    return lambda name, **labels: labelled_total(text, name, labels)


def scrape_until(server: DemoServer, ready: Callable[[Scrape], bool], *, within_s: float = 30.0) -> Scrape:
    """Scrape until `ready` holds for a scrape (bounded wait, not a speed target)."""
    deadline = time.monotonic() + within_s
    while True:
        got = scrape(server)
        if ready(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.25)


def wait_until(ready: Callable[[], bool], *, within_s: float = CONNECT_TIMEOUT_MS / 1000) -> None:
    """Poll `ready` from Python (the console's CSP forbids the string evaluation wait_for_function uses)."""
    deadline = time.monotonic() + within_s
    while not ready():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def test_metrics_move_during_a_browser_call(console: Page, server: DemoServer) -> None:
    stored, lag = "voiceagent_events_stored_total", "voiceagent_observer_lag_seconds_count"
    setups = {"transport": "proxy", "outcome": "ok"}
    before = scrape(server)
    assert before("voiceagent_live_calls", source="web") == 0

    console.click("[data-transport='proxy']")
    console.click("#launch")
    wait_until(lambda: console.evaluate("window.voiceagentConsole.peerState") == "connected")
    call_id = console.evaluate("window.voiceagentConsole.callId")
    # The live feed shows what the observer stored: wait for a few events (the question being heard).
    wait_until(lambda: console.evaluate("window.voiceagentConsole.eventsCount") >= 5)
    during = scrape_until(
        server,
        lambda now: now("voiceagent_live_calls", source="web") == 1 and now(stored) >= before(stored) + 5,
    )
    assert during("voiceagent_live_calls", source="web") == 1
    assert (
        during("voiceagent_call_setups_total", **setups)
        == before("voiceagent_call_setups_total", **setups) + 1
    )
    assert during("voiceagent_call_setup_seconds_count", transport="proxy") == (
        before("voiceagent_call_setup_seconds_count", transport="proxy") + 1
    )
    assert during(stored) >= before(stored) + 5
    assert during(lag) >= during(stored) - before(stored) + before(lag)  # a lag sample per stored event

    console.click("#end")
    expect(console.locator("#status-text")).to_have_text("Idle")
    wait_for_rows(
        server, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", call_id.replace("-", "")
    )

    def rows() -> int:
        sql = "SELECT count(*) FROM calls_event WHERE call_id = ?"
        return int(query(server, sql, call_id.replace("-", ""))[0][0])

    # Every event row of the call was counted (the only call of this server during the test).
    after = scrape_until(
        server,
        lambda now: (
            now("voiceagent_live_calls", source="web") == 0 and now(stored) - before(stored) == rows()
        ),
    )
    assert after("voiceagent_live_calls", source="web") == 0
    assert after(stored) - before(stored) == rows()
    assert after(lag) - before(lag) >= rows()
    print(
        f"\nevents stored {after(stored) - before(stored):.0f}; set-up "
        f"{after('voiceagent_call_setup_seconds_sum', transport='proxy'):.3f} s; mean observer lag "
        f"{(after('voiceagent_observer_lag_seconds_sum') / max(after(lag), 1)) * 1000:.0f} ms"
    )
