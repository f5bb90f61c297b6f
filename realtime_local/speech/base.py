"""The contracts between the session machinery and the speech stages.

The session (realtime_local.session / media) depends only on these protocols, so each stage can be
tested alone and swapped by settings. Audio inside the engine is mono signed 16-bit PCM as numpy
int16 arrays; every stage states its sample rate. Stages are synchronous and CPU-bound: the session
calls them off the event loop (`asyncio.to_thread`), never directly from a coroutine.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from realtime_local.vision import ImageFacts

Pcm16 = npt.NDArray[np.int16]

#: Sample rate of audio fed to VAD and STT.
INPUT_SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class TurnDetectionConfig:
    """The session's `audio.input.turn_detection`: server VAD parameters, or `semantic_vad` with
    its `eagerness` (which then chooses the silence waits; see `semantic.py`)."""

    threshold: float = 0.5
    prefix_padding_ms: int = 300
    silence_duration_ms: int = 500
    type: Literal["server_vad", "semantic_vad"] = "server_vad"
    eagerness: Literal["low", "medium", "high", "auto"] = "auto"


@dataclass(frozen=True)
class TurnEvent:
    """A boundary found by the turn detector, in ms since the start of the call's input audio."""

    kind: Literal["speech_started", "speech_stopped"]
    audio_ms: int


class TurnDetector(Protocol):
    """Server VAD: consumes 16 kHz input audio in any chunk size, reports speech start/stop."""

    def feed(self, pcm: Pcm16) -> list[TurnEvent]:
        """Consume audio; return the boundaries it completes (usually none)."""
        ...

    def speech_audio(self) -> Pcm16:
        """The current (or just finished) utterance, including `prefix_padding_ms` before its start."""
        ...

    def reset(self) -> None: ...


class Transcriber(Protocol):
    """Speech to text on 16 kHz audio."""

    def transcribe(self, pcm: Pcm16, *, language: str | None = None, prompt: str | None = None) -> str: ...


class Synthesizer(Protocol):
    """Text to speech; yields chunks as soon as they are ready so playback starts early."""

    sample_rate: int

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> Iterator[Pcm16]: ...


@dataclass(frozen=True)
class ToolSpec:
    """A function tool the session offers (`{"type": "function", ...}` in the session config)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ConversationTurn:
    """What the responder sees of the conversation, oldest first."""

    role: Literal["user", "assistant", "function_call", "function_call_output", "system"]
    text: str = ""
    name: str = ""  # function name for function_call
    call_id: str = ""
    arguments: str = ""  # JSON string for function_call
    #: The facts of the image a user message carried (its last `input_image` part), if any.
    image: ImageFacts | None = None


@dataclass(frozen=True)
class TextReply:
    """The responder answers with speech: this text is spoken (streamed in pieces if long)."""

    text: str


@dataclass(frozen=True)
class FunctionCallReply:
    """The responder asks the client to run a tool; `arguments` is a JSON object as a string."""

    name: str
    arguments: str


Reply = TextReply | FunctionCallReply


class Responder(Protocol):
    """Produces the assistant's next reply from the instructions, the conversation and the tools."""

    def reply(
        self, *, instructions: str, conversation: Sequence[ConversationTurn], tools: Sequence[ToolSpec]
    ) -> Iterator[Reply]:
        """Yield the reply's pieces in order: text pieces (sentences) or a single function call."""
        ...
