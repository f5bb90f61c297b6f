"""One observer per live call across processes: a lease row per call, claimed in short transactions.

Why a table and not advisory locks: a session-level advisory lock belongs to a database connection,
and behind a transaction-mode pooler (PgBouncer, RDS Proxy) consecutive statements of one worker run on
different server connections, so the lock is held by whoever happens to use that connection next, or
silently released. A row with an owner, an epoch and an expiry lives in the data itself: it survives
poolers, restarts of the database and of the workers, and can be read by anyone (the admin, tests).

- **Claim**: a worker takes rows whose `expires_at` has passed (or that it creates for live calls
  that have none) with `SELECT … FOR UPDATE SKIP LOCKED` on PostgreSQL, so concurrent claimers never
  wait on each other nor take the same row, then raises `epoch` with a compare-and-set UPDATE (which
  is what makes SQLite, without row locks, safe as well: its writes are serialized). The claim of
  one new call (`observe.start`, once per call) is one `INSERT … ON CONFLICT DO UPDATE … WHERE
  expired` on PostgreSQL: the row lock serializes claimers of that call.
- **Heartbeat**: the holder extends `expires_at` by `OBSERVER_LEASE_TTL_S` every
  `OBSERVER_LEASE_HEARTBEAT_S`; a worker that dies stops doing so and its calls are claimed by the
  next scan of another worker once the TTL has passed.
- **Fencing**: every observer write begins its transaction with `fence()`: an UPDATE of the lease
  row matching this owner *and* epoch. Zero rows means someone claimed the call since: `LeaseLost`
  rolls the whole transaction back. The UPDATE also locks the row until commit, so a claim can never
  slip between the check and the writes. The worker's merged batch writes (calls.observer.store
  `write_batches`) do the same for all their calls in one statement, and write nothing for a call
  whose lease is lost (only that call's observer gets `LeaseLost`).

Expiry compares the application's clock with times other workers wrote: workers' clocks must agree
(NTP) to well under the TTL.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from calls.models import Call, ObserverLease

#: Statuses of a call that may still be live upstream (what a worker must observe).
LIVE_STATUSES = (Call.Status.CONNECTING, Call.Status.ACTIVE)
#: The `expires_at` of a lease nobody holds (a new row, or one released on shutdown).
RELEASED_AT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


class LeaseLost(Exception):
    """This worker no longer holds the call's lease: another one took the call over."""


@dataclass(frozen=True)
class LeaseToken:
    """Proof of a claim: the call, who claimed it and the epoch the claim set."""

    call_id: uuid.UUID
    owner: str
    epoch: int


def new_owner_id() -> str:
    """A worker instance's id: its name (OBSERVER_WORKER_NAME, e.g. a Procfile's), host and pid for
    people reading the table, a random part for unicity."""
    name = os.environ.get("OBSERVER_WORKER_NAME", "")[:30]
    base = f"{socket.gethostname()[:30]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    return f"{name}@{base}" if name else base


def ttl() -> dt.timedelta:
    return dt.timedelta(seconds=float(settings.OBSERVER_LEASE_TTL_S))


def _ensure_rows(call_ids: list[uuid.UUID] | None = None) -> None:
    """Create the (expired) lease rows of live calls that have none yet."""
    calls = Call.objects.filter(
        status__in=LIVE_STATUSES, provider_call_id__isnull=False, observer_lease__isnull=True
    )
    if call_ids is not None:
        calls = calls.filter(pk__in=call_ids)
    missing = list(calls.values_list("id", flat=True)[:1000])
    if missing:
        ObserverLease.objects.bulk_create(
            [ObserverLease(call_id=call_id, expires_at=RELEASED_AT) for call_id in missing],
            ignore_conflicts=True,
        )


def _claim(owner: str, *, call_ids: list[uuid.UUID] | None, limit: int) -> list[LeaseToken]:
    _ensure_rows(call_ids)
    now = timezone.now()
    claimed: list[LeaseToken] = []
    with transaction.atomic():
        candidates = ObserverLease.objects.select_for_update(skip_locked=True, of=("self",)).filter(
            expires_at__lte=now, call__status__in=LIVE_STATUSES, call__provider_call_id__isnull=False
        )
        if call_ids is not None:
            candidates = candidates.filter(call_id__in=call_ids)
        for call_id, epoch in candidates.order_by("expires_at").values_list("call_id", "epoch")[:limit]:
            # Compare-and-set: under PostgreSQL the row is locked already; under SQLite this is the lock.
            won = ObserverLease.objects.filter(call_id=call_id, epoch=epoch, expires_at__lte=now).update(
                owner=owner, epoch=epoch + 1, heartbeat_at=now, expires_at=now + ttl()
            )
            if won:
                claimed.append(LeaseToken(call_id=call_id, owner=owner, epoch=epoch + 1))
    return claimed


