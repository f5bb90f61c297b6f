"""The conversation state machine of one call: items, responses and the ordered server events.

`Session` is transport-agnostic: it receives client events (data channel or sideband), input audio
boundaries from the `pipeline.InputPipeline`, and plays replies into an `AudioOutput` (the WebRTC
track) when there is one. It emits server events through a synchronous `emit` callback, so the order
of the code below is the order clients see (protocol.md §6).

Bounded by construction: the conversation keeps text only (no audio), at most `MAX_ITEMS` items;
the manual input buffer (turn detection off) keeps at most `MAX_INPUT_BUFFER_S` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import copy
import json
import logging
import math
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from realtime_local.events import (
    InvalidClientEvent,
    conversation_turns,
    error_event,
    new_function_call_id,
    new_item_id,
    new_response_id,
    normalize_item,
)
from realtime_local.speech.base import (
    INPUT_SAMPLE_RATE,
    ConversationTurn,
    FunctionCallReply,
    Pcm16,
    Reply,
    Responder,
    TextReply,
    ToolSpec,
    TurnDetectionConfig,
)
from realtime_local.vision import ImageError, ImageFacts, decode_data_url, image_facts

if TYPE_CHECKING:
    from realtime_local.pipeline import InputPipeline, SpeechStack

logger = logging.getLogger(__name__)

MAX_ITEMS = 500
#: Image items whose data URL is kept in memory; older ones keep their facts, not their pixels.
MAX_IMAGE_PAYLOADS = 8
MAX_INPUT_BUFFER_S = 60
#: Audio generated ahead of playback. Small, so memory stays bounded and a barge-in finds the
#: response still in progress (it is then cancelled, as with the real API).
MAX_AUDIO_AHEAD_S = 1.5
OUTPUT_RATE = 48_000
APPEND_RATE = 24_000
#: Prepare the reply during the user's pause (see `_Speculation`); off only for A/B benchmarks.
SPECULATIVE_REPLY = True


class AudioOutput(Protocol):
    """Where a response's audio goes (the outbound WebRTC track): 48 kHz mono int16."""

    def begin(self, response_id: str) -> None: ...

    def push(self, pcm: Pcm16) -> None: ...

    def end(self) -> None:
        """No more audio for the current response; `stopped` follows when it has been played."""
        ...

    async def wait_room(self, ahead_s: float) -> None:
        """Wait until at most `ahead_s` seconds of audio are queued."""
        ...

    async def wait_started(self, limit_s: float) -> None: ...

    def clear(self) -> tuple[str, int] | None:
        """Drop the queued audio. Returns (response_id, played ms) if audio was playing, else None."""
        ...

    def played_ms(self, response_id: str) -> int: ...

    @property
    def current_response_id(self) -> str | None: ...


@dataclass
class _Piece:
    """A transcript delta and the span of 48 kHz samples its audio occupies in the response."""

    text: str
    start: int
    end: int
    complete: bool = False  # all its audio generated (else `end` is only what was generated so far)


@dataclass
class _Speculation:
    """A reply prepared during the user's pause, before the turn is over (never emitted from here).

    When the turn detector sees the speaker fall silent, the transcript of the utterance up to that
    pause is known (the streaming transcription runs there at once, for `finish()` to reuse). The
    session then asks the responder for its first piece and synthesizes that piece's first audio
    chunk in the background, into memory. If the turn ends with the same final transcript and the
    response would see exactly the same inputs (`signature`: instructions, conversation, tools,
    voice, speed, modalities), the response created at `speech_stopped` continues from this state
    instead of starting over: the same events, in the same order, only sooner. Anything else
    (speech resumed, another transcript, the conversation or session changed) discards it.
    """

    transcript: str
    signature: tuple[Any, ...]
    replies: Iterator[Reply]
    #: Pieces fetched ahead from `replies` (the first one; None: the responder had nothing).
    pieces: list[Reply | None] = field(default_factory=list)
    speech_text: str | None = None  # the piece whose first audio chunk is prepared
    speech_chunks: Iterator[Pcm16] | None = None
    first_chunk: Pcm16 | None = None  # None with speech_text set: the piece synthesized to nothing
    task: asyncio.Task[None] | None = None

    def close(self) -> None:
        """Close the generators (one still running in its worker thread refuses; it is dropped)."""
        for gen in (self.replies, self.speech_chunks):
            close = getattr(gen, "close", None)
            if callable(close):
                with contextlib.suppress(ValueError, RuntimeError):
                    close()


@dataclass
class _Response:
    id: str
    modalities: list[str]
    in_conversation: bool
    instructions: str
    tools: list[ToolSpec]
    context: list[ConversationTurn]
    voice: str
    speed: float
    metadata: dict[str, Any] | None
    max_output_tokens: int | str
    status: str = "in_progress"
    status_details: dict[str, Any] | None = None
    output: list[dict[str, Any]] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    message: dict[str, Any] | None = None
    #: (text delta, cumulative 48 kHz samples at the end of its audio) for truncation
    pieces: list[_Piece] = field(default_factory=list)
    samples: int = 0
    text: str = ""
    audio_started: bool = False
    truncated_text: str | None = None
    usage: dict[str, Any] | None = None
    created_sent: bool = False
    done_sent: bool = False
    speculation: _Speculation | None = None

    def signature(self) -> tuple[Any, ...]:
        """What the responder and the synthesizer see: equal signatures give the same reply."""
        return (
            tuple(self.modalities),
            self.in_conversation,
            self.instructions,
            tuple(self.tools),
            tuple(self.context),
            self.voice,
            self.speed,
        )

    @property
    def audio(self) -> bool:
        return "audio" in self.modalities


def _tokens(text: str) -> int:
    """A rough token count (4 characters a token), for `usage` figures."""
    return max(0, math.ceil(len(text) / 4))


