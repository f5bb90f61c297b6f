"""The speech side of a call: server VAD -> streaming STT on inbound audio, and reply -> TTS -> track.

The session machinery (`session.Session`) decides *what* happens (items, responses, events); this
module does the CPU work, always off the event loop (`asyncio.to_thread`), against the protocols in
`realtime_local.speech.base` so any stage can be swapped.
"""

from __future__ import annotations

from typing import Protocol

from realtime_local.speech.base import Responder, Synthesizer, Transcriber, TurnDetectionConfig, TurnDetector


class SpeechStack(Protocol):
    """What the session needs of `realtime_local.speech.stack.SpeechStack` (structural)."""

    @property
    def transcriber(self) -> Transcriber: ...

    @property
    def synthesizer(self) -> Synthesizer: ...

    @property
    def responder(self) -> Responder: ...

    def new_turn_detector(self, config: TurnDetectionConfig) -> TurnDetector: ...
