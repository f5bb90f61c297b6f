"""A real web call, end to end: headless Chromium → our /rtc (or direct) → the local engine with speech.

`manage.py serve` runs as a subprocess against a throw-away SQLite database (the DemoServer harness of
scripts/screenshots.py): daphne with the embedded call observer, and the realtime_local engine as its
child. Chromium's fake microphone plays an espeak-ng question once. The test proves the whole product:
the peer connects, the engine heard the question (TranscriptTurn and the page), the browser received
the agent's voice (WebAudio RMS), the live transcript shows both turns, and after End the call is
`ended` in the database with its events and transcript, on /calls/<id>/ and in the admin.

Figures (connect time, turn latency, remote RMS) are printed, never asserted as speed targets.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from scripts.screenshots import DEFAULT_OUT, DemoServer, chromium, demo_server
from tests.e2e.console import open_call_console, query, wait_for_rows

pytestmark = [pytest.mark.e2e, pytest.mark.speech, pytest.mark.timeout(420)]

QUESTION = "What time does the library open on Sunday"
QUESTION_WORDS = {"time", "library", "open", "sunday"}
#: Speech recognition on a busy 2-core machine is slow; these bound waiting, they are not targets.
CONNECT_TIMEOUT_MS = 30_000
TURN_TIMEOUT_MS = 120_000


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture(scope="module")
def question_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The question as Chromium's fake microphone wants it: 48 kHz/16-bit mono, 1 s of silence
    first (the file starts playing at getUserMedia), 2 s after so that the VAD sees the end."""
    folder = tmp_path_factory.mktemp("speech")
    raw, wav = folder / "question_raw.wav", folder / "question.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(raw), QUESTION], check=True, timeout=30
    )
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", str(wav), "pad", "1", "2"],
        check=True,
        timeout=30,
    )
    return wav


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server(engine=True, startup_timeout_s=240.0) as running:
        yield running


@pytest.fixture(scope="module")
def browser(question_wav: Path) -> Iterator[Browser]:
    with chromium(fake_microphone=question_wav) as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    with open_call_console(server, browser) as page:
        yield page


def state(page: Page) -> dict[str, Any]:
    result: dict[str, Any] = page.evaluate(
        """() => { const c = window.voiceagentConsole; return {
            state: c.state, callId: c.callId, peer: c.peerState, feed: c.feedState, events: c.eventsCount,
            transcript: c.transcript, latencies: c.latencies, connectMs: c.connectMs,
            rms: c.maxRemoteRms() }; }"""
    )
    return result


@pytest.mark.parametrize("transport", ["proxy", "direct"])
def test_a_spoken_question_gets_a_spoken_answer_and_is_recorded(
    console: Page, server: DemoServer, transport: str
) -> None:
    page = console
    page.click(f"[data-transport='{transport}']")
    page.click("#launch")

    # 1. The peer connection reaches `connected` (media flows both ways).
    page.wait_for_function("window.voiceagentConsole.peerState === 'connected'", timeout=CONNECT_TIMEOUT_MS)
    expect(page.locator("#status-text")).to_have_text("Connected")
    call_id = page.evaluate("window.voiceagentConsole.callId")
    assert re.fullmatch(r"[0-9a-f-]{36}", call_id), call_id
    expect(page.locator("#call-id")).to_have_text(call_id)
    row = wait_for_rows(
        server,
        "SELECT transport, mode, provider_call_id FROM calls_call WHERE id = ?",
        call_id.replace("-", ""),
    )
    assert row[0][:2] == (transport, "audio")

    # 2. The engine heard the question and the agent answered: both turns on the page, in order.
    try:
        page.wait_for_function(
            """(needed) => {
                const turns = window.voiceagentConsole.transcript;
                const user = turns.find((t) => t.role === 'user' && t.final);
                const said = user ? user.text.toLowerCase() : '';
                const heard = needed.filter((w) => said.includes(w)).length >= 2;
                const reply = turns.find((t) => t.role === 'assistant' && t.final && t.text.trim());
                return heard && reply && turns.indexOf(user) < turns.indexOf(reply);
            }""",
            arg=sorted(QUESTION_WORDS),
            timeout=TURN_TIMEOUT_MS,
        )
    except Exception:
        raise AssertionError(f"no answered turn: {state(page)}\n{server.log_tail()}") from None
    expect(page.locator("#transcript .bubble.user")).to_contain_text(re.compile("library|sunday|open", re.I))
    expect(page.locator("#transcript .bubble.assistant").first).not_to_be_empty()

    # 3. The browser received the agent's voice: the remote track is not silent.
    page.wait_for_function("window.voiceagentConsole.maxRemoteRms() > 0.01", timeout=30_000)
    during = state(page)
    assert during["events"] > 5
    print(
        f"\n[{transport}] connected in {during['connectMs']} ms; turn latency {during['latencies']} ms; "
        f"remote max RMS {during['rms']:.3f}; {during['events']} events"
    )
    if transport == "proxy":
        page.wait_for_timeout(600)  # let the last deltas render
        DEFAULT_OUT.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(DEFAULT_OUT / "console_call.png"), full_page=False)

    # 4. End: our hang-up, then the call is `ended` with its events and transcript in the database.
    page.click("#end")
    expect(page.locator("#status-text")).to_have_text("Idle")
    assert page.evaluate("window.voiceagentConsole.peerState") == "closed"
    uuid_hex = call_id.replace("-", "")
    wait_for_rows(server, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", uuid_hex)
    (event_count,) = query(server, "SELECT count(*) FROM calls_event WHERE call_id = ?", uuid_hex)[0]
    assert event_count >= during["events"]
    turns = query(
        server,
        "SELECT role, text FROM calls_transcriptturn WHERE call_id = ? ORDER BY started_at, id",
        uuid_hex,
    )
    user_texts = [text for role, text in turns if role == "user"]
    assert any(len(words(text) & QUESTION_WORDS) >= 2 for text in user_texts), turns
    assert any(role == "assistant" and text.strip() for role, text in turns), turns

    # 5. The history page and the admin show the call and what was said.
    page.goto(server.url(f"/calls/{call_id}/"))
    expect(page.locator("[data-testid=transcript] .bubble.user").first).to_contain_text(
        re.compile("library|sunday|open", re.I)
    )
    expect(page.locator("[data-testid=transcript] .bubble.assistant").first).not_to_be_empty()
    expect(page.locator(".fact").filter(has_text="Status")).to_contain_text("Ended")
    if transport == "proxy":
        page.set_viewport_size({"width": 1280, "height": 860})
        page.screenshot(path=str(DEFAULT_OUT / "call_detail_live.png"), full_page=True)
    page.goto(server.url(f"/admin/calls/call/{call_id}/change/"))
    expect(page.locator("#transcript .bubble").first).to_be_visible()
    expect(page.locator("#events .event-list > li").first).to_be_visible()


def test_leaving_the_page_mid_call_hangs_up(console: Page, server: DemoServer) -> None:
    page = console
    page.click("#launch")
    page.wait_for_function("window.voiceagentConsole.peerState === 'connected'", timeout=CONNECT_TIMEOUT_MS)
    call_id = page.evaluate("window.voiceagentConsole.callId")
    page.goto(server.url("/calls/"))  # pagehide: the console sends its hang-up beacon
    rows = wait_for_rows(
        server,
        "SELECT status, end_reason FROM calls_call WHERE id = ? AND status = 'ended'",
        call_id.replace("-", ""),
    )
    # Our hang-up, not the engine noticing the closed peer (that would read "ended upstream").
    assert rows[0][1] == "hung up by the user"
