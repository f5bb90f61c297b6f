"""Headless Chromium talks to the local engine: fake microphone WAV in, spoken answer out.

The test serves a minimal page and a same-origin proxy on loopback (aiohttp); the proxy posts the
browser's offer as multipart to the engine's `POST /v1/realtime/calls` (engine-api's app with the
real speech stack). Chromium plays an espeak-ng WAV (48 kHz/16-bit, 1 s of silence first) as its
microphone; the page records every server event, and `getStats()` shows the audio it received.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from realtime_local.call import EngineRuntime
from tests.engine.fixtures_media import (
    API_KEY,
    ServedEngine,
    serve_engine,
    speech_stack,  # noqa: F401 - the session-scoped fixture, used by name below
)

pytestmark = [pytest.mark.e2e, pytest.mark.speech, pytest.mark.timeout(150)]

PAGE = Path(__file__).with_name("engine_page.html")
QUESTION = "What time does the library open on Sunday"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def question_wav(tmp_path: Path) -> Path:
    """The spoken question as Chromium's fake microphone wants it: 48 kHz, 16-bit, mono, 1 s
    of silence before and 1.5 s after."""
    raw = tmp_path / "question_raw.wav"
    wav = tmp_path / "question.wav"
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(raw), QUESTION], check=True, timeout=20
    )
    subprocess.run(
        ["sox", str(raw), "-r", "48000", "-b", "16", "-c", "1", str(wav), "pad", "1", "1.5"],
        check=True,
        timeout=20,
    )
    return wav


@pytest.fixture
async def engine(speech_stack: Any) -> AsyncIterator[ServedEngine]:  # noqa: F811
    async with serve_engine(EngineRuntime(speech=speech_stack, loopback_candidates=True)) as served:
        yield served


@pytest.fixture
async def page_server(engine: ServedEngine) -> AsyncIterator[str]:
    """The test page and a same-origin `/session` proxy to the engine (the product's /rtc role)."""

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def session(request: web.Request) -> web.Response:
        offer = await request.text()
        config = {"type": "realtime", "instructions": "Answer briefly."}
        async with httpx.AsyncClient(timeout=15.0) as http:
            answer = await http.post(
                f"{engine.base_url}/realtime/calls",
                files={"sdp": (None, offer), "session": (None, json.dumps(config))},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        return web.Response(status=answer.status_code, text=answer.text, content_type="application/sdp")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_post("/session", session)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    await asyncio.wait_for(runner.cleanup(), 10)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


async def wait_event(page: Any, kind: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events: list[dict[str, Any]] = await page.evaluate("window.events")
        for event in events:
            if event["type"] == kind:
                return event
        state = await page.evaluate("window.state")
        assert state["error"] is None, state
        await asyncio.sleep(0.1)
    events = await page.evaluate("window.events.map(e => e.type)")
    raise AssertionError(f"no {kind} within {timeout_s} s; got {events}")


async def test_browser_asks_a_question_and_hears_the_answer(page_server: str, question_wav: Path) -> None:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path="/usr/bin/chromium",
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={question_wav}%noloop"],
            timeout=30_000,
        )
        try:
            page = await browser.new_page()
            page.set_default_timeout(10_000)
            await page.goto(page_server)
            created = await wait_event(page, "session.created", 15)
            assert created["session"]["instructions"] == "Answer briefly."
            await wait_event(page, "input_audio_buffer.speech_started", 15)
            await wait_event(page, "input_audio_buffer.speech_stopped", 15)
            completed = await wait_event(page, "conversation.item.input_audio_transcription.completed", 40)
            assert {"library", "open", "sunday"} <= words(completed["transcript"]), completed
            await wait_event(page, "output_audio_buffer.started", 30)
            done = await wait_event(page, "response.done", 30)
            assert done["response"]["status"] == "completed"
            transcript = done["response"]["output"][0]["content"][0]["transcript"]
            assert {"library", "open", "sunday"} <= words(transcript), transcript
            await wait_event(page, "output_audio_buffer.stopped", 30)
            inbound = await page.evaluate("window.inboundAudio()")
            assert inbound is not None and inbound["packets"] > 50, inbound
            assert inbound["energy"] > 0, inbound
            state = await page.evaluate("window.state")
            print(
                f"browser: offer->answer {state['answerMs']:.0f} ms (page side, via proxy); inbound {inbound}"
            )
        finally:
            await asyncio.wait_for(browser.close(), 15)
