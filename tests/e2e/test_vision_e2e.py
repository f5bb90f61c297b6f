"""Issue 7's vision acceptance, end to end: the agent sees the camera and the screen.

`manage.py serve` with the embedded observer and the local engine with offline speech (the DemoServer
harness), headless Chromium with fake media:

- webcam mode: the camera is a Y4M file made here (640x480, red, with a white square moving so that
  frames differ), the microphone asks "What do you see?" (Piper voice). The engine receives the
  frames as `input_image` items at the configured rates (faster while the user speaks, never faster
  than configured), the rule responder describes the latest one ("… 640 by 480 … red"), the live
  console and the call page show the stored thumbnails;
- screen mode: `--use-fake-ui-for-media-stream` accepts the screen picker with Chromium's fake screen
  (an animated 1280x720 pattern, sent at most 1024 px wide); stopping the share the way the browser's
  own button does (the track's `ended` event) ends the call, which is then `ended` with a reason.

The page announces each frame it sends (`voiceagent-vision-frame` events); the engine must have
acknowledged exactly those (stored `conversation.item.added` items). Figures (frames, sizes, gaps) are
printed; the rate checks are lower bounds on the page's send gaps (timers fire late, never early) and
that the faster rate was used while the user spoke, not speed targets.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, Page, expect

from scripts.screenshots import DemoServer, chromium, demo_server
from tests.e2e.console import open_call_console, query, wait_for_rows
from tests.e2e.test_web_call_e2e import state

pytestmark = [pytest.mark.e2e, pytest.mark.speech, pytest.mark.timeout(480)]

QUESTION = "What do you see?"
WIDTH, HEIGHT = 640, 480
#: The rates the test configures (window.voiceagentConsoleOptions.vision), in ms.
SPEAKING_MS, IDLE_MS = 500, 2500
CONNECT_TIMEOUT_MS = 30_000
#: Speech recognition on a busy 2-core machine is slow; this bounds waiting, it is not a target.
TURN_TIMEOUT_MS = 150_000
#: Timers fire late, never early; this only absorbs timer clamping.
EARLY_SLACK = 0.9

FRAMES_SQL = """
    SELECT payload, received_at FROM calls_event WHERE call_id = ? AND type = 'conversation.item.added'
    ORDER BY sequence
"""


def write_y4m(path: Path, *, frames: int = 23, fps: int = 10) -> None:
    """A 4:2:0 Y4M clip: red (BT.601 Y'CbCr of RGB 220,20,20) with a white 160x120 square that moves
    every frame. 23 frames at 10 fps: a 2.3 s loop, so samples 0.5, 1 or 2.5 s apart never coincide."""
    y, cb, cr = 80, 94, 228
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{WIDTH} H{HEIGHT} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for index in range(frames):
            luma = np.full((HEIGHT, WIDTH), y, dtype=np.uint8)
            left = (index * 20) % (WIDTH - 160)
            top = (index * 15) % (HEIGHT - 120)
            luma[top : top + 120, left : left + 160] = 255
            u = np.full((HEIGHT // 2, WIDTH // 2), cb, dtype=np.uint8)
            v = np.full((HEIGHT // 2, WIDTH // 2), cr, dtype=np.uint8)
            u[top // 2 : (top + 120) // 2, left // 2 : (left + 160) // 2] = 128
            v[top // 2 : (top + 120) // 2, left // 2 : (left + 160) // 2] = 128
            out.write(b"FRAME\n" + luma.tobytes() + u.tobytes() + v.tobytes())


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(camera Y4M, microphone WAV). The question is spoken by the engine's bundled Piper voice
    (espeak does not survive Opus well, see test_tool_call_e2e), 48 kHz mono with 1 s of silence
    before it and 20 s after (the reply, slow on a busy machine, is spoken before the loop asks again:
    a question over the reply would interrupt it)."""
    from realtime_local.speech import weights
    from realtime_local.speech.tts import PiperSynthesizer

    folder = tmp_path_factory.mktemp("vision")
    camera, raw, wav = folder / "camera.y4m", folder / "question_raw.wav", folder / "question.wav"
    write_y4m(camera)
    synthesizer = PiperSynthesizer(*weights.piper_voice_paths(), threads=1)
    pcm = np.concatenate(list(synthesizer.synthesize(QUESTION))).astype(np.int16)
    with wave.open(str(raw), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(synthesizer.sample_rate)
        out.writeframes(pcm.tobytes())
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", str(wav), "gain", "-1", "pad", "1", "20"],
        check=True,
        timeout=30,
    )
    return camera, wav


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server(engine=True, startup_timeout_s=240.0) as running:
        yield running


@pytest.fixture(scope="module")
def browser(media: tuple[Path, Path]) -> Iterator[Browser]:
    """Chromium with the fake camera and a looping fake microphone: the call connects a few seconds
    after getUserMedia (video negotiation), so a question played once could be over before it; looped,
    it is asked again every few seconds (each time answered)."""
    camera, microphone = media
    flags = [
        "--use-fake-ui-for-media-stream",  # also accepts the screen picker (the fake screen)
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone.resolve()}",
        f"--use-file-for-fake-video-capture={camera.resolve()}",
        "--autoplay-policy=no-user-gesture-required",
        "--allow-loopback-in-peer-connection",
    ]
    with chromium(extra_args=flags) as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    with open_call_console(server, browser) as page:
        page.evaluate(
            """(vision) => {
                window.voiceagentConsoleOptions.vision = vision;
                window.sentFrames = [];
                document.addEventListener('voiceagent-vision-frame', (e) => window.sentFrames.push(e.detail));
            }""",
            {"speakingIntervalMs": SPEAKING_MS, "idleIntervalMs": IDLE_MS},
        )
        yield page


