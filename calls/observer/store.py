"""The observer's database writes and reads (synchronous; run on a thread by the observer).

The observer is the only writer of a call's events and transcript; these functions are its writes,
each one transaction, so what the live console is told about has been committed first. Given the
observer's `LeaseToken`, each transaction is fenced (calls.observer.lease): a worker that lost the
call's lease to another one writes nothing about that call.

`write_batches` stores the pending batches of *many* calls in one transaction (the worker's merged
writer, calls.observer.writers): the leases of all of them are checked (and extended) by one
statement, and only the calls whose lease is still ours get rows; the others learn they were fenced.
On PostgreSQL the events go in with one COPY and the turns with one upsert, so the cost of a flush
tick is a few round trips whatever the number of calls (bench/observer_throughput.py: one
transaction per call per tick was what limited a worker to ~80 live calls).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction
from django.db.models import Exists, OuterRef, Subquery
from django.utils import timezone

from calls.models import Call, Event, McpServer, ObserverLease, TranscriptTurn
from calls.observer.lease import LeaseLost, LeaseToken, fence, ttl
from calls.observer.transcript import Turn
from voiceagent.monitoring.metrics import record_stored_events


@dataclass(frozen=True, slots=True)
class PendingEvent:
    """A received (or synthesized) event waiting to be written.

    `raw` is the message's JSON text when it is exactly `payload` (an event stored as received):
    PostgreSQL is then given that text instead of a second serialization of the parsed payload."""

    sequence: int
    type: str
    payload: dict[str, Any]
    received_at: dt.datetime
    raw: str | None = None

    def payload_json(self) -> str:
        return self.raw if self.raw is not None else json.dumps(self.payload)


@dataclass(frozen=True)
class CallSnapshot:
    """What the observer needs to know about its call when it starts."""

    #: The row as loaded, with its agent and the agent's enabled MCP servers (for the toolbox).
    call: Call
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
    """The call with its agent (and the agent's enabled MCP servers, which its toolbox opens), and
    the last stored sequence; None if it does not exist. One query (two when the agent offers MCP
    servers) in one thread hand-off: this is the observer's start, ~1.5 ms more of a web process's
    CPU per call when it took three hand-offs and four queries (bench/setup_overhead.py)."""
    from calls.services.session_config import build_session_config
    from calls.tools.mcp import ENABLED_SERVERS_ATTRIBUTE, enabled_server_rows

    last_sequence = Event.objects.filter(call=OuterRef("pk")).order_by("-sequence").values("sequence")[:1]
    offers_mcp = McpServer.objects.filter(agents=OuterRef("agent_id"), enabled=True)
    found = (
        Call.objects.select_related("agent")
        .annotate(last_sequence=Subquery(last_sequence), offers_mcp=Exists(offers_mcp))
        .filter(pk=call_id)
        .first()
    )
    if found is None:
        return None
    call: Any = found  # with the annotations
    servers = list(enabled_server_rows(call.agent_id)) if call.offers_mcp else []
    setattr(call.agent, ENABLED_SERVERS_ATTRIBUTE, servers)
    last = call.last_sequence or 0
    return CallSnapshot(
        call=call,
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


@dataclass
class CallBatch:
    """One call's pending writes: what one flush of its observer hands over."""

    call_id: uuid.UUID
    events: list[PendingEvent]
    turns: list[Turn]
    usage: dict[str, Any] | None = None
    activate_at: dt.datetime | None = None
    tampered: bool = False
    #: The observer's lease (None: unfenced, e.g. a test driving one observer by hand).
    lease: LeaseToken | None = None


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
    """Store one call's events, transcript turns and call fields in one transaction (`LeaseLost`
    if the lease was taken over: nothing written). See `write_batches`."""
    batch = CallBatch(call_id, events, turns, usage, activate_at, tampered, lease)
    (result,) = write_batches([batch])
    if isinstance(result, LeaseLost):
        raise result
    return result


def write_batches(batches: list[CallBatch]) -> list[BatchResult | LeaseLost]:
    """Store the batches of several calls in ONE transaction; per batch, its result or `LeaseLost`
    (its call's lease was taken over: none of its rows were written; the other calls' were).

    - Fencing: one statement checks and extends every lease named (owner and epoch must match) and
      locks those rows, in call id order, until commit: a claimer cannot slip in between, and two
      transactions that lock several leases never wait on each other in a cycle.
    - Events are inserted in the batches' order (per call: ascending, contiguous sequences, as the
      observer numbered them); the unique (call, sequence) constraint refuses a gap-filling replay.
    - Turns are upserted on (call, item id), so a batch replayed (or a turn repaired after a
      takeover) never duplicates one.
    - `activate_at` moves a connecting call to active (answered then); a call in any other status is
      left alone, so a late batch never revives a call that ended.
    """
    results: list[BatchResult | LeaseLost] = []
    with transaction.atomic():
        lost = _fence_all([batch.lease for batch in batches if batch.lease is not None])
        kept: list[CallBatch] = []
        for batch in batches:
            if batch.lease is not None and batch.lease in lost:
                results.append(
                    LeaseLost(f"call {batch.call_id}: lease epoch {batch.lease.epoch} was taken over")
                )
            else:
                kept.append(batch)
                results.append(BatchResult(activated_at=None))
        _insert_events(kept)
        _upsert_turns(kept)
        activated = _update_calls(kept)
    for index, result in enumerate(results):
        if isinstance(result, BatchResult) and batches[index].call_id in activated:
            results[index] = BatchResult(activated_at=batches[index].activate_at)
    for batch in kept:  # committed: voiceagent_events_stored_total, observer lag
        record_stored_events(batch.events)
    return results


_FENCE_SQL = f"""
WITH wanted AS (
    SELECT * FROM unnest(%s::uuid[], %s::text[], %s::bigint[]) AS w(call_id, owner, epoch)
), held AS (
    SELECT lease.call_id FROM {ObserverLease._meta.db_table} lease
    JOIN wanted ON wanted.call_id = lease.call_id AND wanted.owner = lease.owner
        AND wanted.epoch = lease.epoch
    ORDER BY lease.call_id
    FOR UPDATE OF lease
)
UPDATE {ObserverLease._meta.db_table} lease SET heartbeat_at = %s, expires_at = %s
FROM held WHERE lease.call_id = held.call_id
RETURNING lease.call_id
"""


def _fence_all(tokens: list[LeaseToken]) -> set[LeaseToken]:
    """Inside the write's transaction: extend every lease in `tokens` still held; the lost ones."""
    if not tokens:
        return set()
    now = timezone.now()
    if connection.vendor != "postgresql":
        # One writer at a time (SQLite): no lock order to keep; `fence` per lease.
        lost: set[LeaseToken] = set()
        for token in tokens:
            try:
                fence(token)
            except LeaseLost:
                lost.add(token)
        return lost
    with connection.cursor() as cursor:
        cursor.execute(
            _FENCE_SQL,
            [
                [token.call_id for token in tokens],
                [token.owner for token in tokens],
                [token.epoch for token in tokens],
                now,
                now + ttl(),
            ],
        )
        held = {row[0] for row in cursor.fetchall()}
    return {token for token in tokens if token.call_id not in held}


def _insert_events(batches: list[CallBatch]) -> None:
    if not any(batch.events for batch in batches):
        return
    if connection.vendor == "postgresql":
        # COPY: one statement for every row of the tick, the payloads sent as the JSON text received.
        table = Event._meta.db_table
        with connection.cursor() as cursor, connection.wrap_database_errors:
            copy_sql = f"COPY {table} (call_id, sequence, type, payload, received_at) FROM STDIN"
            with cursor.cursor.copy(copy_sql) as copy:
                for batch in batches:
                    call_id = batch.call_id
                    for event in batch.events:
                        copy.write_row(
                            (call_id, event.sequence, event.type, event.payload_json(), event.received_at)
                        )
        return
    Event.objects.bulk_create(
        [
            Event(
                call_id=batch.call_id,
                sequence=event.sequence,
                type=event.type,
                payload=event.payload,
                received_at=event.received_at,
            )
            for batch in batches
            for event in batch.events
        ]
    )


def _upsert_turns(batches: list[CallBatch]) -> None:
    latest: dict[tuple[uuid.UUID, str], Turn] = {}
    for batch in batches:
        for turn in batch.turns:
            latest[(batch.call_id, turn.item_id)] = turn  # one row per key in one upsert statement
    if not latest:
        return
    TranscriptTurn.objects.bulk_create(
        [
            TranscriptTurn(
                call_id=call_id,
                item_id=turn.item_id,
                role=turn.role,
                text=turn.text,
                started_at=turn.started_at,
                ended_at=turn.ended_at,
                interrupted=turn.interrupted,
            )
            for (call_id, _), turn in latest.items()
        ],
        update_conflicts=True,
        unique_fields=["call", "item_id"],
        update_fields=["role", "text", "started_at", "ended_at", "interrupted"],
    )


def _update_calls(batches: list[CallBatch]) -> set[uuid.UUID]:
    """Usage, tampering and activation (rare: a few per call); the calls activated now."""
    activated: set[uuid.UUID] = set()
    for batch in sorted(batches, key=lambda batch: batch.call_id):  # row locks in one order
        fields: dict[str, Any] = {}
        if batch.usage is not None:
            fields["usage"] = batch.usage
        if batch.tampered:
            fields["session_tampered"] = True
        if fields:
            Call.objects.filter(pk=batch.call_id).update(**fields)
        if batch.activate_at is not None:
            changed = Call.objects.filter(pk=batch.call_id, status=Call.Status.CONNECTING).update(
                status=Call.Status.ACTIVE, answered_at=batch.activate_at
            )
            if changed:
                activated.add(batch.call_id)
    return activated


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
