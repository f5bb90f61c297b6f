"""Lenient schemas of the Realtime server events the observer acts on (design principle 11).

Only the fields the observer reads are declared; everything else is allowed and ignored, because the
API adds fields and events over time. `parse_server_event` returns None for an event type we do not
act on, or for a known type whose fields are not what we expect: the caller has already stored the
raw event, so nothing is lost, and nothing crashes.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

logger = logging.getLogger(__name__)


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentPart(_Lenient):
    type: str | None = None
    text: str | None = None
    transcript: str | None = None


class Item(_Lenient):
    id: str | None = None
    type: str | None = None
    role: str | None = None
    status: str | None = None
    content: list[ContentPart] | None = None

    def text(self) -> str | None:
        """The item's words: input/output text parts, or audio transcripts; None when it has none yet."""
        pieces = [part.text or part.transcript for part in self.content or []]
        words = [piece for piece in pieces if piece]
        return " ".join(words) if words else None


class Session(_Lenient):
    instructions: str | None = None
    tools: list[dict[str, Any]] | None = None


class SessionEvent(_Lenient):
    type: Literal["session.created", "session.updated"]
    session: Session


class ItemEvent(_Lenient):
    type: Literal[
        "conversation.item.added",
        "conversation.item.done",
        "conversation.item.created",
        "conversation.item.retrieved",
        "response.output_item.added",
        "response.output_item.done",
    ]
    item: Item


class TextDeltaEvent(_Lenient):
    type: Literal[
        "conversation.item.input_audio_transcription.delta",
        "response.output_audio_transcript.delta",
        "response.output_text.delta",
    ]
    item_id: str
    delta: str = ""


class InputTranscriptionCompleted(_Lenient):
    type: Literal["conversation.item.input_audio_transcription.completed"]
    item_id: str
    transcript: str = ""


class OutputAudioTranscriptDone(_Lenient):
    type: Literal["response.output_audio_transcript.done"]
    item_id: str
    transcript: str = ""


class OutputTextDone(_Lenient):
    type: Literal["response.output_text.done"]
    item_id: str
    text: str = ""


class SpeechEvent(_Lenient):
    type: Literal["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped"]
    item_id: str | None = None


class ItemTruncated(_Lenient):
    type: Literal["conversation.item.truncated"]
    item_id: str
    audio_end_ms: int | None = None


class Response(_Lenient):
    id: str | None = None
    status: str | None = None
    output: list[Item] | None = None
    usage: dict[str, Any] | None = None


class ResponseDone(_Lenient):
    type: Literal["response.done"]
    response: Response


ServerEvent = (
    SessionEvent
    | ItemEvent
    | TextDeltaEvent
    | InputTranscriptionCompleted
    | OutputAudioTranscriptDone
    | OutputTextDone
    | SpeechEvent
    | ItemTruncated
    | ResponseDone
)

_MODELS: dict[str, type[ServerEvent]] = {}
for _model in (
    SessionEvent,
    ItemEvent,
    TextDeltaEvent,
    InputTranscriptionCompleted,
    OutputAudioTranscriptDone,
    OutputTextDone,
    SpeechEvent,
    ItemTruncated,
    ResponseDone,
):
    _literal = _model.model_fields["type"].annotation
    for _name in getattr(_literal, "__args__", ()):
        _MODELS[_name] = _model

#: Events after which the transcript or the turn state changed: the observer writes at once.
TURN_BOUNDARIES = frozenset(
    {
        "response.done",
        "conversation.item.input_audio_transcription.completed",
        "input_audio_buffer.speech_stopped",
        "conversation.item.truncated",
    }
)


def parse_server_event(payload: dict[str, Any], *, call_id: object = None) -> ServerEvent | None:
    """The typed event for a type the observer acts on; None for other types or malformed ones."""
    event_type = payload.get("type")
    model = _MODELS.get(event_type) if isinstance(event_type, str) else None
    if model is None:
        return None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        # Field names and error kinds only: the payload may hold what someone said.
        logger.warning(
            "call %s: malformed %s event (%s)",
            call_id,
            event_type,
            ", ".join(".".join(str(p) for p in error["loc"]) + f" {error['type']}" for error in exc.errors()),
        )
        return None
