"""The aiortc side of a call: the peer connection, inbound audio, the paced outbound track.

- Inbound: the browser's Opus track reaches aiortc as 48 kHz stereo s16 frames of 960 samples; they
  are resampled to 16 kHz mono (`av.AudioResampler`) and fed to the session's input pipeline.
- Outbound: `OutboundAudioTrack` is read by aiortc's encoder at its own pace; `recv()` sleeps to
  real time and returns 20 ms frames of 48 kHz mono, silence when there is nothing to say. It knows
  how much of each response was actually sent, which is what barge-in truncates to.
- Data channel `oai-events`: JSON text messages both ways (client events in, server events out).
- Video m-lines are answered `inactive`: frames are never decoded (images go in as items).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fractions
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from realtime_local.speech.base import INPUT_SAMPLE_RATE, Pcm16

if TYPE_CHECKING:
    from realtime_local.call import EngineRuntime, LocalCall
    from realtime_local.session import Session

logger = logging.getLogger(__name__)

OUTPUT_RATE = 48_000
FRAME_SAMPLES = 960  # 20 ms at 48 kHz
DATA_CHANNEL_LABEL = "oai-events"
#: Bytes queued on the data channel beyond which server events are dropped (a stuck browser).
MAX_CHANNEL_BUFFER = 8 * 1024 * 1024
#: How inbound audio packets are released to the decoder: "in_order" (`InOrderAudioBuffer`, at once)
#: or "aiortc" (its stock jitter buffer: each packet waits for four newer frames). A knob for A/B
#: benchmarks; read when a peer is created.
INBOUND_AUDIO_BUFFER = "in_order"
#: A packet this many sequence numbers behind the newest is a restarted stream, not a late packet.
_MAX_MISORDER = 100


class InOrderAudioBuffer:
    """aiortc's jitter-buffer interface (`add(packet) -> (pli, frame)`) for Opus: no waiting.

    aiortc's audio `RTCRtpReceiver` uses `JitterBuffer(capacity=16, prefetch=4)`: a packet is
    released only once four newer frames are complete, so every input sample reaches the VAD ~80 ms
    late, and so does every end of turn (measured from Chromium: end of speech ->
    `speech_stopped` 676 ms with `silence_duration_ms` 500). Even with no prefetch, its frames leave
    only when the *next* packet arrives (a frame is complete once a packet with another timestamp
    follows), 20 ms more. An Opus RTP packet is a whole frame, so this buffer hands each packet to
    the decoder as it arrives. A packet older than the newest one released (reordered or
    duplicated) is dropped, and a gap is skipped at once: the VAD and Whisper hear 20 ms missing
    rather than every packet delayed, and a lost packet no longer stalls the stream until aiortc's
    buffer overflows (its stock behaviour).
    """

    capacity = 16

    def __init__(self) -> None:
        self._expected: int | None = None

    def add(self, packet: Any) -> tuple[bool, Any]:
        from aiortc.jitterbuffer import JitterFrame

        sequence = int(packet.sequence_number)
        if self._expected is not None:
            behind = (self._expected - 1 - sequence) & 0xFFFF  # 0: a duplicate of the newest
            if behind < _MAX_MISORDER:
                return False, None
        self._expected = (sequence + 1) & 0xFFFF
        return False, JitterFrame(data=packet._data, timestamp=packet.timestamp)


def use_in_order_audio_buffer(receiver: Any) -> bool:
    """Replace an audio receiver's jitter buffer with `InOrderAudioBuffer` (before any packet).

    The attribute is aiortc's private one, so this returns False (and aiortc's stays) if a future
    aiortc renames it; a test pins it.
    """
    from aiortc.jitterbuffer import JitterBuffer

    name = "_RTCRtpReceiver__jitter_buffer"
    current = getattr(receiver, name, None)
    if not isinstance(current, JitterBuffer) or getattr(current, "_is_video", True):
        return False
    setattr(receiver, name, InOrderAudioBuffer())
    return True


_loopback_installed = False
_loopback_wanted: contextvars.ContextVar[bool] = contextvars.ContextVar("loopback_candidates", default=False)


def offer_loopback_candidates(enabled: bool = True) -> None:
    """Make ICE gathering started from the current context offer 127.0.0.1 host candidates.

    aioice skips loopback on purpose; a loopback-only network namespace then has no candidate at
    all. aioice reads `aioice.ice.get_host_addresses` at gathering time, so a wrapper installed
    there (once, process-wide) adds 127.0.0.1 when this context variable says so. aiortc gathers
    in tasks created from the caller's context, so the opt-in stays with the peer that asked for it
    (the engine's `EngineRuntime.loopback_candidates`, or a test's own client).
    """
    global _loopback_installed
    _loopback_wanted.set(enabled)
    if _loopback_installed or not enabled:
        return
    import aioice.ice

    original: Callable[[bool, bool], list[str]] = aioice.ice.get_host_addresses

    def with_loopback(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        addresses = original(use_ipv4, use_ipv6)
        if use_ipv4 and _loopback_wanted.get() and "127.0.0.1" not in addresses:
            addresses.append("127.0.0.1")
        return addresses

    aioice.ice.get_host_addresses = with_loopback
    _loopback_installed = True


class Resampler:
    """Mono int16 resampling with PyAV (stateful: feed a stream in pieces, then `flush`)."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._resampler: Any = (
            av.AudioResampler(format="s16", layout="mono", rate=out_rate) if in_rate != out_rate else None
        )
        self._pts = 0

    def convert(self, pcm: Pcm16) -> Pcm16:
        data = np.ascontiguousarray(pcm, dtype=np.int16).reshape(-1)
        if self._resampler is None or not len(data):
            return data
        frame = av.AudioFrame.from_ndarray(data.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.in_rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.in_rate)
        self._pts += len(data)
        return self._join(self._resampler.resample(frame))

    def flush(self) -> Pcm16:
        if self._resampler is None:
            return np.zeros(0, dtype=np.int16)
        return self._join(self._resampler.resample(None))

    @staticmethod
    def _join(frames: list[Any]) -> Pcm16:
        if not frames:
            return np.zeros(0, dtype=np.int16)
        parts: list[Pcm16] = [np.asarray(f.to_ndarray(), dtype=np.int16).reshape(-1) for f in frames]
        return np.concatenate(parts) if len(parts) > 1 else parts[0].copy()