def stored_frames(server: DemoServer, uuid_hex: str) -> list[tuple[dt.datetime, dict[str, Any]]]:
    """(received at, the stored input_image part) of every frame the engine acknowledged."""
    frames = []
    for payload, received_at in query(server, FRAMES_SQL, uuid_hex):
        item = json.loads(payload).get("item") or {}
        for part in item.get("content") or []:
            if part.get("type") == "input_image":
                frames.append((dt.datetime.fromisoformat(received_at), part))
    return frames


def launch(page: Page, mode: str, server: DemoServer) -> str:
    page.click(f"[data-mode='{mode}']")
    page.click("[data-transport='proxy']")
    page.click("#launch")
    page.wait_for_function(
        "() => window.voiceagentConsole.peerState === 'connected'", timeout=CONNECT_TIMEOUT_MS
    )
    call_id: str = page.evaluate("window.voiceagentConsole.callId")
    row = wait_for_rows(server, "SELECT mode FROM calls_call WHERE id = ?", call_id.replace("-", ""))
    assert row[0][0] == mode
    return call_id


def test_the_agent_sees_the_camera_and_describes_it(console: Page, server: DemoServer) -> None:
    page = console
    call_id = launch(page, "webcam", server)
    uuid_hex = call_id.replace("-", "")

    # The reply describes the known picture: its size and its colour.
    try:
        page.wait_for_function(
            """() => window.voiceagentConsole.transcript.some(
                (t) => t.role === 'assistant' && t.final && /red/i.test(t.text))""",
            timeout=TURN_TIMEOUT_MS,
        )
    except Exception:
        turns = [(t["role"], t["text"]) for t in state(page)["transcript"]]
        raise AssertionError(f"no description of the picture: {turns}\n{server.log_tail()}") from None
    reply = next(
        t["text"] for t in state(page)["transcript"] if t["role"] == "assistant" and "red" in t["text"]
    )
    assert f"{WIDTH} by {HEIGHT}" in reply, reply
    # The live transcript shows the frames as thumbnails.
    thumbnails = page.locator("#transcript .bubble.frames img.frame")
    expect(thumbnails.first).to_be_visible()
    assert page.evaluate(
        "() => [...document.querySelectorAll('#transcript img.frame')]"
        ".every((i) => i.src.startsWith('data:image/jpeg'))"
    )
    page.wait_for_timeout(2 * IDLE_MS + 500)  # a few idle frames after the turn
    page.click("#end")
    expect(page.locator("#status-text")).to_have_text("Idle")
    wait_for_rows(server, "SELECT 1 FROM calls_call WHERE id = ? AND status = 'ended'", uuid_hex)

    # The engine acknowledged every frame the page sent (no refused item), and the observer kept
    # thumbnails only.
    sent: list[dict[str, Any]] = page.evaluate("window.sentFrames")
    frames = stored_frames(server, uuid_hex)
    deadline = time.monotonic() + 15
    while len(frames) < len(sent) and time.monotonic() < deadline:
        time.sleep(0.5)
        frames = stored_frames(server, uuid_hex)
    assert len(frames) == len(sent) >= 3, (len(frames), sent)
    assert not query(server, "SELECT payload FROM calls_event WHERE call_id = ? AND type = 'error'", uuid_hex)
    for _, part in frames:
        facts = part["voiceagent_image"]
        assert facts["thumbnail"] is True and (facts["width"], facts["height"]) == (WIDTH, HEIGHT)
        assert len(part["image_url"]) < 30_000 and part["image_url"].startswith("data:image/jpeg;base64,")
    assert all((frame["width"], frame["height"]) == (WIDTH, HEIGHT) for frame in sent)

    # The rates, from the page's send times: never faster than configured (timers fire late, never
    # early): 0.5 s next to speech, 2.5 s between idle frames; the faster rate while the user spoke.
    gaps = []
    for before, after in itertools.pairwise(sent):
        gap = after["at"] - before["at"]
        gaps.append(round(gap))
        floor = SPEAKING_MS if before["speaking"] or after["speaking"] else IDLE_MS
        assert gap >= floor * EARLY_SLACK, (gap, before, after)
    during_speech = sum(1 for frame in sent if frame["speaking"])
    print(
        f"\n[vision] {len(sent)} frames, {during_speech} while speaking; gaps ms {gaps}; "
        f"last data URL {sent[-1]['bytes']} B"
    )
    # The faster rate kicked in with the question: frames at speaking intervals, not only idle ones.
    assert during_speech >= 1 and sum(1 for gap in gaps if gap < IDLE_MS * EARLY_SLACK) >= 2, sent
    assert any(not frame["speaking"] for frame in sent)

    # The call page shows every stored thumbnail, among the turns.
    page.goto(server.url(f"/calls/{call_id}/"))
    images = page.locator("[data-testid=frames] img")
    expect(images).to_have_count(len(frames))
    assert page.evaluate(
        "() => [...document.querySelectorAll('[data-testid=frames] img')]"
        ".every((i) => i.naturalWidth === 160)"
    )
    # (the first question may be cut by the connection: the description is one of the replies)
    described = page.locator("[data-testid=transcript] .bubble.assistant").filter(
        has_text="main colour is red"
    )
    expect(described.first).to_be_visible()