def _deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Merge a session.update into the config: `audio`, `audio.input/output` merge, the rest replaces."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if key == "audio" and isinstance(value, dict) and isinstance(merged.get("audio"), dict):
            audio = merged["audio"]
            for side, side_value in value.items():
                if isinstance(side_value, dict) and isinstance(audio.get(side), dict):
                    audio[side] = {**audio[side], **copy.deepcopy(side_value)}
                else:
                    audio[side] = copy.deepcopy(side_value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _validate_session(data: dict[str, Any]) -> dict[str, Any]:
    """engine-api's schema (same rules as for call creation); errors become InvalidClientEvent."""
    from realtime_local.errors import ApiError
    from realtime_local.schemas import validate_session

    try:
        return validate_session(data, param="session")
    except ApiError as exc:
        raise InvalidClientEvent(exc.message, param=exc.param, code=exc.code) from None


#: 48 kHz samples per character of speech when no finished piece tells the synthesizer's pace.
_SAMPLES_PER_CHAR = 3400


def _truncate_words(pieces: list[_Piece], played_samples: int) -> str:
    """The transcript of what was played: whole pieces, then a proportional share of the next.

    A piece whose audio was still being generated is sized from the pace of the finished ones.
    """
    finished = [p for p in pieces if p.complete and p.text.strip()]
    pace = (
        sum(p.end - p.start for p in finished) / max(1, sum(len(p.text) for p in finished))
        if finished
        else _SAMPLES_PER_CHAR
    )
    words: list[str] = []
    for piece in pieces:
        piece_words = piece.text.split()
        span = piece.end - piece.start
        if not piece.complete:
            span = max(span, int(len(piece.text) * pace))
        if piece.start + span <= played_samples:
            words += piece_words
        else:
            fraction = max(0.0, (played_samples - piece.start) / max(1, span))
            words += piece_words[: int(len(piece_words) * fraction)]
            break
    return " ".join(words)


class Session:
    """Conversation state and event emission for one call."""

    def __init__(
        self,
        *,
        config: dict[str, Any],
        speech: SpeechStack | None,
        emit: Callable[[dict[str, Any]], None],
        touch: Callable[[], None],
        call_id: str,
        responder: Responder | None = None,
    ) -> None:
        self.config = copy.deepcopy(config)
        self.speech = speech
        self._emit = emit
        self._touch = touch
        self.call_id = call_id
        self.conversation_id = "conv_" + secrets.token_hex(11)
        self.responder = responder or (speech.responder if speech is not None else _default_responder())
        self.audio_out: AudioOutput | None = None
        self.items: dict[str, dict[str, Any]] = {}  # insertion-ordered: the conversation
        self._response: _Response | None = None
        self._responses: dict[str, _Response] = {}  # recent responses, for truncation on barge-in
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pipeline: InputPipeline | None = None
        self._manual_buffer: list[Pcm16] = []
        self._manual_samples = 0
        self._append_resampler: Any = None
        self._started = False
        self._closed = False
        self._speech_item_id: str | None = None
        self._partial_sent: dict[str, str] = {}
        #: Facts of each image item (its last `input_image` part), by item id, oldest first.
        self.image_facts: dict[str, ImageFacts] = {}
        #: turn latency figures (end of speech -> first audio frame), for logs and benchmarks
        self.turn_latencies_ms: deque[float] = deque(maxlen=100)
        self._speech_stopped_at: float | None = None
        self._speculation: _Speculation | None = None
        #: how each spoken turn's response started: "used", "discarded" or "none" (benchmarks, tests)
        self.speculation_outcomes: deque[str] = deque(maxlen=100)

    # ---- lifecycle ------------------------------------------------------------------------------

    def replace_config(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)
        if self._started:
            self._rebuild_pipeline()

    def start(self) -> None:
        """Emit `session.created` (once) and start listening."""
        if self._started or self._closed:
            return
        self._started = True
        self._emit({"type": "session.created", "session": self.config})
        self._rebuild_pipeline()

    async def close(self) -> None:
        """Cancel every task of the session (idempotent)."""
        self._closed = True
        self._discard_speculation()
        if self._pipeline is not None:
            await self._pipeline.close()
            self._pipeline = None
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("session task failed", exc_info=task.exception())

    # ---- config helpers -------------------------------------------------------------------------

    @property
    def turn_detection(self) -> dict[str, Any] | None:
        audio = self.config.get("audio") or {}
        td = (audio.get("input") or {}).get("turn_detection")
        return td if isinstance(td, dict) else None

    def _turn_config(self) -> TurnDetectionConfig | None:
        td = self.turn_detection
        if td is None:
            return None
        if td.get("type") == "semantic_vad":
            eagerness = td.get("eagerness")
            return TurnDetectionConfig(
                type="semantic_vad",
                eagerness=eagerness if eagerness in ("low", "medium", "high") else "auto",
            )
        return TurnDetectionConfig(
            threshold=float(td.get("threshold") or 0.5),
            prefix_padding_ms=int(td.get("prefix_padding_ms") or 300),
            silence_duration_ms=int(td.get("silence_duration_ms") or 500),
        )

    def _rebuild_pipeline(self) -> None:
        from realtime_local.pipeline import InputPipeline

        old = self._pipeline
        self._pipeline = None
        self._discard_speculation()
        if old is not None:
            self._spawn(old.close())
        turn = self._turn_config()
        if self.speech is None or turn is None or self._closed:
            return
        language = ((self.config.get("audio") or {}).get("input") or {}).get("transcription") or {}
        self._pipeline = InputPipeline(
            speech=self.speech,
            config=turn,
            language=language.get("language") if isinstance(language, dict) else None,
            on_started=self._on_speech_started,
            on_stopped=self._on_speech_stopped,
            on_partial=self._on_partial,
            on_pause=self._on_pause,
            on_pause_withdrawn=self._discard_speculation,
        )

    # ---- input audio ----------------------------------------------------------------------------

    def feed_input_audio(self, pcm: Pcm16) -> None:
        """16 kHz mono input (from the WebRTC track or `input_audio_buffer.append`)."""
        if self._closed:
            return
        if self._pipeline is not None:
            self._pipeline.push(pcm)
        elif self.turn_detection is None:
            limit = MAX_INPUT_BUFFER_S * INPUT_SAMPLE_RATE
            if self._manual_samples + len(pcm) <= limit:
                self._manual_buffer.append(pcm)
                self._manual_samples += len(pcm)

    def _on_speech_started(self, audio_ms: int) -> None:
        self._discard_speculation()
        item_id = new_item_id()
        self._speech_item_id = item_id
        self._emit(
            {"type": "input_audio_buffer.speech_started", "audio_start_ms": audio_ms, "item_id": item_id}
        )
        td = self.turn_detection or {}
        if td.get("interrupt_response", True):
            self._spawn(self._interrupt("turn_detected"))

    def _on_partial(self, text: str) -> None:
        item_id = self._speech_item_id
        if item_id is None:
            return
        sent = self._partial_sent.get(item_id, "")
        if text.startswith(sent) and len(text) > len(sent):
            self._partial_sent[item_id] = text
            while len(self._partial_sent) > 8:  # utterances whose turn never finished
                del self._partial_sent[next(iter(self._partial_sent))]
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item_id,
                    "content_index": 0,
                    "delta": text[len(sent) :],
                }
            )

    def _on_speech_stopped(self, audio_ms: int, transcribe: Callable[[], str], duration_s: float) -> None:
        item_id = self._speech_item_id or new_item_id()
        self._speech_item_id = None
        self._speech_stopped_at = asyncio.get_running_loop().time()
        self._emit(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": audio_ms, "item_id": item_id}
        )
        td = self.turn_detection or {}
        self._commit_user_audio(
            item_id, transcribe, duration_s, respond=bool(td.get("create_response", True))
        )

    def _commit_user_audio(
        self, item_id: str, transcribe: Callable[[], str], duration_s: float, *, respond: bool
    ) -> None:
        previous = self._last_item_id()
        self._emit({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": previous})
        item = {
            "id": item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [{"type": "input_audio", "transcript": None}],
        }
        self._add_item(item, previous_item_id=previous, done=False)
        self._spawn(self._finish_user_turn(item, transcribe, duration_s, respond))

    async def _finish_user_turn(
        self, item: dict[str, Any], transcribe: Callable[[], str], duration_s: float, respond: bool
    ) -> None:
        try:
            text = await asyncio.to_thread(transcribe)
        except Exception as exc:
            logger.exception("transcription failed")
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.failed",
                    "item_id": item["id"],
                    "content_index": 0,
                    "error": {"type": "server_error", "code": None, "message": str(exc), "param": None},
                }
            )
            text = ""
        else:
            sent = self._partial_sent.pop(item["id"], None)
            if sent is None and text:
                self._emit(
                    {
                        "type": "conversation.item.input_audio_transcription.delta",
                        "item_id": item["id"],
                        "content_index": 0,
                        "delta": text,
                    }
                )
            self._emit(
                {
                    "type": "conversation.item.input_audio_transcription.completed",
                    "item_id": item["id"],
                    "content_index": 0,
                    "transcript": text,
                    "usage": {"type": "duration", "seconds": round(duration_s, 3)},
                }
            )
        item["content"][0]["transcript"] = text
        if item["id"] in self.items:
            self._emit({"type": "conversation.item.done", "item": copy.deepcopy(item)})
        if respond and text.strip():
            if self._response is None:
                self._create_response({}, spoken_transcript=text)
            else:
                self._discard_speculation()
                logger.info("response already active; no automatic response for this turn")
        else:
            self._discard_speculation()

    # ---- client events --------------------------------------------------------------------------

    async def handle_client_event(self, event: Any) -> None:
        """Dispatch one client event; refusals become `error` events, never exceptions."""
        client_event_id = event.get("event_id") if isinstance(event, dict) else None
        if not isinstance(client_event_id, str):
            client_event_id = None
        try:
            if not isinstance(event, dict):
                raise InvalidClientEvent("Client events must be JSON objects.")
            kind = event.get("type")
            if not isinstance(kind, str):
                raise InvalidClientEvent(
                    "Missing required parameter: 'type'.", param="type", code="missing_required_parameter"
                )
            handler = self._handlers().get(kind)
            if handler is None:
                raise InvalidClientEvent(
                    f"Invalid value: '{kind}'. Supported values are: {', '.join(sorted(self._handlers()))}.",
                    param="type",
                    code="invalid_value",
                )
            await handler(event)
        except InvalidClientEvent as exc:
            self._emit(
                error_event(exc.message, code=exc.code, param=exc.param, client_event_id=client_event_id)
            )

    def handle_client_text(self, text: str) -> None:
        """A raw data-channel message: parse it, or answer with an `error` event."""
        try:
            event = json.loads(text)
        except ValueError:
            self._emit(error_event("The client event is not valid JSON.", code="invalid_json"))
            return
        self._spawn(self.handle_client_event(event))

    def _handlers(self) -> dict[str, Callable[[dict[str, Any]], Any]]:
        return {
            "session.update": self._session_update,
            "response.create": self._response_create,
            "response.cancel": self._response_cancel,
            "conversation.item.create": self._item_create,
            "conversation.item.truncate": self._item_truncate,
            "conversation.item.delete": self._item_delete,
            "conversation.item.retrieve": self._item_retrieve,
            "input_audio_buffer.append": self._buffer_append,
            "input_audio_buffer.commit": self._buffer_commit,
            "input_audio_buffer.clear": self._buffer_clear,
            "output_audio_buffer.clear": self._output_clear,
        }

    async def _session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            raise InvalidClientEvent(
                "Missing required parameter: 'session'.", param="session", code="missing_required_parameter"
            )
        old_td = self.turn_detection
        self.config = _validate_session(_deep_merge(self.config, update))
        if self.turn_detection != old_td or self._pipeline is None:
            self._rebuild_pipeline()
        self._emit({"type": "session.updated", "session": copy.deepcopy(self.config)})

    async def _response_create(self, event: dict[str, Any]) -> None:
        params = event.get("response") or {}
        if not isinstance(params, dict):
            raise InvalidClientEvent("Invalid type for 'response': expected an object.", param="response")
        if self._response is not None:
            raise InvalidClientEvent(
                f"Conversation already has an active response in progress: {self._response.id}. "
                "Wait until the response is finished before creating a new one.",
                code="conversation_already_has_active_response",
            )
        self._create_response(params)

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        response = self._response
        wanted = event.get("response_id")
        if response is None or (wanted and wanted != response.id):
            raise InvalidClientEvent(
                "Cancellation failed: no active response found.", code="response_cancel_not_active"
            )
        await self._cancel_response(response, "client_cancelled")

    async def _item_create(self, event: dict[str, Any]) -> None:
        raw = event.get("item")
        if not isinstance(raw, dict):
            raise InvalidClientEvent(
                "Missing required parameter: 'item'.", param="item", code="missing_required_parameter"
            )
        item = normalize_item(raw)
        previous = event.get("previous_item_id")
        if previous is not None and previous != "root" and previous not in self.items:
            raise InvalidClientEvent(
                f"Previous item with id '{previous}' not found.",
                param="previous_item_id",
                code="item_not_found",
            )
        if item["id"] in self.items:
            raise InvalidClientEvent(
                f"Item with id '{item['id']}' already exists.", param="item.id", code="duplicate_item_id"
            )
        facts = await self._measure_images(item)
        if item["id"] in self.items:  # created meanwhile by a concurrent event with the same id
            raise InvalidClientEvent(
                f"Item with id '{item['id']}' already exists.", param="item.id", code="duplicate_item_id"
            )
        if previous is not None and previous != "root" and previous not in self.items:
            raise InvalidClientEvent(
                f"Previous item with id '{previous}' not found.",
                param="previous_item_id",
                code="item_not_found",
            )
        if facts is not None:
            self._keep_image(item["id"], facts)
        self._add_item(
            item,
            previous_item_id=previous if previous is not None else self._last_item_id(),
            position=previous,
        )

    async def _measure_images(self, item: dict[str, Any]) -> ImageFacts | None:
        """Validate and decode the item's `input_image` parts (off the event loop); the last one's
        facts, or None if it has none. A bad image refuses the whole item, naming the part."""
        facts: ImageFacts | None = None
        for index, part in enumerate(item.get("content") or []):
            if part.get("type") != "input_image":
                continue
            param = f"item.content[{index}]"
            if part.get("detail") not in (None, "auto", "low", "high"):
                raise InvalidClientEvent(
                    f"Invalid value for '{param}.detail'.", param=f"{param}.detail", code="invalid_value"
                )
            try:
                media_type, data = decode_data_url(part.get("image_url"))
                facts = await asyncio.to_thread(image_facts, data, media_type=media_type)
            except ImageError as exc:
                raise InvalidClientEvent(
                    f"Invalid '{param}.image_url': {exc}.", param=f"{param}.image_url", code="invalid_image"
                ) from None
        return facts

    def _keep_image(self, item_id: str, facts: ImageFacts) -> None:
        """Remember an image's facts; drop the pixels of image items beyond `MAX_IMAGE_PAYLOADS`
        (a camera sends one a second: the conversation must not grow by megabytes a minute)."""
        self.image_facts[item_id] = facts
        while len(self.image_facts) > MAX_ITEMS:
            del self.image_facts[next(iter(self.image_facts))]
        kept = 0
        for old_id in reversed(self.image_facts):
            old = self.items.get(old_id)
            if old is None or old_id == item_id:
                continue
            kept += 1
            if kept >= MAX_IMAGE_PAYLOADS:
                for part in old.get("content") or []:
                    if part.get("type") == "input_image":
                        part["image_url"] = None

    async def _item_truncate(self, event: dict[str, Any]) -> None:
        item_id, audio_end_ms = event.get("item_id"), event.get("audio_end_ms")
        item = self.items.get(item_id) if isinstance(item_id, str) else None
        if item is None:
            raise InvalidClientEvent(
                f"Item with item_id '{item_id}' not found.", param="item_id", code="item_not_found"
            )
        if item.get("role") != "assistant" or item.get("type") != "message":
            raise InvalidClientEvent(
                "Only assistant messages can be truncated.", param="item_id", code="invalid_value"
            )
        if not isinstance(audio_end_ms, int) or audio_end_ms < 0:
            raise InvalidClientEvent(
                "Invalid value for 'audio_end_ms'.", param="audio_end_ms", code="invalid_value"
            )
        response = next((r for r in self._responses.values() if r.message is item), None)
        total_ms = response.samples * 1000 // OUTPUT_RATE if response else 0
        if audio_end_ms > total_ms:
            raise InvalidClientEvent(
                f"audio_end_ms {audio_end_ms} is longer than the item's audio ({total_ms} ms).",
                param="audio_end_ms",
                code="invalid_value",
            )
        self._truncate_item(item, response, audio_end_ms)
        self._emit(
            {
                "type": "conversation.item.truncated",
                "item_id": item["id"],
                "content_index": int(event.get("content_index") or 0),
                "audio_end_ms": audio_end_ms,
            }
        )

    async def _item_delete(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            raise InvalidClientEvent(
                f"Item with item_id '{item_id}' not found.", param="item_id", code="item_not_found"
            )
        del self.items[item_id]
        self._emit({"type": "conversation.item.deleted", "item_id": item_id})

    async def _item_retrieve(self, event: dict[str, Any]) -> None:
        item_id = event.get("item_id")
        if not isinstance(item_id, str) or item_id not in self.items:
            raise InvalidClientEvent(
                f"Item with item_id '{item_id}' not found.", param="item_id", code="item_not_found"
            )
        self._emit({"type": "conversation.item.retrieved", "item": copy.deepcopy(self.items[item_id])})

    async def _buffer_append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise InvalidClientEvent(
                "Missing required parameter: 'audio'.", param="audio", code="missing_required_parameter"
            )
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidClientEvent(
                "Invalid 'audio': not base64.", param="audio", code="invalid_value"
            ) from None
        pcm24 = np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype=np.int16)
        if len(pcm24):
            from realtime_local.media import Resampler

            if self._append_resampler is None:
                self._append_resampler = Resampler(APPEND_RATE, INPUT_SAMPLE_RATE)
            self.feed_input_audio(self._append_resampler.convert(pcm24))

    async def _buffer_commit(self, event: dict[str, Any]) -> None:
        if self._pipeline is not None:
            forced = self._pipeline.force_stop()
            if not forced:
                raise InvalidClientEvent(
                    "Error committing input audio buffer: buffer too small.",
                    code="input_audio_buffer_commit_empty",
                )
            return
        if self._manual_samples < INPUT_SAMPLE_RATE // 10:
            raise InvalidClientEvent(
                "Error committing input audio buffer: buffer too small. Expected at least 100ms of audio.",
                code="input_audio_buffer_commit_empty",
            )
        pcm = np.concatenate(self._manual_buffer)
        self._manual_buffer, self._manual_samples = [], 0
        speech = self.speech
        if speech is None:
            raise InvalidClientEvent("Speech is disabled on this engine.", code="speech_disabled")
        transcriber = speech.transcriber

        def transcribe() -> str:
            return transcriber.transcribe(pcm)

        self._commit_user_audio(new_item_id(), transcribe, len(pcm) / INPUT_SAMPLE_RATE, respond=False)

    async def _buffer_clear(self, event: dict[str, Any]) -> None:
        self._manual_buffer, self._manual_samples = [], 0
        if self._pipeline is not None:
            self._pipeline.reset()
        self._emit({"type": "input_audio_buffer.cleared"})

    async def _output_clear(self, event: dict[str, Any]) -> None:
        out = self.audio_out
        cleared = out.clear() if out is not None else None
        if cleared is not None:
            self._emit({"type": "output_audio_buffer.cleared", "response_id": cleared[0]})

    # ---- conversation ---------------------------------------------------------------------------

    def _last_item_id(self) -> str | None:
        return next(reversed(self.items), None) if self.items else None

    def _add_item(
        self,
        item: dict[str, Any],
        *,
        previous_item_id: str | None,
        done: bool = True,
        position: str | None = None,
    ) -> None:
        if position is None or position == self._last_item_id():
            self.items[item["id"]] = item
        else:
            ordered = list(self.items.items())
            index = 0 if position == "root" else [k for k, _ in ordered].index(position) + 1
            ordered.insert(index, (item["id"], item))
            self.items = dict(ordered)
        while len(self.items) > MAX_ITEMS:
            del self.items[next(iter(self.items))]
        self._emit(
            {
                "type": "conversation.item.added",
                "previous_item_id": previous_item_id,
                "item": copy.deepcopy(item),
            }
        )
        if done:
            self._emit(
                {
                    "type": "conversation.item.done",
                    "previous_item_id": previous_item_id,
                    "item": copy.deepcopy(item),
                }
            )

    # ---- responses ------------------------------------------------------------------------------

    def _create_response(self, params: dict[str, Any], *, spoken_transcript: str | None = None) -> _Response:
        """Start a response; `spoken_transcript`: it answers a spoken turn with this final transcript,
        and continues the reply prepared during the pause when that matches (`_Speculation`)."""
        response = self._build_response(params)
        if spoken_transcript is not None:
            response.speculation = self._claim_speculation(spoken_transcript, response)
        else:
            self._discard_speculation()
        self._response = response
        self._responses[response.id] = response
        while len(self._responses) > 8:
            del self._responses[next(iter(self._responses))]
        response.task = self._spawn(self._run_response(response))
        return response

    def _build_response(self, params: dict[str, Any], *, pending_user_text: str | None = None) -> _Response:
        """The response `params` would create now, without side effects. `pending_user_text`: as if
        the user's spoken item with this transcript had been added (what a speculation answers)."""
        config = self.config
        modalities = params.get("output_modalities") or config.get("output_modalities") or ["audio"]
        if "audio" in modalities and self.speech is None:
            modalities = ["text"]  # no synthesizer: answer in text rather than in silence
        output = (
            ((params.get("audio") or {}).get("output") or {}) if isinstance(params.get("audio"), dict) else {}
        )
        session_output = (config.get("audio") or {}).get("output") or {}
        in_conversation = params.get("conversation", "auto") != "none"
        if isinstance(params.get("input"), list):
            context_items: list[dict[str, Any]] = []
            for entry in params["input"]:
                if isinstance(entry, dict) and entry.get("type") == "item_reference":
                    ref = self.items.get(str(entry.get("id")))
                    if ref is not None:
                        context_items.append(ref)
                elif isinstance(entry, dict):
                    try:
                        context_items.append(normalize_item(entry))
                    except InvalidClientEvent:
                        continue
            context = conversation_turns(context_items, self.image_facts)
        else:
            items = list(self.items.values())
            if pending_user_text is not None:
                items.append(
                    {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_audio", "transcript": pending_user_text}],
                    }
                )
                items = items[-MAX_ITEMS:]  # as _add_item would trim
            context = conversation_turns(items, self.image_facts)
        tool_choice = params.get("tool_choice", config.get("tool_choice", "auto"))
        tools_config = params.get("tools", config.get("tools") or [])
        tools = [
            ToolSpec(
                name=t["name"], description=t.get("description") or "", parameters=t.get("parameters") or {}
            )
            for t in tools_config
            if isinstance(t, dict)
            and t.get("type", "function") == "function"
            and isinstance(t.get("name"), str)
        ]
        if tool_choice == "none":
            tools = []
        voice = output.get("voice") or session_output.get("voice") or "marin"
        response = _Response(
            id=new_response_id(),
            modalities=list(modalities),
            in_conversation=in_conversation,
            instructions=str(params.get("instructions") or config.get("instructions") or ""),
            tools=tools,
            context=context,
            voice=voice if isinstance(voice, str) else str(voice.get("id", "marin")),
            speed=float(session_output.get("speed") or 1.0),
            metadata=params.get("metadata") if isinstance(params.get("metadata"), dict) else None,
            max_output_tokens=params.get("max_output_tokens", config.get("max_output_tokens", "inf")),
        )
        return response

    # ---- speculative reply (prepared during the user's pause) ------------------------------------

    def _on_pause(self, transcript: str) -> None:
        """The speaker paused; `transcript` is what `finish()` returns if the turn ends here."""
        td = self.turn_detection or {}
        if (
            not SPECULATIVE_REPLY
            or self._closed
            or self._response is not None
            or not transcript.strip()
            or not td.get("create_response", True)
        ):
            return
        current = self._speculation
        if current is not None and current.transcript == transcript:
            return  # the same words: what is prepared still holds
        self._discard_speculation()
        plan = self._build_response({}, pending_user_text=transcript)
        spec = _Speculation(
            transcript=transcript,
            signature=plan.signature(),
            replies=self.responder.reply(
                instructions=plan.instructions, conversation=plan.context, tools=plan.tools
            ),
        )
        self._speculation = spec
        spec.task = self._spawn(self._speculate(spec, plan))

    async def _speculate(self, spec: _Speculation, plan: _Response) -> None:
        """The responder's first piece and that piece's first audio chunk, into `spec` (no events)."""
        try:
            piece = await asyncio.to_thread(next, spec.replies, None)
            spec.pieces.append(piece)
            out, speech = self.audio_out, self.speech
            if (
                plan.audio
                and out is not None
                and speech is not None
                and isinstance(piece, TextReply)
                and piece.text.strip()
            ):
                text = piece.text.strip()
                spec.speech_chunks = speech.synthesizer.synthesize(text, voice=plan.voice, speed=plan.speed)
                spec.first_chunk = await asyncio.to_thread(next, spec.speech_chunks, None)
                spec.speech_text = text
        except BaseException:
            spec.close()
            raise

    def _discard_speculation(self) -> None:
        spec, self._speculation = self._speculation, None
        if spec is None:
            return
        task = spec.task
        if task is not None and not task.done():
            task.cancel()
            task.add_done_callback(lambda _task: spec.close())  # its worker thread may still hold a generator
        else:
            spec.close()

    def _claim_speculation(self, transcript: str, response: _Response) -> _Speculation | None:
        spec, self._speculation = self._speculation, None
        if spec is None:
            self.speculation_outcomes.append("none")
            return None
        if spec.transcript == transcript and spec.signature == response.signature():
            self.speculation_outcomes.append("used")
            return spec
        self._speculation = spec
        self._discard_speculation()
        self.speculation_outcomes.append("discarded")
        return None

    async def _prepared(self, response: _Response) -> _Speculation | None:
        """The response's speculation once ready, or None if it failed (then the reply starts over)."""
        spec = response.speculation
        if spec is None or spec.task is None:
            return spec
        try:
            await asyncio.shield(spec.task)
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if spec.task.cancelled() and (current is None or not current.cancelling()):
                response.speculation = None  # only the speculation was cancelled: start over
                return None
            spec.task.cancel()  # the response was cancelled while waiting
            raise
        except Exception:
            logger.warning("speculative reply failed; answering without it", exc_info=True)
            response.speculation = None
            spec.close()
            return None
        return spec

    def _response_object(self, response: _Response) -> dict[str, Any]:
        session_output = (self.config.get("audio") or {}).get("output") or {}
        return {
            "id": response.id,
            "object": "realtime.response",
            "status": response.status,
            "status_details": response.status_details,
            "output": [copy.deepcopy(item) for item in response.output],
            "conversation_id": self.conversation_id if response.in_conversation else None,
            "output_modalities": response.modalities,
            "max_output_tokens": response.max_output_tokens,
            "audio": {
                "output": {
                    "format": session_output.get("format") or {"type": "audio/pcm", "rate": 24000},
                    "voice": response.voice,
                }
            },
            "usage": response.usage,
            "metadata": response.metadata,
        }

    async def _run_response(self, response: _Response) -> None:
        response.created_sent = True
        self._emit({"type": "response.created", "response": self._response_object(response)})
        try:
            await self._generate(response)
            response.status = "completed"
        except asyncio.CancelledError:
            response.status = "cancelled"
            if response.status_details is None:
                response.status_details = {"type": "cancelled", "reason": "client_cancelled"}
            out = self.audio_out
            if out is not None and out.current_response_id == response.id:
                out.end()  # what was already generated plays out (output_audio_buffer.clear stops it)
            self._finish_response(response)
            raise
        except Exception as exc:
            logger.exception("response %s failed", response.id)
            response.status = "failed"
            response.status_details = {
                "type": "failed",
                "error": {"type": "server_error", "code": "responder_failed", "message": str(exc)},
            }
        self._finish_response(response)

    async def _generate(self, response: _Response) -> None:
        spec = await self._prepared(response)
        ahead: list[Reply | None] = []
        if spec is not None:
            replies = spec.replies
            ahead = spec.pieces
        else:
            replies = self.responder.reply(
                instructions=response.instructions, conversation=response.context, tools=response.tools
            )
        try:
            while True:
                piece = ahead.pop(0) if ahead else await asyncio.to_thread(next, replies, None)
                if piece is None:
                    break
                if isinstance(piece, FunctionCallReply):
                    self._function_call(response, piece)
                    break
                if isinstance(piece, TextReply) and piece.text.strip():
                    await self._text_piece(response, piece.text.strip())
        finally:
            close = getattr(replies, "close", None)
            if callable(close):
                # a generator still running in its abandoned thread refuses to close
                with contextlib.suppress(ValueError, RuntimeError):
                    close()
            if spec is not None:
                spec.close()  # a prepared audio chunk the reply did not use
        if (
            response.message is not None
            and response.audio
            and self.audio_out is not None
            and response.samples
        ):
            self.audio_out.end()

    def _open_message(self, response: _Response) -> dict[str, Any]:
        if response.message is not None:
            return response.message
        part_type = "output_audio" if response.audio else "output_text"
        item: dict[str, Any] = {
            "id": new_item_id(),
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        response.message = item
        output_index = len(response.output)
        response.output.append(item)
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": output_index,
                "item": copy.deepcopy(item),
            }
        )
        if response.in_conversation:
            previous = self._last_item_id()
            self.items[item["id"]] = item
            self._emit(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": copy.deepcopy(item)}
            )
        part = {"type": "audio", "transcript": ""} if response.audio else {"type": "text", "text": ""}
        item["content"].append(
            {"type": part_type, "transcript": ""} if response.audio else {"type": part_type, "text": ""}
        )
        self._emit(
            {
                "type": "response.content_part.added",
                "response_id": response.id,
                "item_id": item["id"],
                "output_index": output_index,
                "content_index": 0,
                "part": part,
            }
        )
        return item

    async def _text_piece(self, response: _Response, text: str) -> None:
        item = self._open_message(response)
        output_index = response.output.index(item)
        delta = (" " if response.text else "") + text
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": output_index,
            "content_index": 0,
        }
        if not response.audio:
            response.text += delta
            item["content"][0]["text"] = response.text
            self._emit({"type": "response.output_text.delta", **ids, "delta": delta})
            return

        piece = _Piece(delta, response.samples, response.samples)

        def send_delta() -> None:
            response.pieces.append(piece)
            response.text += delta
            item["content"][0]["transcript"] = response.text
            self._emit({"type": "response.output_audio_transcript.delta", **ids, "delta": delta})

        out, speech = self.audio_out, self.speech
        if out is not None and speech is not None:
            await self._speak(response, out, speech, text, piece=piece, on_first_audio=send_delta)
        else:
            send_delta()
        piece.complete = True

    async def _speak(
        self,
        response: _Response,
        out: AudioOutput,
        speech: SpeechStack,
        text: str,
        *,
        piece: _Piece,
        on_first_audio: Callable[[], None],
    ) -> None:
        """Synthesize one piece into the track, paced to stay at most MAX_AUDIO_AHEAD_S ahead."""
        from realtime_local.media import Resampler

        synthesizer = speech.synthesizer
        spec = response.speculation
        ready: list[Pcm16 | None] = []
        if spec is not None and spec.speech_chunks is not None and spec.speech_text == text:
            chunks, ready = spec.speech_chunks, [spec.first_chunk]  # prepared during the pause
            spec.speech_text = None
        else:
            chunks = synthesizer.synthesize(text, voice=response.voice, speed=response.speed)
        resampler = Resampler(synthesizer.sample_rate, OUTPUT_RATE)
        first = True
        while True:
            chunk = ready.pop() if ready else await asyncio.to_thread(next, chunks, None)
            pcm = resampler.convert(chunk) if chunk is not None else resampler.flush()
            if len(pcm):
                await out.wait_room(MAX_AUDIO_AHEAD_S)
                if not response.audio_started:
                    response.audio_started = True
                    previous = out.clear()  # audio of an earlier response still queued
                    if previous is not None:
                        self._emit({"type": "output_audio_buffer.cleared", "response_id": previous[0]})
                    out.begin(response.id)
                out.push(pcm)
                response.samples += len(pcm)
                piece.end = response.samples
                if first:
                    first = False
                    # output_audio_buffer.started (first frame sent) precedes the transcript delta
                    await out.wait_started(0.5)
                    self._note_latency()
                    on_first_audio()
            if chunk is None:
                if first:
                    on_first_audio()  # a piece that synthesized to nothing still has its text
                return

    def _note_latency(self) -> None:
        if self._speech_stopped_at is None:
            return
        latency = (asyncio.get_running_loop().time() - self._speech_stopped_at) * 1000
        self.turn_latencies_ms.append(round(latency, 1))
        outcome = self.speculation_outcomes[-1] if self.speculation_outcomes else "none"
        logger.info(
            "turn latency %.0f ms (speech_stopped -> first audio frame; speculative reply: %s)",
            latency,
            outcome,
        )
        self._speech_stopped_at = None

    def _function_call(self, response: _Response, reply: FunctionCallReply) -> None:
        item: dict[str, Any] = {
            "id": new_item_id(),
            "object": "realtime.item",
            "type": "function_call",
            "status": "in_progress",
            "name": reply.name,
            "call_id": new_function_call_id(),
            "arguments": "",
        }
        output_index = len(response.output)
        response.output.append(item)
        self._emit(
            {
                "type": "response.output_item.added",
                "response_id": response.id,
                "output_index": output_index,
                "item": copy.deepcopy(item),
            }
        )
        previous = self._last_item_id()
        if response.in_conversation:
            self.items[item["id"]] = item
            self._emit(
                {"type": "conversation.item.added", "previous_item_id": previous, "item": copy.deepcopy(item)}
            )
        ids = {
            "response_id": response.id,
            "item_id": item["id"],
            "output_index": output_index,
            "call_id": item["call_id"],
        }
        self._emit({"type": "response.function_call_arguments.delta", **ids, "delta": reply.arguments})
        item["arguments"] = reply.arguments
        self._emit(
            {
                "type": "response.function_call_arguments.done",
                **ids,
                "name": reply.name,
                "arguments": reply.arguments,
            }
        )

    def _finish_response(self, response: _Response) -> None:
        """Close every open part and item, then `response.done` (any status)."""
        cancelled = response.status != "completed"
        for output_index, item in enumerate(response.output):
            ids = {"response_id": response.id, "item_id": item["id"], "output_index": output_index}
            if item["type"] == "message":
                if response.truncated_text is not None:
                    item["content"][0]["transcript"] = response.truncated_text
                content = item["content"][0]
                if response.audio:
                    transcript = content.get("transcript", "")
                    self._emit(
                        {
                            "type": "response.output_audio_transcript.done",
                            **ids,
                            "content_index": 0,
                            "transcript": transcript,
                        }
                    )
                    if not cancelled:
                        self._emit({"type": "response.output_audio.done", **ids, "content_index": 0})
                    part = {"type": "audio", "transcript": transcript}
                else:
                    self._emit(
                        {
                            "type": "response.output_text.done",
                            **ids,
                            "content_index": 0,
                            "text": content.get("text", ""),
                        }
                    )
                    part = {"type": "text", "text": content.get("text", "")}
                self._emit({"type": "response.content_part.done", **ids, "content_index": 0, "part": part})
            item["status"] = "incomplete" if cancelled else "completed"
            self._emit(
                {
                    "type": "response.output_item.done",
                    "response_id": response.id,
                    "output_index": output_index,
                    "item": copy.deepcopy(item),
                }
            )
            if response.in_conversation and item["id"] in self.items:
                self._emit({"type": "conversation.item.done", "item": copy.deepcopy(item)})
        input_text = " ".join(t.text or t.arguments for t in response.context) + response.instructions
        audio_tokens = response.samples * 10 // OUTPUT_RATE  # ~ 10 audio tokens a second
        text_tokens = _tokens(response.text) + sum(_tokens(i.get("arguments", "")) for i in response.output)
        input_tokens = _tokens(input_text)
        response.usage = {
            "total_tokens": input_tokens + text_tokens + audio_tokens,
            "input_tokens": input_tokens,
            "output_tokens": text_tokens + audio_tokens,
            "input_token_details": {"text_tokens": input_tokens, "audio_tokens": 0, "cached_tokens": 0},
            "output_token_details": {"text_tokens": text_tokens, "audio_tokens": audio_tokens},
        }
        response.done_sent = True
        if response.status == "completed":
            response.status_details = None
        self._emit({"type": "response.done", "response": self._response_object(response)})
        self._emit(
            {
                "type": "rate_limits.updated",
                "rate_limits": [
                    {"name": "requests", "limit": 10_000, "remaining": 9_999, "reset_seconds": 0.006},
                    {
                        "name": "tokens",
                        "limit": 10_000_000,
                        "remaining": 10_000_000 - response.usage["total_tokens"],
                        "reset_seconds": 0.0,
                    },
                ],
            }
        )
        if self._response is response:
            self._response = None

    async def _cancel_response(self, response: _Response, reason: str) -> None:
        if response.task is None or response.task.done():
            return
        response.status_details = {"type": "cancelled", "reason": reason}
        response.task.cancel()
        await asyncio.gather(response.task, return_exceptions=True)
        self._finish_unstarted(response)

    def _finish_unstarted(self, response: _Response) -> None:
        """A response cancelled before its task ever ran still gets created/done (and frees the slot)."""
        if response.done_sent:
            return
        if not response.created_sent:
            response.created_sent = True
            self._emit({"type": "response.created", "response": self._response_object(response)})
        response.status = "cancelled"
        self._finish_response(response)

    def _truncate_item(self, item: dict[str, Any], response: _Response | None, audio_end_ms: int) -> None:
        if response is None:
            return
        played = audio_end_ms * OUTPUT_RATE // 1000
        text = _truncate_words(response.pieces, played)
        response.truncated_text = text
        if item.get("content"):
            item["content"][0]["transcript"] = text

    async def _interrupt(self, reason: str) -> None:
        """Barge-in: stop playback, cancel the response, truncate the assistant item at what was played."""
        response = self._response
        out = self.audio_out
        if response is not None and response.task is not None:
            response.status_details = {"type": "cancelled", "reason": reason}
            response.task.cancel()  # before clearing: the task cannot push more audio after this line
        cleared = out.clear() if out is not None else None
        truncated: tuple[dict[str, Any], int] | None = None
        if cleared is not None:
            response_id, played_ms = cleared
            self._emit({"type": "output_audio_buffer.cleared", "response_id": response_id})
            played_response = self._responses.get(response_id)
            if played_response is not None and played_response.message is not None:
                item = played_response.message
                self._truncate_item(item, played_response, played_ms)
                truncated = (item, played_ms)
        if response is not None and response.task is not None:
            await asyncio.gather(response.task, return_exceptions=True)
            self._finish_unstarted(response)
        if truncated is not None:
            item, played_ms = truncated
            self._emit(
                {
                    "type": "conversation.item.truncated",
                    "item_id": item["id"],
                    "content_index": 0,
                    "audio_end_ms": played_ms,
                }
            )

    # ---- output track callbacks -----------------------------------------------------------------

    def on_output_started(self, response_id: str) -> None:
        self._emit({"type": "output_audio_buffer.started", "response_id": response_id})

    def on_output_stopped(self, response_id: str) -> None:
        self._emit({"type": "output_audio_buffer.stopped", "response_id": response_id})


def _default_responder() -> Responder:
    """The rule responder (no models), for engines started without speech."""
    from realtime_local.speech.responder import RuleResponder

    return RuleResponder()