class OutboundAudioTrack(MediaStreamTrack):
    """The assistant's voice: 20 ms frames of 48 kHz mono, paced in real time.

    One response plays at a time (`begin` ... `push`... `end`). `on_started(response_id)` fires when
    its first frame is handed to the encoder, `on_stopped(response_id)` when the last one is (after
    `end`); `clear()` drops what is queued and reports how much was played.
    """

    kind = "audio"

    def __init__(self, *, on_started: Callable[[str], None], on_stopped: Callable[[str], None]) -> None:
        super().__init__()
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._chunks: deque[Pcm16] = deque()
        self._buffered = 0
        self._response_id: str | None = None
        self._started = False
        self._ended = False
        self._played: dict[str, int] = {}
        self._started_event = asyncio.Event()
        self._room = asyncio.Event()
        self._start: float | None = None
        self._timestamp = 0
        self.frames_sent = 0

    # ---- producer side (the session) ---------------------------------------------------------
    @property
    def current_response_id(self) -> str | None:
        return self._response_id

    def begin(self, response_id: str) -> None:
        self._drop()
        self._response_id = response_id
        self._played[response_id] = 0
        while len(self._played) > 16:
            del self._played[next(iter(self._played))]
        self._started = False
        self._ended = False
        self._started_event.clear()

    def push(self, pcm: Pcm16) -> None:
        if self._response_id is None or not len(pcm):
            return
        self._chunks.append(np.asarray(pcm, dtype=np.int16).reshape(-1))
        self._buffered += len(pcm)

    def end(self) -> None:
        self._ended = True

    async def wait_room(self, ahead_s: float) -> None:
        limit = int(ahead_s * OUTPUT_RATE)
        while self._buffered > limit and self.readyState == "live":
            self._room.clear()
            await self._room.wait()

    async def wait_started(self, limit_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._started_event.wait(), limit_s)

    def played_ms(self, response_id: str) -> int:
        return self._played.get(response_id, 0) * 1000 // OUTPUT_RATE

    def clear(self) -> tuple[str, int] | None:
        response_id = self._response_id
        if response_id is None or not (self._started or self._buffered):
            self._drop()
            return None
        played = self.played_ms(response_id)
        self._drop()
        return response_id, played

    def _drop(self) -> None:
        self._chunks.clear()
        self._buffered = 0
        self._response_id = None
        self._started = False
        self._ended = False
        self._started_event.set()  # release waiters; they re-check state
        self._room.set()

    # ---- consumer side (aiortc's encoder) ------------------------------------------------------
    def _take(self) -> tuple[Pcm16, int]:
        """The next frame and how many of its samples are real audio (the rest is padding)."""
        if self._buffered < FRAME_SAMPLES and not (self._ended and self._buffered):
            return np.zeros(FRAME_SAMPLES, dtype=np.int16), 0
        out = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        filled = 0
        while filled < FRAME_SAMPLES and self._chunks:
            head = self._chunks[0]
            n = min(FRAME_SAMPLES - filled, len(head))
            out[filled : filled + n] = head[:n]
            filled += n
            if n == len(head):
                self._chunks.popleft()
            else:
                self._chunks[0] = head[n:]
        self._buffered -= filled
        return out, filled

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
        else:
            self._timestamp += FRAME_SAMPLES
            wait = self._start + self._timestamp / OUTPUT_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        samples, real = self._take()
        response_id = self._response_id
        if real and response_id is not None:
            self._played[response_id] = self._played.get(response_id, 0) + real
            self._room.set()
            if not self._started:
                self._started = True
                self._started_event.set()
                self._on_started(response_id)
        if response_id is not None and self._ended and self._buffered == 0:
            started = self._started
            self._response_id = None
            self._ended = False
            self._started = False
            if started:
                self._on_stopped(response_id)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = OUTPUT_RATE
        frame.pts = self._timestamp
        frame.time_base = fractions.Fraction(1, OUTPUT_RATE)
        self.frames_sent += 1
        return frame


