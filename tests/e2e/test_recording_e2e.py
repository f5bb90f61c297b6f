"""Call recordings end to end: headless Chromium records a real call, uploads it while the call runs,
and the call page plays it back seekable; a reload mid-call keeps what was uploaded; other users get
nothing.

`manage.py serve` runs the product with the local engine as its child (speech off: the recording is
about the audio path, not what the agent says) against a throw-away SQLite database and MEDIA_ROOT.
Chromium's fake microphone plays a tone, so the recording is not silence.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from scripts.screenshots import REPO, DemoServer, chromium, demo_server, new_page, sign_in
from tests.e2e.console import open_call_console, query, wait_for_rows

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(420)]

CONNECT_TIMEOUT_MS = 60_000
#: How long the recorded call lasts (long enough that 5 % is more than the set-up jitter).
CALL_SECONDS = 24
OTHER_STAFF = ("other-operator", "other-operator-password-1")


@pytest.fixture(scope="module")
def tone_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two minutes of a quiet 330 Hz tone, 48 kHz mono: the fake microphone for every call here."""
    wav = tmp_path_factory.mktemp("mic") / "tone.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "48000",
            "-b",
            "16",
            "-c",
            "1",
            str(wav),
            "synth",
            "120",
            "sine",
            "330",
            "vol",
            "0.3",
        ],
        check=True,
        timeout=30,
    )
    return wav


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoServer]:
    media = tmp_path_factory.mktemp("media")
    env = {"MEDIA_ROOT": str(media), "REALTIME_LOCAL_NO_SPEECH": "1"}
    with demo_server(engine=True, startup_timeout_s=240.0, extra_env=env) as running:
        _add_staff_user(running, *OTHER_STAFF)
        yield running


def _add_staff_user(server: DemoServer, username: str, password: str) -> None:
    """Another staff member, in the server's database."""
    _run_in_server(
        server,
        "from django.contrib.auth.models import User; "
        f"User.objects.create_user({username!r}, password={password!r}, is_staff=True)",
    )


def _run_in_server(server: DemoServer, code: str) -> None:
    """Run Python in a Django process on the server's database (a separate process, like the seeding)."""
    env = {k: v for k, v in os.environ.items() if k not in {"DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST"}}
    env.update(
        DATABASE_URL=f"sqlite:///{server.db_path}",
        DJANGO_SETTINGS_MODULE="voiceagent.settings",
        DEBUG="true",
        SECRET_KEY="demo-only-key-" + "x" * 40,
    )
    subprocess.run(
        [sys.executable, str(REPO / "manage.py"), "shell", "-c", code],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )


@pytest.fixture(scope="module")
def browser(tone_wav: Path) -> Iterator[Browser]:
    with chromium(fake_microphone=tone_wav) as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    with open_call_console(server, browser, height=1200) as page:
        yield page


def recording_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = page.evaluate("window.voiceagentConsole.recording")
    return state


def wait_until(page: Page, predicate: str, *, timeout_ms: int) -> None:
    """Poll a JavaScript function until it returns true. Not `page.wait_for_function`: that compiles
    its predicate with `new Function` in the page, which our Content-Security-Policy forbids."""
    deadline = time.monotonic() + timeout_ms / 1000
    while not page.evaluate(predicate):
        if time.monotonic() > deadline:
            raise AssertionError(f"still false after {timeout_ms} ms: {predicate}")
        time.sleep(0.2)


def launch_call(page: Page) -> str:
    indicator = page.locator("[data-testid=recording-indicator]")
    expect(indicator).to_be_hidden()
    page.click("#launch")
    wait_until(
        page, "() => window.voiceagentConsole.peerState === 'connected'", timeout_ms=CONNECT_TIMEOUT_MS
    )
    expect(indicator).to_be_visible()
    expect(indicator).to_have_text("Recording")
    call_id: str = page.evaluate("window.voiceagentConsole.callId")
    assert re.fullmatch(r"[0-9a-f-]{36}", call_id), call_id
    return call_id


def player_facts(page: Page) -> dict[str, Any]:
    """Wait for the call page's player to know its duration; return duration and seekable range."""
    player = page.locator("audio[data-recording]")
    expect(player).to_be_visible()
    wait_until(
        page,
        """() => { const a = document.querySelector('audio[data-recording]');
                   return a.readyState >= 1 && Number.isFinite(a.duration) && a.duration > 0; }""",
        timeout_ms=60_000,
    )
    facts: dict[str, Any] = page.evaluate(
        """() => { const a = document.querySelector('audio[data-recording]');
                   return { duration: a.duration, seekableEnd: a.seekable.length ? a.seekable.end(0) : 0,
                            src: a.currentSrc }; }"""
    )
    return facts


