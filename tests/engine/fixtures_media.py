"""Media helpers for the engine's session/WebRTC tests (engine-session's; imported by its modules).

- `speech_stack`: the offline speech stack, loaded once per test session (skips if unavailable).
- `serve_engine(runtime)`: the real HTTP app (`create_app`) on a loopback port with a given runtime.
- `RealtimeTestClient`: an aiortc peer shaped like the browser: `oai-events` data channel, one
  sendrecv audio track that plays queued speech in real time (silence otherwise), and a recorder
  of the audio it receives. Events are collected in order; `wait_for` waits with a timeout.
- `espeak(text)`: speech from espeak-ng as 48 kHz mono int16 (what a microphone would give).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import io
import json
import subprocess
import time
import wave
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import av
import httpx
import numpy as np
import pytest
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime_local.app import create_app
from realtime_local.call import EngineRuntime
from realtime_local.config import EngineConfig
from realtime_local.media import Resampler, offer_loopback_candidates

API_KEY = "sk-local-media"
RATE = 48_000
FRAME = 960


def espeak(text: str, *, rate: int = RATE, words_per_minute: int = 160) -> np.ndarray:
    """Speech for `text` from espeak-ng, resampled to `rate` mono int16."""
    wav = subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", str(words_per_minute), "--stdout", text],
        check=True,
        capture_output=True,
        timeout=20,
    ).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        source_rate = reader.getframerate()
        pcm = np.frombuffer(reader.readframes(reader.getnframes()), dtype=np.int16)
    resampler = Resampler(source_rate, rate)
    return np.concatenate([resampler.convert(pcm), resampler.flush()])


def to_16k(pcm48: np.ndarray) -> np.ndarray:
    resampler = Resampler(RATE, 16_000)
    return np.concatenate([resampler.convert(pcm48), resampler.flush()])


def rms(pcm: np.ndarray) -> float:
    return float(np.sqrt(np.mean(pcm.astype(np.float64) ** 2))) if len(pcm) else 0.0


@pytest.fixture(scope="session")
def speech_stack() -> Any:
    """The real speech stack, loaded once for the whole test session."""
    try:
        from realtime_local.speech.stack import SpeechOptions, load_speech_stack
    except ImportError as exc:  # the speech package is another helper's; not there yet
        pytest.skip(f"speech stack not available: {exc}")
    return load_speech_stack(SpeechOptions.from_env())


@dataclass
class ServedEngine:
    base_url: str
    runtime: EngineRuntime
    app: web.Application

    async def create_call(self, offer_sdp: str, session: dict[str, Any] | None = None) -> tuple[str, str]:
        """POST /v1/realtime/calls (multipart, as our `/rtc` does); returns (call id, answer SDP)."""
        files: dict[str, Any] = {"sdp": (None, offer_sdp)}
        if session is not None:
            files["session"] = (None, json.dumps(session))
        async with httpx.AsyncClient(timeout=15.0) as http:
            response = await http.post(
                f"{self.base_url}/realtime/calls",
                files=files,
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        assert response.status_code == 201, response.text
        return response.headers["Location"].rsplit("/", 1)[-1], response.text

    async def hangup(self, call_id: str) -> None:
        async with httpx.AsyncClient(timeout=10.0) as http:
            await http.post(
                f"{self.base_url}/realtime/calls/{call_id}/hangup",
                headers={"Authorization": f"Bearer {API_KEY}"},
            )


@contextlib.asynccontextmanager
async def serve_engine(runtime: EngineRuntime) -> AsyncIterator[ServedEngine]:
    """engine-api's app with this runtime on 127.0.0.1:<free port>."""
    config = EngineConfig(
        host="127.0.0.1",
        port=0,
        api_key=API_KEY,
        speech=runtime.speech is not None,
        loopback_candidates=runtime.loopback_candidates,
    )
    app = create_app(config, runtime=runtime)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = int(runner.addresses[0][1])
    try:
        yield ServedEngine(base_url=f"http://127.0.0.1:{port}/v1", runtime=runtime, app=app)
    finally:
        await asyncio.wait_for(runner.cleanup(), 15)


