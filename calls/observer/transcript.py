"""Transcript assembly and usage accounting from a call's server events (pure: no I/O).

`TranscriptAssembler.apply` takes parsed events in arrival order and keeps, per conversation item,
what the transcript row should say; the observer writes the rows it marks dirty at each flush. The
order of events is not assumed beyond what the API guarantees: input transcription deltas may come
before the user item's `conversation.item.added`, and a barge-in gives `output_audio_buffer.cleared`,
then `response.done` (cancelled), then `conversation.item.truncated`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field, replace
from typing import Any

from calls.observer.events import (
    InputTranscriptionCompleted,
    ItemEvent,
    ItemTruncated,
    OutputAudioTranscriptDone,
    OutputTextDone,
    ResponseDone,
    ServerEvent,
    SpeechEvent,
    TextDeltaEvent,
)

USER = "user"
ASSISTANT = "assistant"
#: Items whose start time we remember before their turn exists; old ones are forgotten beyond this.
MAX_PENDING_ITEMS = 500


@dataclass
class Turn:
    """What one `TranscriptTurn` row should hold."""

    item_id: str
    role: str
    text: str
    started_at: dt.datetime
    ended_at: dt.datetime | None = None
    interrupted: bool = False


@dataclass
class Effects:
    """What the observer must do because of an event, beyond storing it."""

    #: Client events to send on the sideband (e.g. retrieve a truncated item to learn what was heard).
    client_events: list[dict[str, Any]] = field(default_factory=list)


def add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """`total` plus `usage`, summing numbers leaf by leaf (nested token details included)."""
    result = dict(total)
    for key, value in usage.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, int | float):
            current = result.get(key, 0)
            result[key] = (current if isinstance(current, int | float) else 0) + value
        elif isinstance(value, dict):
            current = result.get(key)
            result[key] = add_usage(current if isinstance(current, dict) else {}, value)
    return result


class TranscriptAssembler:
    """Per-call transcript state; `take_dirty()` hands the turns changed since the last call."""

    def __init__(self, *, usage: dict[str, Any] | None = None) -> None:
        self.turns: dict[str, Turn] = {}
        self.usage: dict[str, Any] = dict(usage or {})
        self.usage_dirty = False
        self._dirty: set[str] = set()
        self._first_seen: dict[str, dt.datetime] = {}
        self._partials: dict[str, list[str]] = {}
        #: Items retrieved to repair the transcript after a resumption (their answer makes the turn).
        self._repairs: set[str] = set()

    # ---- reading ----------------------------------------------------------------------------------

    def take_dirty(self) -> list[Turn]:
        """Copies of the turns changed since the last call, in the order they started."""
        dirty = [replace(self.turns[item_id]) for item_id in self._dirty if item_id in self.turns]
        self._dirty.clear()
        return sorted(dirty, key=lambda turn: turn.started_at)

    def restore_dirty(self, turns: list[Turn]) -> None:
        """Mark `turns` dirty again (their write failed and must be retried)."""
        self._dirty.update(turn.item_id for turn in turns)

    def expect_retrieved(self, item_id: str) -> None:
        """`item_id` is being retrieved to repair the transcript: its `conversation.item.retrieved`
        sets (or completes) the item's turn, whatever turn we hold."""
        if len(self._repairs) < MAX_PENDING_ITEMS:
            self._repairs.add(item_id)

    # ---- events -----------------------------------------------------------------------------------

    def apply(self, event: ServerEvent, at: dt.datetime) -> Effects:
        effects = Effects()
        if isinstance(event, TextDeltaEvent):  # first: most events are deltas
            self._seen(event.item_id, at)
            if event.type != "conversation.item.input_audio_transcription.delta":
                pieces = self._partials.setdefault(event.item_id, [])
                if len(pieces) < 10_000:
                    pieces.append(event.delta)
        elif isinstance(event, SpeechEvent):
            if event.item_id and event.type == "input_audio_buffer.speech_started":
                self._seen(event.item_id, at)
        elif isinstance(event, ItemEvent):
            self._item_seen(event, at)
        elif isinstance(event, InputTranscriptionCompleted):
            self._set_text(event.item_id, USER, event.transcript, at, ended=True)
        elif isinstance(event, OutputAudioTranscriptDone):
            self._set_text(event.item_id, ASSISTANT, event.transcript, at, ended=True)
            self._partials.pop(event.item_id, None)
        elif isinstance(event, OutputTextDone):
            self._set_text(event.item_id, ASSISTANT, event.text, at, ended=True)
            self._partials.pop(event.item_id, None)
        elif isinstance(event, ResponseDone):
            self._response_done(event, at)
        elif isinstance(event, ItemTruncated):
            turn = self.turns.get(event.item_id)
            if turn is None:
                partial = self._partial_text(event.item_id)
                turn = self._set_text(event.item_id, ASSISTANT, partial, at, ended=True)
            turn.interrupted = True
            self._dirty.add(turn.item_id)
            # The event says how much audio was heard, not which words: ask for the item, whose
            # transcript the API cuts to what was played.
            effects.client_events.append({"type": "conversation.item.retrieve", "item_id": event.item_id})
        return effects

    def _item_seen(self, event: ItemEvent, at: dt.datetime) -> None:
        item = event.item
        if not item.id or item.type not in (None, "message"):
            return
        self._seen(item.id, at)
        text = item.text()
        existing = self.turns.get(item.id)
        if event.type == "conversation.item.retrieved" and item.id in self._repairs:
            # A repair after a resumption: the API's copy of an item whose events we may have missed.
            self._repairs.discard(item.id)
            if text is not None and item.role in (USER, ASSISTANT):
                repaired = self._set_text(item.id, item.role, text, at, ended=True)
                repaired.interrupted = repaired.interrupted or item.status == "incomplete"
            return
        if event.type == "conversation.item.retrieved":
            # The answer to our retrieve after a truncation: the words the user actually heard.
            if existing is not None and existing.interrupted and text is not None and text != existing.text:
                existing.text = text
                self._dirty.add(item.id)
            return
        if item.role == USER and text is not None and existing is None:
            # Typed input (input_text), or an audio item that already carries its transcript.
            self._set_text(item.id, USER, text, at, ended=True)

    def _response_done(self, event: ResponseDone, at: dt.datetime) -> None:
        response = event.response
        if response.usage:
            self.usage = add_usage(self.usage, response.usage)
            self.usage["responses"] = int(self.usage.get("responses", 0)) + 1
            self.usage_dirty = True
        for item in response.output or []:
            if not item.id or item.type not in (None, "message") or item.role not in (None, ASSISTANT):
                continue
            turn = self.turns.get(item.id)
            if turn is None:
                # The transcript's done event was missed (or never sent): use what we have.
                text = item.text() or self._partial_text(item.id)
                if not text and response.status != "cancelled":
                    continue
                turn = self._set_text(item.id, ASSISTANT, text, at, ended=True)
            if response.status == "cancelled":
                turn.interrupted = True
                self._dirty.add(item.id)
            self._partials.pop(item.id, None)

    # ---- helpers ----------------------------------------------------------------------------------

    def _seen(self, item_id: str, at: dt.datetime) -> None:
        if item_id in self.turns or item_id in self._first_seen:
            return
        if len(self._first_seen) >= MAX_PENDING_ITEMS:
            self._first_seen.pop(next(iter(self._first_seen)))
        self._first_seen[item_id] = at

    def _partial_text(self, item_id: str) -> str:
        return "".join(self._partials.get(item_id, []))

    def _set_text(self, item_id: str, role: str, text: str, at: dt.datetime, *, ended: bool) -> Turn:
        turn = self.turns.get(item_id)
        if turn is None:
            started = self._first_seen.pop(item_id, at)
            turn = Turn(item_id=item_id, role=role, text=text, started_at=started)
            self.turns[item_id] = turn
        else:
            turn.text = text
        if ended:
            turn.ended_at = at
        self._dirty.add(item_id)
        return turn