def recorded_rms(webm: bytes) -> float:
    """RMS level of a recording (decoded with PyAV, as the server's remux reads it)."""
    import io

    import av
    import numpy as np

    with av.open(io.BytesIO(webm), mode="r") as container:
        samples = [frame.to_ndarray().astype(np.float64).ravel() for frame in container.decode(audio=0)]
    pcm = np.concatenate(samples)
    return float(np.sqrt(np.mean(pcm**2)))


def call_spans(server: DemoServer, call_id: str) -> tuple[float | None, float]:
    """(the call's duration as its page shows it: answered to ended, None when the call was never
    marked answered; the server's span from the recording's start to the call's end)."""
    uuid_hex = call_id.replace("-", "")
    (answered, ended, recorded_from), *_ = query(
        server,
        "SELECT c.answered_at, c.ended_at, r.started_at FROM calls_call c "
        "JOIN calls_callrecording r ON r.call_id = c.id WHERE c.id = ?",
        uuid_hex,
    )
    end = datetime.fromisoformat(ended)
    span = (end - datetime.fromisoformat(recorded_from)).total_seconds()
    if answered is None:
        (events,), *_ = query(server, "SELECT count(*) FROM calls_event WHERE call_id = ?", uuid_hex)
        print(f"\ncall {call_id} was never marked answered: the observer stored {events} events for it")
        return None, span
    return (end - datetime.fromisoformat(answered)).total_seconds(), span