def test_screen_mode_sends_the_screen_and_stopping_the_share_ends_the_call(
    console: Page, server: DemoServer
) -> None:
    page = console
    call_id = launch(page, "screen", server)
    uuid_hex = call_id.replace("-", "")
    # Chromium's fake screen (animated): a few frames reach the engine, scaled to 1024 px.
    frames = stored_frames(server, uuid_hex)
    deadline = time.monotonic() + 60
    while len(frames) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
        frames = stored_frames(server, uuid_hex)
    assert len(frames) >= 2, f"{len(frames)} frames\n{server.log_tail()}"
    facts = frames[0][1]["voiceagent_image"]
    assert max(facts["width"], facts["height"]) == 1024, facts

    # The browser's own "Stop sharing" ends the display track: the same path as End session.
    page.evaluate(
        """() => document.querySelector('#preview-video').srcObject.getVideoTracks()[0]
            .dispatchEvent(new Event('ended'))"""
    )
    expect(page.locator("#status-text")).to_have_text("Idle")
    assert page.evaluate("window.voiceagentConsole.peerState") == "closed"
    rows = wait_for_rows(
        server, "SELECT status, end_reason FROM calls_call WHERE id = ? AND status = 'ended'", uuid_hex
    )
    assert rows[0][1], rows
    activity = page.locator("#activity").inner_text()
    assert "screen sharing stopped" in activity
    print(
        f"\n[vision] screen: {len(frames)} frames ({facts['width']}x{facts['height']}), ended: {rows[0][1]!r}"
    )