class MediaPeer:
    """One RTCPeerConnection answering a browser's offer, wired to a call's session."""

    def __init__(self, *, call: LocalCall, session: Session, runtime: EngineRuntime) -> None:
        self.call = call
        self.session = session
        self.runtime = runtime
        servers = [RTCIceServer(urls=url) for url in runtime.ice_servers]
        offer_loopback_candidates(runtime.loopback_candidates)  # before the peer copies the context
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        self.track = OutboundAudioTrack(
            on_started=session.on_output_started, on_stopped=session.on_output_stopped
        )
        session.audio_out = self.track
        self._tasks: set[asyncio.Task[Any]] = set()
        self._audio_consumed = False
        self._closed = False
        self.inbound_frames = 0

    async def answer(self, offer_sdp: str) -> str:
        """Apply the offer and return the answer SDP with host candidates (no STUN wait)."""
        offer_loopback_candidates(self.runtime.loopback_candidates)  # this task's gathering
        pc = self.pc

        @pc.on("datachannel")
        def on_datachannel(channel: Any) -> None:
            if channel.label == DATA_CHANNEL_LABEL:
                self._bind_channel(channel)

        @pc.on("track")
        def on_track(track: Any) -> None:
            if track.kind == "audio" and not self._audio_consumed:
                self._audio_consumed = True
                self._spawn(self._consume_audio(track))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState == "connected":
                self.call.start_session()  # also without a data channel (audio-only clients)
            elif pc.connectionState in ("failed", "closed") and not self._closed:
                self.call.peer_closed()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video":
                transceiver.direction = "inactive"
            elif INBOUND_AUDIO_BUFFER == "in_order" and not use_in_order_audio_buffer(transceiver.receiver):
                logger.warning("aiortc's inbound jitter buffer could not be replaced (aiortc changed?)")
        pc.addTrack(self.track)  # takes the offer's audio transceiver: one sendrecv Opus track
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        sdp: str = pc.localDescription.sdp
        return sdp

    def _bind_channel(self, channel: Any) -> None:
        session = self.session

        def send(event: dict[str, Any]) -> None:
            if channel.readyState != "open":
                return
            if channel.bufferedAmount > MAX_CHANNEL_BUFFER:
                # the browser stopped reading: drop rather than grow SCTP's queue without bound
                logger.warning("call %s: data channel backlog full; dropping %s", self.call.id, event["type"])
                return
            channel.send(json.dumps(event))

        @channel.on("message")  # type: ignore[untyped-decorator]
        def on_message(message: Any) -> None:
            self.call.last_activity = time.monotonic()
            if isinstance(message, str):
                session.handle_client_text(message)
            else:
                session.handle_client_text("")  # binary is not a client event: answers with `error`

        if channel.readyState == "open":
            self.call.bind_data_channel(send)
        else:
            channel.on("open", lambda: self.call.bind_data_channel(send))

    async def _consume_audio(self, track: Any) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=INPUT_SAMPLE_RATE)
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.inbound_frames += 1
            self.call.last_activity = time.monotonic()
            for out in resampler.resample(frame):
                self.session.feed_input_audio(np.asarray(out.to_ndarray(), dtype=np.int16).reshape(-1).copy())

    def _spawn(self, coro: Any) -> None:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Idempotent: stop the track, close the connection, cancel the media tasks."""
        if self._closed:
            return
        self._closed = True
        self.track.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.pc.close()