def claim_expired(owner: str, *, limit: int = 100) -> list[LeaseToken]:
    """Claim live calls whose lease is missing or expired (at most `limit`); the tokens won."""
    return _claim(owner, call_ids=None, limit=limit)


def claim(call_id: uuid.UUID, owner: str) -> LeaseToken | None:
    """Claim one call (an `observe.start`); None if another worker holds a live lease on it, or the
    call is not live."""
    if connection.vendor == "postgresql":
        return _claim_one_postgresql(call_id, owner)
    won = _claim(owner, call_ids=[call_id], limit=1)
    return won[0] if won else None


def _claim_one_postgresql(call_id: uuid.UUID, owner: str) -> LeaseToken | None:
    """`claim` in one statement: every new call is claimed once, and the scan's five statements
    (find rows to create, create them, lock, compare-and-set, commit) were about a sixth of the
    embedded web process's CPU per call (py-spy during bench/setup_overhead.py, bench/README.md).

    The row is created claimed (epoch 1) for a live call that has none, or an expired one is taken
    over (epoch + 1); a live lease is left as it is and nothing is returned. Two claimers of one
    call serialize on the row (the second waits for the first's commit, then finds the lease live),
    and a fenced write in flight holds the row until it commits, after which its lease is live too.
    """
    lease_table, call_table = ObserverLease._meta.db_table, Call._meta.db_table
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {lease_table} AS lease (call_id, owner, epoch, heartbeat_at, expires_at)
            SELECT id, %s, 1, %s, %s FROM {call_table}
            WHERE id = %s AND status = ANY(%s) AND provider_call_id IS NOT NULL
            ON CONFLICT (call_id) DO UPDATE
                SET owner = EXCLUDED.owner, epoch = lease.epoch + 1,
                    heartbeat_at = EXCLUDED.heartbeat_at, expires_at = EXCLUDED.expires_at
                WHERE lease.expires_at <= %s
            RETURNING epoch
            """,
            [owner, now, now + ttl(), call_id, [str(status) for status in LIVE_STATUSES], now],
        )
        row = cursor.fetchone()
    return LeaseToken(call_id=call_id, owner=owner, epoch=int(row[0])) if row else None


def fence(token: LeaseToken) -> None:
    """Inside the caller's transaction: check (and extend) the lease, or raise `LeaseLost`.

    Must run inside `transaction.atomic()`, first: the row stays locked until the caller commits.
    """
    if not connection.in_atomic_block:
        raise RuntimeError("fence() must run inside the transaction of the write it guards")
    now = timezone.now()
    held = ObserverLease.objects.filter(call_id=token.call_id, owner=token.owner, epoch=token.epoch).update(
        heartbeat_at=now, expires_at=now + ttl()
    )
    if not held:
        raise LeaseLost(f"call {token.call_id}: lease epoch {token.epoch} of {token.owner} was taken over")


def renew(tokens: list[LeaseToken]) -> set[uuid.UUID]:
    """Heartbeat: extend every lease still held; return the calls whose lease was lost."""
    lost: set[uuid.UUID] = set()
    if not tokens:
        return lost
    now = timezone.now()
    with transaction.atomic():
        # In call id order, as the merged writes lock them (calls.observer.store.write_batches): two
        # transactions that lock several lease rows in one order never deadlock.
        for token in sorted(tokens, key=lambda token: token.call_id):
            held = ObserverLease.objects.filter(
                call_id=token.call_id, owner=token.owner, epoch=token.epoch
            ).update(heartbeat_at=now, expires_at=now + ttl())
            if not held:
                lost.add(token.call_id)
    return lost


def release(tokens: list[LeaseToken]) -> int:
    """Give leases up at once (shutdown, call over): another worker may claim them at its next scan.
    Only leases still held are touched; returns how many were."""
    released = 0
    for token in tokens:
        released += ObserverLease.objects.filter(
            call_id=token.call_id, owner=token.owner, epoch=token.epoch
        ).update(expires_at=RELEASED_AT)
    return released


def holder(call_id: uuid.UUID) -> ObserverLease | None:
    """The call's lease row (tests, admin)."""
    return ObserverLease.objects.filter(call_id=call_id).first()
