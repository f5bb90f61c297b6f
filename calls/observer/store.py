"""The observer's database writes and reads (synchronous ORM; the observer calls them through
`database_sync_to_async`, one bounded call per batch).

The observer is the only writer of a call's events and transcript; these functions are its writes,
each one transaction, so what the live console is told about has been committed first. Given the
observer's `LeaseToken`, each transaction starts with `lease.fence` (calls.observer.lease): a worker
that lost the call's lease to another one writes nothing (`LeaseLost`, the transaction rolls back).
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import transaction
from django.db.models import Max

from calls.models import Call, Event, TranscriptTurn
from calls.observer.lease import LeaseToken, fence
from calls.observer.transcript import Turn
from voiceagent.monitoring.metrics import record_stored_events


@dataclass(frozen=True)
class PendingEvent:
    """A received (or synthesized) event waiting to be written."""

    sequence: int
    type: str
    payload: dict[str, Any]
    received_at: dt.datetime


@dataclass(frozen=True)
class CallSnapshot:
    """What the observer needs to know about its call when it starts."""

    id: uuid.UUID
    provider_call_id: str | None
    status: str
    mode: str
    answered_at: dt.datetime | None
    max_call_duration_s: int
    usage: dict[str, Any]
    last_sequence: int
    expected_session: dict[str, Any]


@dataclass(frozen=True)
class CallState:
    """The status fields the live console shows."""

    status: str
    end_reason: str
    error: str


def load_call(call_id: uuid.UUID) -> CallSnapshot | None:
    """The call with its agent and the last stored sequence; None if it does not exist."""
    from calls.services.session_config import build_session_config

    call = Call.objects.select_related("agent").filter(pk=call_id).first()
    if call is None:
        return None
    last = Event.objects.filter(call_id=call_id).aggregate(last=Max("sequence"))["last"] or 0
    return CallSnapshot(
        id=call.id,
        provider_call_id=call.provider_call_id,
        status=call.status,
        mode=call.mode,
        answered_at=call.answered_at,
        max_call_duration_s=call.agent.max_call_duration,
        usage=dict(call.usage or {}),
        last_sequence=last,
        expected_session=build_session_config(call.agent, mode=call.mode),
    )


def live_call_ids(*, limit: int = 1000) -> list[uuid.UUID]:
    """Calls that may still be live upstream (connecting or active, with a provider id)."""
    return list(
        Call.objects.filter(
            status__in=[Call.Status.CONNECTING, Call.Status.ACTIVE], provider_call_id__isnull=False
        )
        .order_by("created_at")
        .values_list("id", flat=True)[:limit]
    )


#: Stored event types that name a conversation message item whose transcript turn they concern.
_ITEM_EVENT_TYPES = (
    "conversation.item.added",
    "conversation.item.done",
    "conversation.item.created",
    "response.output_item.added",
    "response.output_item.done",
    "conversation.item.input_audio_transcription.completed",
    "response.output_audio_transcript.done",
    "response.output_text.done",
)


@dataclass(frozen=True)
class ItemsState:
    """What the stored events and turns say about a call's conversation items (repair after a
    takeover: an item referenced by an event but without a finished turn may have lost its events)."""

    known: set[str]
    unfinished: list[str]


def items_state(call_id: uuid.UUID) -> ItemsState:
    referenced: list[str] = []
    events = Event.objects.filter(call_id=call_id, type__in=_ITEM_EVENT_TYPES)
    for payload in events.values_list("payload", flat=True).iterator():
        item = payload.get("item") if isinstance(payload, dict) else None
        if isinstance(item, dict) and item.get("type") in (None, "message"):
            if isinstance(item.get("id"), str):
                referenced.append(item["id"])
        elif isinstance(payload, dict) and isinstance(payload.get("item_id"), str):
            referenced.append(payload["item_id"])
    turns = TranscriptTurn.objects.filter(call_id=call_id)
    finished = set(turns.filter(ended_at__isnull=False).values_list("item_id", flat=True))
    all_turns = set(turns.values_list("item_id", flat=True))
    unfinished = list(dict.fromkeys(item for item in referenced if item not in finished))
    return ItemsState(known=set(referenced) | all_turns, unfinished=unfinished)


def load_call_model(call_id: uuid.UUID) -> Call | None:
    return Call.objects.select_related("agent", "user").filter(pk=call_id).first()


def call_state(call_id: uuid.UUID) -> CallState | None:
    row = Call.objects.filter(pk=call_id).values("status", "end_reason", "error").first()
    return None if row is None else CallState(row["status"], row["end_reason"], row["error"])


@dataclass(frozen=True)
class BatchResult:
    """What changed in the call row with the batch (for status messages)."""

    activated_at: dt.datetime | None


def write_batch(
    *,
    call_id: uuid.UUID,
    events: list[PendingEvent],
    turns: list[Turn],
    usage: dict[str, Any] | None,
    activate_at: dt.datetime | None,
    tampered: bool,
    lease: LeaseToken | None = None,
) -> BatchResult:
    """Store events, transcript turns and call fields in one transaction.

    `activate_at` moves a connecting call to active (answered then); a call in any other status is
    left alone, so a late batch never revives a call that ended. Turns are upserted on (call, item
    id), so a batch replayed (or a turn repaired after a takeover) never duplicates one.
    """
    activated: dt.datetime | None = None
    with transaction.atomic():
        if lease is not None:
            fence(lease)
        if events:
            Event.objects.bulk_create(
                [
                    Event(
                        call_id=call_id,
                        sequence=event.sequence,
                        type=event.type,
                        payload=event.payload,
                        received_at=event.received_at,
                    )
                    for event in events
                ]
            )
        for turn in turns:
            TranscriptTurn.objects.update_or_create(
                call_id=call_id,
                item_id=turn.item_id,
                defaults={
                    "role": turn.role,
                    "text": turn.text,
                    "started_at": turn.started_at,
                    "ended_at": turn.ended_at,
                    "interrupted": turn.interrupted,
                },
            )
        fields: dict[str, Any] = {}
        if usage is not None:
            fields["usage"] = usage
        if tampered:
            fields["session_tampered"] = True
        if fields:
            Call.objects.filter(pk=call_id).update(**fields)
        if activate_at is not None:
            changed = Call.objects.filter(pk=call_id, status=Call.Status.CONNECTING).update(
                status=Call.Status.ACTIVE, answered_at=activate_at
            )
            if changed:
                activated = activate_at
    record_stored_events(events)  # committed: voiceagent_events_stored_total, observer lag
    return BatchResult(activated_at=activated)


def finish_call(
    *,
    call_id: uuid.UUID,
    status: str,
    end_reason: str,
    error: str,
    at: dt.datetime,
    lease: LeaseToken | None = None,
) -> CallState:
    """Mark the call ended (or failed) unless it already is final; return its state. A call our
    hang-up service already ended keeps its status and reason."""
    with transaction.atomic():
        if lease is not None:
            fence(lease)
        call = Call.objects.select_for_update().filter(pk=call_id).first()
        if call is None:
            return CallState(status, end_reason, error)
        if call.is_final:
            if call.ended_at is None:
                call.ended_at = at
                call.save(update_fields=["ended_at"])
            return CallState(call.status, call.end_reason, call.error)
        call.status = status
        call.ended_at = at
        call.end_reason = end_reason[:100]
        call.error = error
        call.save(update_fields=["status", "ended_at", "end_reason", "error"])
        return CallState(call.status, call.end_reason, call.error)
