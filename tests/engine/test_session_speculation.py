"""The reply prepared during the user's pause (`session._Speculation`), without models.

A scripted turn detector and streaming transcription drive the real `InputPipeline` and `Session`:
the test decides when the speaker starts, pauses, resumes and stops, and which transcript the
pause and the final turn have. The responder and the synthesizer record what they were asked.
What is pinned: a prepared reply is used only when the turn ends with the transcript it was
prepared for; speech resuming discards it; the events and their order are the same as without
speculation; no audio reaches the output before `speech_stopped`.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from realtime_local import session as session_module
from realtime_local.schemas import validate_session
from realtime_local.session import Session
from realtime_local.speech.base import (
    ConversationTurn,
    Pcm16,
    Reply,
    TextReply,
    ToolSpec,
    TurnDetectionConfig,
    TurnEvent,
)

pytestmark = pytest.mark.timeout(30)

START, PAUSE, RESUME, STOP = 1, 2, 3, 4


class ScriptedDetector:
    """A turn detector whose fed chunks are commands (the first sample), not audio."""

    def __init__(self) -> None:
        self.in_pause = False

    def feed(self, pcm: Pcm16) -> list[TurnEvent]:
        command = int(pcm[0])
        if command == START:
            return [TurnEvent("speech_started", 0)]
        if command in (PAUSE, RESUME):
            self.in_pause = command == PAUSE
            return []
        if command == STOP:
            self.in_pause = False
            return [TurnEvent("speech_stopped", 1000)]
        return []

    def speech_audio(self) -> Pcm16:
        return np.zeros(16_000, dtype=np.int16)

    def reset(self) -> None:
        self.in_pause = False


class ScriptedStreaming:
    """Delivers the pause transcripts the test queues; `finish()` returns `final`."""

    def __init__(self) -> None:
        self.pauses: queue.Queue[str] = queue.Queue()
        self.final = ""

    def run_partials(
        self,
        on_partial: Callable[[str], None],
        *,
        stop: threading.Event | None = None,
        on_pause: Callable[[str], None] | None = None,
    ) -> None:
        while stop is None or not stop.is_set():
            try:
                text = self.pauses.get(timeout=0.01)
            except queue.Empty:
                continue
            if on_pause is not None:
                on_pause(text)

    def finish(self) -> str:
        return self.final


class EchoResponder:
    """Answers "You said <last user text>." and records every conversation it was asked about."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def reply(
        self, *, instructions: str, conversation: Sequence[ConversationTurn], tools: Sequence[ToolSpec]
    ) -> Iterator[Reply]:
        heard = conversation[-1].text if conversation else ""
        self.asked.append(heard)
        yield TextReply(f"You said {heard}.")


class ToneSynthesizer:
    """A 100 ms tone per piece; records the texts it was asked to speak."""

    sample_rate = 16_000

    def __init__(self) -> None:
        self.spoken: list[str] = []

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> Iterator[Pcm16]:
        self.spoken.append(text)
        yield np.full(1600, 3000, dtype=np.int16)


class FakeStack:
    def __init__(self) -> None:
        self.responder = EchoResponder()
        self.synthesizer = ToneSynthesizer()
        self.transcriber = self  # `transcribe` below: the session's manual-commit path (unused here)
        self.detector = ScriptedDetector()
        self.streaming = ScriptedStreaming()

    def transcribe(self, pcm: Pcm16, *, language: str | None = None, prompt: str | None = None) -> str:
        return self.streaming.final

    def new_turn_detector(self, config: TurnDetectionConfig) -> ScriptedDetector:
        return self.detector

    def new_streaming_transcription(self, detector: Any, *, language: str | None = None) -> ScriptedStreaming:
        return self.streaming


class RecordingOutput:
    """The `AudioOutput` a WebRTC track would be: notes each push in the shared log."""

    def __init__(self, log: list[str], session: Session) -> None:
        self.log = log
        self.session = session
        self.response_id: str | None = None
        self.started = False

    def begin(self, response_id: str) -> None:
        self.response_id, self.started = response_id, False

    def push(self, pcm: Pcm16) -> None:
        self.log.append("<audio>")
        if not self.started and self.response_id is not None:
            self.started = True
            self.session.on_output_started(self.response_id)

    def end(self) -> None:
        if self.response_id is not None:
            self.session.on_output_stopped(self.response_id)
            self.response_id = None

    async def wait_room(self, ahead_s: float) -> None:
        return None

    async def wait_started(self, limit_s: float) -> None:
        return None

    def clear(self) -> tuple[str, int] | None:
        return None

    def played_ms(self, response_id: str) -> int:
        return 0

    @property
    def current_response_id(self) -> str | None:
        return self.response_id


