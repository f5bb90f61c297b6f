"""The worker's merged writer (calls.observer.writers): many calls' batches in one transaction.

Runs on the test database (SQLite by default: one writer thread; PostgreSQL under
`DATABASE_URL=postgres://…`: the COPY, the one-statement fencing and several writer slots). What is
pinned: batches of several calls share a transaction; a call whose lease was taken over gets nothing
written while the other calls' rows are; one refused batch does not hold back the others; each call's
sequences stay contiguous and in order; a worker that stops writes what its observers received.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import IntegrityError
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper
from websockets.asyncio.server import Server, ServerConnection, serve

from calls.models import Call, Event, ObserverLease, TranscriptTurn
from calls.observer import lease as leases
from calls.observer import store
from calls.observer.lease import LeaseLost, LeaseToken
from calls.observer.transcript import Turn
from calls.observer.worker import ObserverPool
from calls.observer.writers import MergedWriter
from tests.factories import AgentProfileFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def live_calls(count: int) -> list[Call]:
    agent = AgentProfileFactory.create()
    return [
        Call.objects.create(
            agent=agent, status=Call.Status.ACTIVE, provider_call_id=f"rtc_{uuid.uuid4().hex}"
        )
        for _ in range(count)
    ]


def events(first: int, count: int) -> list[store.PendingEvent]:
    """`count` events from sequence `first`, half of them with their JSON text as received."""
    made = []
    for sequence in range(first, first + count):
        payload = {"type": "test.event", "n": sequence}
        raw = json.dumps(payload) if sequence % 2 else None
        made.append(store.PendingEvent(sequence, "test.event", payload, timezone.now(), raw=raw))
    return made


def batch(
    call: Call, first: int, count: int, *, lease: LeaseToken | None = None, **fields: Any
) -> store.CallBatch:
    return store.CallBatch(call_id=call.id, events=events(first, count), turns=[], lease=lease, **fields)


def stored_sequences(call: Call) -> list[int]:
    """The call's stored sequences in insertion order (row ids)."""
    return list(Event.objects.filter(call=call).order_by("id").values_list("sequence", flat=True))


def take_over(call: Call) -> LeaseToken:
    """Another worker claims `call` (its lease expired meanwhile)."""
    ObserverLease.objects.filter(call=call).update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    (token,) = leases.claim_expired("worker-b")
    return token


async def test_batches_of_several_calls_are_written_in_one_transaction() -> None:
    calls = await sync_to_async(live_calls)(3)
    writer = MergedWriter(slots=1)
    at = timezone.now()
    turn = Turn(item_id="item_1", role="user", text="hello", started_at=at, ended_at=at)
    batches = [
        store.CallBatch(call_id=calls[0].id, events=events(1, 5), turns=[turn], usage={"total_tokens": 7}),
        batch(calls[1], 1, 3),
        batch(calls[2], 1, 1, tampered=True),
    ]

    results = await asyncio.gather(*(writer.write(b) for b in batches))

    assert all(isinstance(result, store.BatchResult) for result in results)
    assert (writer.transactions, writer.batches) == (1, 3)
    assert [await sync_to_async(stored_sequences)(call) for call in calls] == [
        [1, 2, 3, 4, 5],
        [1, 2, 3],
        [1],
    ]
    first = await Call.objects.aget(pk=calls[0].id)
    assert first.usage == {"total_tokens": 7}
    assert (await Call.objects.aget(pk=calls[2].id)).session_tampered
    texts = [t.text async for t in TranscriptTurn.objects.filter(call_id=calls[0].id)]
    assert texts == ["hello"]
    # Payloads read back the same whether they were given as text or as a dict.
    payloads = [e.payload async for e in Event.objects.filter(call_id=calls[0].id).order_by("sequence")]
    assert payloads == [{"type": "test.event", "n": n} for n in range(1, 6)]