def test_a_recorded_call_plays_back_on_the_call_page_with_the_calls_duration(
    console: Page, server: DemoServer
) -> None:
    page = console
    call_id = launch_call(page)
    wait_until(page, "() => window.voiceagentConsole.recording.chunksSent >= 2", timeout_ms=30_000)
    page.wait_for_timeout(CALL_SECONDS * 1000)  # the call's length, not a speed expectation
    during = recording_state(page)
    assert during["recording"] and during["failed"] is None, during
    page.click("#end")
    expect(page.locator("#status-text")).to_have_text("Idle")
    expect(page.locator("[data-testid=recording-indicator]")).to_be_hidden()
    wait_until(page, "() => window.voiceagentConsole.recording.finished === true", timeout_ms=30_000)
    uuid_hex = call_id.replace("-", "")
    wait_for_rows(server, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", uuid_hex)
    talked, span = call_spans(server, call_id)
    (size, finished), *_ = query(
        server, "SELECT size, finished_at FROM calls_callrecording WHERE call_id = ?", uuid_hex
    )
    after = recording_state(page)
    assert finished is not None and size == after["uploaded"]
    wall = after["wallSeconds"]

    page.goto(server.url(f"/calls/{call_id}/"))
    facts = player_facts(page)
    recorded = facts["duration"]
    print(
        f"\nrecording {recorded:.2f} s; the browser recorded for {wall:.2f} s; on the server's clock the "
        f"recording started {span:.2f} s before the call ended; the call lasted "
        + (f"{talked:.2f} s ({100 * (recorded - talked) / talked:+.1f} %)" if talked else "(never answered)")
        + f"; {size} bytes"
    )
    # The recording covers its own span (nothing lost between the chunks)...
    assert abs(recorded - span) <= 0.05 * span, (facts, span)
    # ...and the call's, as the call page shows it (answered → ended).
    assert talked is not None, (
        "the call was never marked answered, so it has no duration to compare with: the observer "
        f"stored no events for it\n{server.log_tail(3000)}"
    )
    assert abs(recorded - talked) <= 0.05 * talked, (facts, talked)
    assert facts["seekableEnd"] == pytest.approx(facts["duration"], rel=0.01)  # seekable to the end
    # Seeking works: the player lands where it is told (the server answers byte ranges).
    position = page.evaluate(
        """() => new Promise((resolve) => { const a = document.querySelector('audio[data-recording]');
               a.addEventListener('seeked', () => resolve(a.currentTime), { once: true });
               a.currentTime = a.duration / 2; })"""
    )
    assert position == pytest.approx(facts["duration"] / 2, abs=0.5)

    # A transcript turn links to its time in the recording; clicking it seeks the player there.
    _run_in_server(
        server,
        "import datetime as dt; from calls.models import CallRecording, TranscriptTurn; "
        f"r = CallRecording.objects.get(call_id='{call_id}'); "
        "TranscriptTurn.objects.create(call_id=r.call_id, item_id='item_e2e_seek', role='user', "
        "text='Seek here.', started_at=r.started_at + dt.timedelta(seconds=5))",
    )
    page.reload()
    player_facts(page)
    link = page.locator("[data-testid=transcript] a[data-seek]").first
    expect(link).to_have_text("▶ 0:05")
    link.click()
    wait_until(
        page,
        """() => { const t = document.querySelector('audio[data-recording]').currentTime;
                   return t >= 4.9 && t < 9; }""",
        timeout_ms=15_000,
    )

    # The recording holds the microphone's tone: audio, not silence.
    assert recorded_rms(page.request.get(server.url(f"/calls/{call_id}/recording")).body()) > 0.02

    # The admin's call page plays the same recording.
    page.goto(server.url(f"/admin/calls/call/{call_id}/change/"))
    admin_facts = player_facts(page)
    assert admin_facts["duration"] == pytest.approx(facts["duration"], abs=0.01)


def test_chunks_uploaded_before_a_reload_mid_call_are_kept_and_play(
    console: Page, server: DemoServer
) -> None:
    page = console
    call_id = launch_call(page)
    wait_until(page, "() => window.voiceagentConsole.recording.chunksSent >= 4", timeout_ms=60_000)
    before = recording_state(page)
    page.reload()  # mid-call: the page hangs the call up as it goes; the recorder cannot finish
    page.wait_for_selector("html[data-console-ready='true']")
    uuid_hex = call_id.replace("-", "")
    wait_for_rows(server, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", uuid_hex)
    # The reloaded console closes the recording it left, at the size the server holds (HEAD).
    (size,), *_ = wait_for_rows(
        server,
        "SELECT size FROM calls_callrecording WHERE call_id = ? AND finished_at IS NOT NULL",
        uuid_hex,
    )
    assert size >= before["uploaded"] > 0
    head = page.request.head(server.url(f"/calls/{call_id}/recording"))
    assert head.status == 200 and int(head.headers["upload-offset"]) == size

    page.goto(server.url(f"/calls/{call_id}/"))
    facts = player_facts(page)
    # At least what the uploaded chunks (2 s each) held before the reload.
    assert facts["duration"] >= 2 * (before["chunksSent"] - 1), (facts, before)
    print(f"\nreload after {before['chunksSent']} chunks: {facts['duration']:.2f} s kept, {size} bytes")


def test_another_user_can_neither_fetch_nor_upload_someone_elses_recording(
    console: Page, server: DemoServer, browser: Browser
) -> None:
    page = console
    call_id = launch_call(page)
    wait_until(page, "() => window.voiceagentConsole.recording.chunksSent >= 1", timeout_ms=30_000)
    page.click("#end")
    wait_until(page, "() => window.voiceagentConsole.recording.finished === true", timeout_ms=30_000)
    url = server.url(f"/calls/{call_id}/recording")
    assert page.request.get(url).status == 200  # the owner

    other = new_page(browser)
    sign_in(other, server, username=OTHER_STAFF[0], password=OTHER_STAFF[1])
    token = next(c["value"] for c in other.context.cookies() if c["name"] == "csrftoken")
    assert other.request.get(url).status == 404
    assert other.request.head(url).status == 404
    size = int(page.request.head(url).headers["upload-offset"])
    upload = other.request.post(
        f"{url}?offset={size}",
        data=b"\x1fC\xb6u" + b"\x00" * 64,
        headers={"Content-Type": "audio/webm", "X-CSRFToken": token},
    )
    assert upload.status == 404
    page_response = other.goto(server.url(f"/calls/{call_id}/"))
    assert page_response is not None and page_response.status == 404
    other.context.close()
    assert int(page.request.head(url).headers["upload-offset"]) == size  # untouched

    anonymous = browser.new_context()
    assert anonymous.request.get(url).status == 401
    anonymous.close()


def test_a_profile_with_recording_off_records_nothing_and_shows_no_indicator(
    console: Page, server: DemoServer
) -> None:
    _run_in_server(
        server, "from calls.models import AgentProfile; AgentProfile.objects.update(record_calls=False)"
    )
    try:
        page = console
        page.reload()
        page.wait_for_selector("html[data-console-ready='true']")
        page.click("#launch")
        wait_until(
            page, "() => window.voiceagentConsole.peerState === 'connected'", timeout_ms=CONNECT_TIMEOUT_MS
        )
        call_id = page.evaluate("window.voiceagentConsole.callId")
        page.wait_for_timeout(3000)  # longer than a chunk: nothing may be uploaded meanwhile
        expect(page.locator("[data-testid=recording-indicator]")).to_be_hidden()
        assert recording_state(page)["callId"] is None
        page.click("#end")
        expect(page.locator("#status-text")).to_have_text("Idle")
        head = page.request.head(server.url(f"/calls/{call_id}/recording"))
        assert head.headers["x-recording-enabled"] == "false" and head.headers["upload-offset"] == "0"
        assert (
            query(server, "SELECT 1 FROM calls_callrecording WHERE call_id = ?", call_id.replace("-", ""))
            == []
        )
    finally:
        _run_in_server(
            server, "from calls.models import AgentProfile; AgentProfile.objects.update(record_calls=True)"
        )