class Call:
    """A started session on the fake stack, with the log of events (and audio pushes) in order."""

    def __init__(self) -> None:
        self.stack = FakeStack()
        self.log: list[str] = []
        self.events: list[dict[str, Any]] = []
        config = validate_session(
            {"type": "realtime", "audio": {"input": {"turn_detection": {"type": "server_vad"}}}}
        )
        self.session = Session(
            config=config,
            speech=self.stack,
            emit=self._emit,
            touch=lambda: None,
            call_id="rtc_test",
        )
        self.session.audio_out = RecordingOutput(self.log, self.session)
        self.session.start()

    def _emit(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.log.append(event["type"])

    async def command(self, command: int) -> None:
        self.session.feed_input_audio(np.full(320, command, dtype=np.int16))
        await asyncio.sleep(0.05)  # the pipeline's worker thread and the loop callbacks

    async def pause(self, transcript: str) -> None:
        await self.command(PAUSE)
        self.stack.streaming.pauses.put(transcript)
        if session_module.SPECULATIVE_REPLY:
            await until(lambda: transcript in self.stack.responder.asked)
            await until(lambda: self.session._speculation is None or _ready(self.session._speculation))
        else:
            await asyncio.sleep(0.05)

    async def wait_done(self) -> None:
        await until(lambda: "output_audio_buffer.stopped" in self.log)

    def types(self) -> list[str]:
        return [entry for entry in self.log if entry != "<audio>"]

    async def close(self) -> None:
        await self.session.close()


def _ready(spec: Any) -> bool:
    return spec.task is not None and spec.task.done()


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the conditions are set from threads and callbacks
            await asyncio.sleep(0.005)


async def test_reply_prepared_in_the_pause_is_used_and_nothing_plays_before_speech_stopped() -> None:
    call = Call()
    try:
        await call.command(START)
        call.stack.streaming.final = "What is the weather in Paris?"
        await call.pause("What is the weather in Paris?")
        # Prepared during the pause: the responder answered and the first chunk was synthesized,
        # but no event beyond speech_started and no audio went out.
        assert call.stack.responder.asked == ["What is the weather in Paris?"]
        assert call.stack.synthesizer.spoken == ["You said What is the weather in Paris?."]
        assert call.types()[-1] == "input_audio_buffer.speech_started"
        assert "<audio>" not in call.log
        await call.command(STOP)
        await call.wait_done()
        assert call.session.speculation_outcomes[-1] == "used"
        assert call.stack.responder.asked == ["What is the weather in Paris?"]  # not asked again
        assert call.stack.synthesizer.spoken == ["You said What is the weather in Paris?."]
        assert call.log.index("<audio>") > call.log.index("input_audio_buffer.speech_stopped")
        delta = next(e for e in call.events if e["type"] == "response.output_audio_transcript.delta")
        assert delta["delta"] == "You said What is the weather in Paris?."
    finally:
        await call.close()


async def test_speech_resuming_discards_the_prepared_reply() -> None:
    call = Call()
    try:
        await call.command(START)
        await call.pause("What is the weather")
        assert call.session._speculation is not None
        await call.command(RESUME)  # the speaker goes on: the candidate end is withdrawn
        assert call.session._speculation is None
        call.stack.streaming.final = "What is the weather in Paris?"
        await call.command(STOP)
        await call.wait_done()
        assert call.session.speculation_outcomes[-1] == "none"
        assert call.stack.responder.asked == ["What is the weather", "What is the weather in Paris?"]
        delta = next(e for e in call.events if e["type"] == "response.output_audio_transcript.delta")
        assert delta["delta"] == "You said What is the weather in Paris?."
        assert call.log.index("<audio>") > call.log.index("input_audio_buffer.speech_stopped")
    finally:
        await call.close()


async def test_a_different_final_transcript_discards_the_prepared_reply() -> None:
    call = Call()
    try:
        await call.command(START)
        await call.pause("Hello")
        call.stack.streaming.final = "Hello there."  # e.g. a manual commit transcribed more audio
        await call.command(STOP)
        await call.wait_done()
        assert call.session.speculation_outcomes[-1] == "discarded"
        assert call.stack.responder.asked == ["Hello", "Hello there."]
        delta = next(e for e in call.events if e["type"] == "response.output_audio_transcript.delta")
        assert delta["delta"] == "You said Hello there.."
    finally:
        await call.close()


async def test_a_conversation_change_during_the_pause_discards_the_prepared_reply() -> None:
    call = Call()
    try:
        await call.command(START)
        await call.pause("What did I just say?")
        # A client adds an item while the user is silent: the prepared reply did not see it.
        await call.session.handle_client_event(
            {
                "type": "conversation.item.create",
                "item": {
                    "type": "message",
                    "role": "system",
                    "content": [{"type": "input_text", "text": "Hi"}],
                },
            }
        )
        call.stack.streaming.final = "What did I just say?"
        await call.command(STOP)
        await call.wait_done()
        assert call.session.speculation_outcomes[-1] == "discarded"
        assert call.stack.responder.asked == ["What did I just say?", "What did I just say?"]
    finally:
        await call.close()


async def test_events_and_their_order_are_the_same_with_and_without_speculation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def one_turn() -> tuple[list[str], list[str]]:
        call = Call()
        try:
            await call.command(START)
            call.stack.streaming.final = "Turn on the lights."
            await call.pause("Turn on the lights.")
            await call.command(STOP)
            await call.wait_done()
            await until(lambda: "rate_limits.updated" in call.log)
            return call.types(), list(call.session.speculation_outcomes)
        finally:
            await call.close()

    speculative, outcomes = await one_turn()
    monkeypatch.setattr(session_module, "SPECULATIVE_REPLY", False)
    plain, plain_outcomes = await one_turn()
    assert outcomes == ["used"] and plain_outcomes == ["none"]
    assert speculative == plain
    assert speculative[:4] == [
        "session.created",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
    ]