async def test_a_call_whose_lease_was_taken_gets_nothing_written_and_the_other_calls_do() -> None:
    calls = await sync_to_async(live_calls)(3)
    tokens = {t.call_id: t for t in await sync_to_async(leases.claim_expired)("worker-a")}
    assert len(tokens) == 3
    victim = calls[1]
    await sync_to_async(take_over)(victim)
    at = timezone.now()
    turn = Turn(item_id="item_x", role="assistant", text="stale", started_at=at)
    writer = MergedWriter(slots=1)

    outcomes = await asyncio.gather(
        *(
            writer.write(
                store.CallBatch(
                    call_id=call.id,
                    events=events(1, 4),
                    turns=[turn],
                    usage={"total_tokens": 1},
                    lease=tokens[call.id],
                )
            )
            for call in calls
        ),
        return_exceptions=True,
    )

    assert writer.transactions == 1
    assert isinstance(outcomes[1], LeaseLost)
    assert isinstance(outcomes[0], store.BatchResult) and isinstance(outcomes[2], store.BatchResult)
    assert await sync_to_async(stored_sequences)(victim) == []
    assert not await TranscriptTurn.objects.filter(call=victim).aexists()
    assert (await Call.objects.aget(pk=victim.id)).usage in ({}, None)
    for call in (calls[0], calls[2]):
        assert await sync_to_async(stored_sequences)(call) == [1, 2, 3, 4]
        assert await TranscriptTurn.objects.filter(call=call).aexists()
    # The write extended the leases it found held, and left the new owner's alone.
    lease = await ObserverLease.objects.aget(call=victim)
    assert lease.owner == "worker-b"


async def test_one_refused_batch_does_not_hold_back_the_other_calls() -> None:
    calls = await sync_to_async(live_calls)(3)
    await sync_to_async(store.write_batches)([batch(calls[1], 1, 2)])
    writer = MergedWriter(slots=1)

    outcomes = await asyncio.gather(
        writer.write(batch(calls[0], 1, 3)),
        writer.write(batch(calls[1], 2, 2)),  # sequence 2 is stored already: the constraint refuses it
        writer.write(batch(calls[2], 1, 3)),
        return_exceptions=True,
    )

    assert isinstance(outcomes[1], IntegrityError)
    assert await sync_to_async(stored_sequences)(calls[0]) == [1, 2, 3]
    assert await sync_to_async(stored_sequences)(calls[1]) == [1, 2]
    assert await sync_to_async(stored_sequences)(calls[2]) == [1, 2, 3]


async def test_each_calls_sequences_stay_contiguous_and_in_order() -> None:
    calls = await sync_to_async(live_calls)(5)
    tokens = {t.call_id: t for t in await sync_to_async(leases.claim_expired)("worker-a")}
    writer = MergedWriter(slots=2)

    async def flushes(call: Call) -> None:
        """One observer: a batch at a time, each after the previous one's result (its flush lock)."""
        for round_ in range(20):
            await writer.write(batch(call, 1 + 3 * round_, 3, lease=tokens[call.id]))
            await asyncio.sleep(0)

    await asyncio.gather(*(flushes(call) for call in calls))

    for call in calls:
        assert await sync_to_async(stored_sequences)(call) == list(range(1, 61))
    assert writer.batches == 100
    assert writer.transactions < writer.batches  # merged, not one per batch


# ---- a worker that stops writes what it received -------------------------------------------------

EVENTS_PER_CALL = 30


class QuietSideband:
    """Sends each connection EVENTS_PER_CALL transcript deltas (no turn boundary), then stays open."""

    def __init__(self) -> None:
        self.sent = 0

    async def handler(self, connection: ServerConnection) -> None:
        for n in range(EVENTS_PER_CALL):
            delta = {"type": "response.output_audio_transcript.delta", "item_id": "item_a", "delta": f"w{n} "}
            await connection.send(json.dumps({**delta, "event_id": f"event_{n}"}))
            self.sent += 1
        await connection.wait_closed()


@pytest.fixture
async def quiet(settings: SettingsWrapper, channel_layer: Any) -> AsyncIterator[QuietSideband]:
    sideband = QuietSideband()
    server: Server = await serve(sideband.handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings.REALTIME_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.REALTIME_API_KEY = "sk-quiet"
    yield sideband
    server.close()
    await server.wait_closed()


async def test_stopping_the_worker_writes_what_its_observers_received(quiet: QuietSideband) -> None:
    calls = await sync_to_async(live_calls)(4)
    worker = ObserverPool()
    tokens = await sync_to_async(leases.claim_expired)(worker.owner)
    # No flush timer within the test: only the stop can write the deltas (not turn boundaries).
    observers = [worker.start(token.call_id, lease=token, flush_interval=3600) for token in tokens]

    async with asyncio.timeout(20):
        while any(observer._next_sequence <= EVENTS_PER_CALL for observer in observers):  # noqa: ASYNC110
            await asyncio.sleep(0.02)
    assert not await Event.objects.filter(call__in=calls).aexists()

    await worker.aclose()

    for call in calls:
        assert await sync_to_async(stored_sequences)(call) == list(range(1, EVENTS_PER_CALL + 1))
    # Its leases were released for another worker to take at once.
    assert not await ObserverLease.objects.filter(call__in=calls, expires_at__gt=timezone.now()).aexists()