class MicrophoneTrack(MediaStreamTrack):
    """A fake microphone: plays queued 48 kHz mono speech in real time, silence in between."""

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._queue: deque[np.ndarray] = deque()
        self._start: float | None = None
        self._timestamp = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.last_speech_sent_at = 0.0  # time.monotonic() when the last queued frame was sent
        self._sending = asyncio.Event()
        self._sending.set()

    def hold(self) -> None:
        """Send no frames at all (a muted sender that stops RTP), until `release()`: tests that feed
        the input buffer with `input_audio_buffer.append` keep the track's silence out of it."""
        self._sending.clear()

    def release(self) -> None:
        self._sending.set()

    def say(self, pcm48: np.ndarray) -> None:
        """Queue speech; whole 20 ms frames (the tail is padded with silence)."""
        padded = np.concatenate([pcm48, np.zeros((-len(pcm48)) % FRAME, dtype=np.int16)])
        for i in range(0, len(padded), FRAME):
            self._queue.append(padded[i : i + FRAME])
        self.idle.clear()

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        await self._sending.wait()
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += FRAME
            wait = self._start + self._timestamp / RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        if self._queue:
            samples = self._queue.popleft()
            self.last_speech_sent_at = time.monotonic()
        else:
            samples = np.zeros(FRAME, dtype=np.int16)
            self.idle.set()
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, RATE)
        return frame


class RealtimeTestClient:
    """A browser-like aiortc peer with the `oai-events` data channel."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.channel = self.pc.createDataChannel("oai-events")
        self.mic = MicrophoneTrack()
        self.pc.addTrack(self.mic)
        self.events: list[dict[str, Any]] = []
        self.arrivals: list[float] = []  # time.monotonic() of each event's arrival
        self._changed = asyncio.Event()
        self._opened = asyncio.Event()
        self.received: list[np.ndarray] = []  # 48 kHz mono, as decoded
        self.first_voice_at: float | None = None  # first loud received frame since `listen()`
        self._listening = False
        self._tasks: list[asyncio.Task[Any]] = []
        self.channel.on("message", self._on_message)
        self.channel.on("open", self._opened.set)

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio":
                self._tasks.append(asyncio.ensure_future(self._record(track)))

    def _on_message(self, message: Any) -> None:
        self.events.append(json.loads(message))
        self.arrivals.append(time.monotonic())
        self._changed.set()

    async def _record(self, track: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            for out in resampler.resample(frame):
                pcm = out.to_ndarray().reshape(-1).copy()
                self.received.append(pcm)
                if self._listening and self.first_voice_at is None and rms(pcm) > 300:
                    self.first_voice_at = time.monotonic()
            if len(self.received) > 20_000:  # bounded (~7 min of frames)
                del self.received[:1000]

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        sdp: str = self.pc.localDescription.sdp
        return sdp

    async def set_answer(self, sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def wait_open(self, limit_s: float = 10.0) -> None:
        await asyncio.wait_for(self._opened.wait(), limit_s)

    def send(self, event: dict[str, Any]) -> None:
        self.channel.send(json.dumps(event))

    def listen(self) -> None:
        """Start watching for the next loud audio from the engine (sets `first_voice_at`)."""
        self.first_voice_at = None
        self._listening = True

    def seconds_between(self, first: dict[str, Any], second: dict[str, Any]) -> float:
        """Client-side time between the arrival of two received events."""
        return self.arrivals[self.events.index(second)] - self.arrivals[self.events.index(first)]

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def wait_for(
        self,
        type: str,
        predicate: Callable[[dict[str, Any]], bool] = lambda e: True,
        *,
        timeout: float = 20.0,  # noqa: ASYNC109 - a test helper's deadline, like pytest's
        after: int = 0,
    ) -> dict[str, Any]:
        """The first event of `type` (from index `after`) matching `predicate`; fails on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            for event in self.events[after:]:
                if event.get("type") == type and predicate(event):
                    return event
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {type} within {timeout} s; got {self.types()[after:]}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)

    def audio(self, since: int = 0) -> np.ndarray:
        chunks = self.received[since:]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    async def close(self) -> None:
        self.mic.stop()
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


@contextlib.asynccontextmanager
async def connected_client(
    engine: ServedEngine, session: dict[str, Any] | None = None
) -> AsyncIterator[tuple[RealtimeTestClient, str, float]]:
    """A client connected through HTTP; yields (client, call id, offer->answer ms)."""
    client = RealtimeTestClient()
    # the client offers loopback candidates too when the engine does (loopback-only namespaces)
    offer_loopback_candidates(engine.runtime.loopback_candidates)
    try:
        offer = await client.offer()
        started = time.perf_counter()
        call_id, answer = await engine.create_call(offer, session)
        answer_ms = (time.perf_counter() - started) * 1000
        await client.set_answer(answer)
        await client.wait_open()
        await client.wait_for("session.created", timeout=10)
        yield client, call_id, answer_ms
        await engine.hangup(call_id)
    finally:
        await asyncio.wait_for(client.close(), 10)
