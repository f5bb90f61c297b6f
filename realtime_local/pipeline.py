"""The input side of a call's speech: server VAD -> streaming STT, off the event loop.

`InputPipeline` consumes 16 kHz mono input audio from a bounded queue, runs the turn detector in a
worker thread, and while the user speaks runs streaming transcription partials in another worker
thread. It reports boundaries to the session through callbacks on the event loop; the session
decides what they mean (items, responses, barge-in). The reply side (responder -> TTS -> track) is
driven by `session.Session` with the `media.OutboundAudioTrack`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from realtime_local.speech.base import (
    INPUT_SAMPLE_RATE,
    Pcm16,
    Responder,
    Synthesizer,
    Transcriber,
    TurnDetectionConfig,
    TurnDetector,
)

logger = logging.getLogger(__name__)

#: Input chunks queued before the newest are dropped (250 x 20 ms = 5 s): a stalled detector must
#: not grow memory without bound.
INPUT_QUEUE_SIZE = 250


class SpeechStack(Protocol):
    """What the session needs of `realtime_local.speech.stack.SpeechStack` (structural)."""

    @property
    def transcriber(self) -> Transcriber: ...

    @property
    def synthesizer(self) -> Synthesizer: ...

    @property
    def responder(self) -> Responder: ...

    def new_turn_detector(self, config: TurnDetectionConfig) -> TurnDetector: ...


class _Streaming(Protocol):
    def run_partials(
        self,
        on_partial: Callable[[str], None],
        *,
        stop: threading.Event | None = None,
        on_pause: Callable[[str], None] | None = None,
    ) -> None: ...

    def finish(self) -> str: ...


def _new_streaming(speech: SpeechStack, detector: TurnDetector, language: str | None) -> _Streaming | None:
    """The stack's streaming transcription bound to `detector`, when it offers one."""
    factory: Any = getattr(speech, "new_streaming_transcription", None)
    if factory is None:
        return None
    try:
        stream: _Streaming = factory(detector, language=language)
    except TypeError:
        stream = factory(detector)
    return stream


class InputPipeline:
    """VAD and streaming transcription of one call's input audio."""

    def __init__(
        self,
        *,
        speech: SpeechStack,
        config: TurnDetectionConfig,
        language: str | None,
        on_started: Callable[[int], None],
        on_stopped: Callable[[int, Callable[[], str], float], None],
        on_partial: Callable[[str], None],
        on_pause: Callable[[str], None] | None = None,
        on_pause_withdrawn: Callable[[], None] | None = None,
    ) -> None:
        self._speech = speech
        self._language = language
        self._detector = speech.new_turn_detector(config)
        self._streaming = _new_streaming(speech, self._detector, language)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._on_partial = on_partial
        self._on_pause = on_pause
        self._on_pause_withdrawn = on_pause_withdrawn
        self._pause_open = False  # a pause transcript was delivered and the speaker is still silent
        self._generation = 0  # bumped by reset(): pause transcripts from before it are stale
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[Pcm16] = asyncio.Queue(INPUT_QUEUE_SIZE)
        self._speaking = False
        self._samples = 0
        self._stop_partials = threading.Event()
        self._partials: threading.Thread | None = None
        self.dropped_chunks = 0
        self._task = self._loop.create_task(self._run())

    def push(self, pcm: Pcm16) -> None:
        """Queue input audio; drops it (and counts) if the detector has fallen 5 s behind."""
        try:
            self._queue.put_nowait(pcm)
        except asyncio.QueueFull:
            self.dropped_chunks += 1

    def reset(self) -> None:
        """Forget buffered input (input_audio_buffer.clear)."""
        while not self._queue.empty():
            self._queue.get_nowait()
        self._stop_partials.set()
        self._speaking = False
        self._generation += 1
        self._close_pause()
        self._detector.reset()

    def force_stop(self) -> bool:
        """Commit the utterance in progress now (client `input_audio_buffer.commit`)."""
        if not self._speaking:
            return False
        self._end_utterance(self._samples * 1000 // INPUT_SAMPLE_RATE, forced=True)
        return True

    async def close(self) -> None:
        self._stop_partials.set()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            chunks = [await self._queue.get()]
            while not self._queue.empty() and len(chunks) < 25:
                chunks.append(self._queue.get_nowait())
            data = np.concatenate(chunks) if len(chunks) > 1 else chunks[0]
            self._samples += len(data)
            events = await asyncio.to_thread(self._detector.feed, data)
            for event in events:
                if event.kind == "speech_started" and not self._speaking:
                    self._speaking = True
                    self._on_started(event.audio_ms)
                    self._start_partials()
                elif event.kind == "speech_stopped" and self._speaking:
                    self._end_utterance(event.audio_ms, forced=False)
            if self._pause_open and self._speaking and not getattr(self._detector, "in_pause", False):
                self._close_pause()  # the speaker went on: what was prepared for the pause is void

    def _start_partials(self) -> None:
        stream = self._streaming
        if stream is None:
            return
        self._stop_partials = stop = threading.Event()
        loop = self._loop
        generation = self._generation

        def deliver(text: str) -> None:
            if not stop.is_set():
                loop.call_soon_threadsafe(self._deliver_partial, stop, text)

        def deliver_pause(text: str) -> None:
            # Also after the stop: with semantic_vad the stop and the pause's transcript come from
            # the same Whisper run, in either order; the session matches the transcript it gets.
            loop.call_soon_threadsafe(self._deliver_pause, generation, text)

        kwargs: dict[str, Any] = {"stop": stop}
        if self._on_pause is not None:
            kwargs["on_pause"] = deliver_pause
        # A thread of its own, not the loop's default executor: it lives as long as the utterance, and
        # several calls speaking at once must not starve the short VAD/TTS jobs of executor workers.
        self._partials = threading.Thread(
            target=stream.run_partials,
            args=(deliver,),
            kwargs=kwargs,
            name="stt-partials",
            daemon=True,
        )
        self._partials.start()

    def _deliver_partial(self, stop: threading.Event, text: str) -> None:
        if not stop.is_set():
            self._on_partial(text)

    def _deliver_pause(self, generation: int, text: str) -> None:
        if generation != self._generation or self._task.done() or self._on_pause is None:
            return
        self._pause_open = self._speaking
        self._on_pause(text)

    def _close_pause(self) -> None:
        if self._pause_open:
            self._pause_open = False
            if self._on_pause_withdrawn is not None:
                self._on_pause_withdrawn()

    def _end_utterance(self, audio_ms: int, *, forced: bool) -> None:
        self._speaking = False
        self._pause_open = False  # the pause became the end of the turn
        self._stop_partials.set()
        audio = self._detector.speech_audio()
        duration = len(audio) / INPUT_SAMPLE_RATE
        stream, transcriber, language = self._streaming, self._speech.transcriber, self._language
        if forced:
            self._detector.reset()

        def transcribe() -> str:
            started = time.perf_counter()
            if stream is not None and not forced:
                text = stream.finish()
            else:
                text = transcriber.transcribe(audio, language=language)
            logger.info(
                "utterance of %.2f s transcribed in %.0f ms (streaming reuse: %s)",
                duration,
                (time.perf_counter() - started) * 1000,
                getattr(stream, "last_finish_reused", None),
            )
            return text

        self._on_stopped(audio_ms, transcribe, duration)
