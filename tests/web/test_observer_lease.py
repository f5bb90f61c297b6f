"""One observer per live call across processes: the lease (calls.observer.lease) on the test database.

Claims, expiry, release and fencing run against the real database (SQLite by default, PostgreSQL under
`make test-postgres`); the race test needs PostgreSQL's row locks and skips elsewhere. The observer
tests use two `ObserverPool`s in this process, each with its own owner id, as two workers would: a
paused worker (its heartbeat stopped) loses the call to the other and cannot write when it wakes up.
The multi-process SIGKILL/SIGSTOP takeover is in tests/scale/test_observer_takeover.py.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.db import connection, connections, transaction
from django.utils import timezone
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call, Event, ObserverLease, TranscriptTurn
from calls.observer import lease as leases
from calls.observer import store
from calls.observer.lease import LeaseLost
from calls.observer.observer import CallObserver, Outcome
from calls.observer.transcript import Turn
from calls.observer.worker import ObserverPool
from tests.engine.conftest import RunningEngine
from tests.factories import AgentProfileFactory
from tests.web.conftest import LiveCall
from tests.web.test_observer_calls import (
    MakeLiveCall,
    eventually,
    exchange,
    stored,
    until_stored,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

postgresql_only = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="row locks (FOR UPDATE SKIP LOCKED) need PostgreSQL"
)


def live_call(status: str = Call.Status.ACTIVE, provider: str | None = "auto") -> Call:
    agent = AgentProfileFactory.create()
    return Call.objects.create(
        agent=agent,
        status=status,
        provider_call_id=f"rtc_{uuid.uuid4().hex}" if provider == "auto" else provider,
    )


def expire(call_id: uuid.UUID) -> None:
    """What the passing of the TTL does to a lease nobody renews."""
    ObserverLease.objects.filter(call_id=call_id).update(expires_at=timezone.now() - dt.timedelta(seconds=1))


def event(sequence: int) -> store.PendingEvent:
    return store.PendingEvent(
        sequence=sequence, type="test.event", payload={"type": "test.event"}, received_at=timezone.now()
    )


def write(call: Call, token: leases.LeaseToken, sequence: int) -> None:
    store.write_batch(
        call_id=call.id,
        events=[event(sequence)],
        turns=[],
        usage={"total_tokens": sequence},
        activate_at=None,
        tampered=False,
        lease=token,
    )


# ---- claims, expiry, release ----------------------------------------------------------------------


def test_a_live_call_is_claimed_by_one_worker_until_its_lease_expires() -> None:
    call = live_call()
    live_call(status=Call.Status.ENDED)  # over: nobody observes it
    live_call(provider=None)  # no provider id yet: nothing to attach to

    first = leases.claim_expired("worker-a")
    assert [(t.call_id, t.owner, t.epoch) for t in first] == [(call.id, "worker-a", 1)]
    assert leases.claim_expired("worker-b") == []
    assert leases.claim(call.id, "worker-b") is None  # observe.start on another worker: ignored

    expire(call.id)
    second = leases.claim_expired("worker-b")
    assert [(t.call_id, t.owner, t.epoch) for t in second] == [(call.id, "worker-b", 2)]
    lease = ObserverLease.objects.get(call=call)
    assert (lease.owner, lease.epoch) == ("worker-b", 2) and lease.expires_at > timezone.now()


def test_a_renewed_lease_is_kept_and_a_released_one_is_claimable_at_once() -> None:
    call = live_call()
    (token,) = leases.claim_expired("worker-a")
    assert leases.renew([token]) == set()
    assert leases.claim_expired("worker-b") == []

    assert leases.release([token]) == 1
    (taken,) = leases.claim_expired("worker-b")
    assert taken.epoch == 2
    # The old holder's heartbeat now reports the loss, and its release touches nothing.
    assert leases.renew([token]) == {call.id}
    assert leases.release([token]) == 0


def test_a_call_claimed_through_observe_start_gets_a_lease_row() -> None:
    call = live_call(status=Call.Status.CONNECTING)
    token = leases.claim(call.id, "worker-a")
    assert token is not None and token.epoch == 1
    assert leases.claim(call.id, "worker-a") is None  # held (by us): the pool knows it observes it


def test_observe_start_takes_over_an_expired_lease_and_never_a_call_that_is_not_live() -> None:
    call = live_call()
    (first,) = leases.claim_expired("worker-a")
    expire(call.id)

    taken = leases.claim(call.id, "worker-b")

    assert taken == leases.LeaseToken(call_id=call.id, owner="worker-b", epoch=first.epoch + 1)
    assert leases.renew([first]) == {call.id}
    for not_live in (live_call(status=Call.Status.ENDED), live_call(provider=None)):
        assert leases.claim(not_live.id, "worker-a") is None
        assert not ObserverLease.objects.filter(call=not_live).exists()


# ---- fencing ----------------------------------------------------------------------------------------


def test_a_stale_owner_cannot_write_events_turns_or_the_call() -> None:
    call = live_call()
    (old,) = leases.claim_expired("worker-a")
    write(call, old, 1)
    expire(call.id)
    (new,) = leases.claim_expired("worker-b")

    with pytest.raises(LeaseLost):
        store.write_batch(
            call_id=call.id,
            events=[event(2)],
            turns=[Turn(item_id="item_1", role="user", text="stale", started_at=timezone.now())],
            usage={"total_tokens": 99},
            activate_at=None,
            tampered=True,
            lease=old,
        )
    with pytest.raises(LeaseLost):
        store.finish_call(
            call_id=call.id,
            status=Call.Status.ENDED,
            end_reason="stale",
            error="",
            at=timezone.now(),
            lease=old,
        )
    # Nothing of the refused transactions stayed.
    call.refresh_from_db()
    assert [e.sequence for e in Event.objects.filter(call=call)] == [1]
    assert not TranscriptTurn.objects.filter(call=call).exists()
    assert call.usage == {"total_tokens": 1} and not call.session_tampered and not call.is_final

    write(call, new, 2)  # the new owner continues the numbering
    assert [e.sequence for e in Event.objects.filter(call=call).order_by("sequence")] == [1, 2]


def test_fence_refuses_to_run_outside_the_writes_transaction() -> None:
    call = live_call()
    (token,) = leases.claim_expired("worker-a")
    with pytest.raises(RuntimeError):
        leases.fence(token)
    with transaction.atomic():
        leases.fence(token)
    assert call.pk


def test_a_replayed_turn_is_upserted_on_call_and_item() -> None:
    call = live_call()
    (token,) = leases.claim_expired("worker-a")
    at = timezone.now()
    for text in ("Hello", "Hello there"):
        store.write_batch(
            call_id=call.id,
            events=[],
            turns=[Turn(item_id="item_9", role="assistant", text=text, started_at=at, ended_at=at)],
            usage=None,
            activate_at=None,
            tampered=False,
            lease=token,
        )
    assert list(TranscriptTurn.objects.filter(call=call).values_list("text", flat=True)) == ["Hello there"]


# ---- the race: many claimers, each on its own connection ----------------------------------------


def race(claimer: Callable[[int], None], threads: int = 8) -> None:
    """Run `claimer(index)` on `threads` threads at once (each its own connection), released together."""
    barrier = threading.Barrier(threads)

    def run(index: int) -> None:
        try:
            barrier.wait(10)
            claimer(index)
        finally:
            connections.close_all()

    started = [threading.Thread(target=run, args=(index,)) for index in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join(60)


@postgresql_only
def test_racing_claimers_never_share_a_call() -> None:
    """Eight threads (eight connections) claim 20 calls at once, twice (the second time after every
    lease expired): each call is won exactly once per round, with consecutive epochs."""
    calls = [live_call() for _ in range(20)]
    wins: list[tuple[uuid.UUID, int, str]] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        for _ in range(5):
            for token in leases.claim_expired(f"worker-{index}", limit=7):
                with lock:
                    wins.append((token.call_id, token.epoch, token.owner))

    race(claimer)
    assert Counter(call_id for call_id, _, _ in wins) == Counter({call.id: 1 for call in calls})
    assert {epoch for _, epoch, _ in wins} == {1}
    ObserverLease.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))
    race(claimer)
    assert Counter(call_id for call_id, _, _ in wins) == Counter({call.id: 2 for call in calls})
    assert sorted(epoch for _, epoch, _ in wins) == [1] * 20 + [2] * 20
    for call in calls:  # the table names the last winner
        last = [(epoch, owner) for call_id, epoch, owner in wins if call_id == call.id][-1]
        lease = ObserverLease.objects.get(call=call)
        assert (lease.epoch, lease.owner) == last


@postgresql_only
def test_racing_observe_starts_of_one_call_have_one_winner() -> None:
    """Eight threads (eight connections) claim the same new call at once, then the same expired one."""
    call = live_call()
    wins: list[leases.LeaseToken] = []
    lock = threading.Lock()

    def claimer(index: int) -> None:
        token = leases.claim(call.id, f"worker-{index}")
        if token is not None:
            with lock:
                wins.append(token)

    race(claimer)
    expire(call.id)
    race(claimer)
    assert [token.epoch for token in wins] == [1, 2]
    lease = ObserverLease.objects.get(call=call)
    assert (lease.owner, lease.epoch) == (wins[-1].owner, 2)


@postgresql_only
def test_a_claim_waits_for_no_write_and_a_write_in_flight_keeps_its_lease() -> None:
    """A fenced write holds the lease row until it commits: a concurrent claim skips the row (SKIP
    LOCKED) instead of taking the call under the writer's feet."""
    call = live_call()
    (token,) = leases.claim_expired("worker-a")
    expire(call.id)
    claimed: list[list[leases.LeaseToken]] = []
    in_write = threading.Event()
    release = threading.Event()

    def writer() -> None:
        try:
            with transaction.atomic():
                leases.fence(token)  # extends the lease and locks its row
                in_write.set()
                release.wait(10)
        finally:
            connections.close_all()

    def claimer() -> None:
        try:
            in_write.wait(10)
            # The row is locked by the write: skipped, whatever its expiry said before.
            claimed.append(leases.claim_expired("worker-b"))
        finally:
            release.set()
            connections.close_all()

    threads = [threading.Thread(target=writer), threading.Thread(target=claimer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert claimed == [[]]
    lease = ObserverLease.objects.get(call=call)
    assert (lease.owner, lease.epoch) == ("worker-a", 1) and lease.expires_at > timezone.now()


# ---- observers: a paused worker loses its call and cannot write when it wakes up ----------------


async def claim_and_observe(pool: ObserverPool, live: LiveCall) -> CallObserver:
    observer = await pool.claim_and_start(live.call.id)
    assert observer is not None

    async def connected() -> bool:
        return observer.connected.is_set()

    await eventually(connected)
    return observer


async def test_a_paused_worker_is_fenced_and_the_new_owner_stores_everything_once(
    local_engine: RunningEngine, make_live_call: MakeLiveCall, settings: SettingsWrapper
) -> None:
    settings.OBSERVER_LEASE_HEARTBEAT_S = 0.2
    pool_a, pool_b = ObserverPool(), ObserverPool()
    live = await make_live_call(local_engine)
    await live.accept()
    observer_a = await claim_and_observe(pool_a, live)
    first = await exchange(local_engine, live, "First question.")
    await until_stored(live, [e["event_id"] for e in first])

    # Worker A pauses (a GC pause, SIGSTOP): its heartbeat stops and its lease runs out.
    assert pool_a._heartbeat is not None
    pool_a._heartbeat.cancel()
    await sync_to_async(expire)(live.call.id)
    assert await pool_b.scan_once() == 1
    observer_b = pool_b.get(live.call.id)
    assert observer_b is not None and observer_b.lease is not None and observer_b.lease.epoch == 2
    await eventually(lambda: _true(observer_b.connected.is_set()))

    # A wakes up with a sideband still open: it receives the next events too, but cannot store them.
    second = await exchange(local_engine, live, "Second question.")
    await asyncio.wait_for(observer_a.finished.wait(), 10)
    assert observer_a.outcome is Outcome.FENCED and observer_a.fenced
    events = await until_stored(live, [e["event_id"] for e in second])
    ids = [e.payload.get("event_id") for e in events]
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    assert len(ids) == len(set(ids))  # nothing stored twice
    lease = await ObserverLease.objects.aget(call_id=live.call.id)
    assert (lease.owner, lease.epoch) == (pool_b.owner, 2)

    await pool_b.aclose()
    await pool_a.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_shutdown_releases_the_leases_and_another_worker_takes_over_at_once(
    local_engine: RunningEngine, make_live_call: MakeLiveCall
) -> None:
    pool_a, pool_b = ObserverPool(), ObserverPool()
    live = await make_live_call(local_engine)
    await live.accept()
    await claim_and_observe(pool_a, live)
    first = await exchange(local_engine, live, "Before the restart.")
    await until_stored(live, [e["event_id"] for e in first])

    await pool_a.aclose()  # SIGTERM: flush, release
    lease = await ObserverLease.objects.aget(call_id=live.call.id)
    assert lease.expires_at <= timezone.now()
    call = await Call.objects.aget(pk=live.call.pk)
    assert not call.is_final  # the call goes on upstream
    assert await pool_b.scan_once() == 1
    observer_b = pool_b.get(live.call.id)
    assert observer_b is not None
    await eventually(lambda: _true(observer_b.connected.is_set()))
    second = await exchange(local_engine, live, "After the restart.")
    events = await until_stored(live, [e["event_id"] for e in second])
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    await pool_b.aclose()


def words(item: dict[str, Any]) -> str:
    """An item's text as the transcript keeps it (text parts or audio transcripts)."""
    parts = [part.get("text") or part.get("transcript") for part in item.get("content") or []]
    return " ".join(part for part in parts if part)


async def test_the_new_owner_retrieves_items_it_never_saw(
    local_engine: RunningEngine, make_live_call: MakeLiveCall
) -> None:
    """Events emitted while no observer listened are not replayed by the API: after a takeover the
    new owner retrieves the items that stored events name without a finished turn, and those that
    new events name as `previous_item_id` without its having seen them, and stores their turns."""
    from tests.factories import add_events

    live = await make_live_call(local_engine)
    await live.accept()
    await Call.objects.filter(pk=live.call.pk).aupdate(status=Call.Status.ACTIVE)
    await sync_to_async(add_events)(live.call, 2)
    # The dead owner stored the first answer's creation but not its transcript…
    half = await exchange(local_engine, live, "First, half stored.")
    half_item = next(e for e in half if e["type"] == "response.output_item.added")
    await Event.objects.acreate(call=live.call, sequence=3, type=half_item["type"], payload=half_item)
    # …and nobody saw the second exchange at all.
    missed = await exchange(local_engine, live, "Second, never seen.")
    done = [e for e in (*half, *missed) if e["type"] == "response.done"]
    answers = {e["response"]["output"][0]["id"]: words(e["response"]["output"][0]) for e in done}
    assert len(answers) == 2 and all(answers.values())

    pool = ObserverPool()
    assert await pool.scan_once() == 1
    observer = pool.get(live.call.id)
    assert observer is not None
    await eventually(lambda: _true(observer.connected.is_set()))
    after = await exchange(local_engine, live, "Are you there now?")
    await until_stored(live, [e["event_id"] for e in after])

    async def repaired() -> dict[str, str] | None:
        turns = {t.item_id: t.text async for t in TranscriptTurn.objects.filter(call=live.call)}
        return turns if set(answers) <= set(turns) else None

    turns = await eventually(repaired)
    assert {item_id: turns[item_id] for item_id in answers} == answers
    events = await stored(live.call)
    retrieved = [e.payload["item"]["id"] for e in events if e.type == "conversation.item.retrieved"]
    assert sorted(retrieved) == sorted(answers)
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    await pool.aclose()
