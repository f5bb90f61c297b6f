"""The `call-observer` worker: a Channels consumer that runs one `CallObserver` task per live call.

Run it with ``manage.py observe`` (production: as many worker processes as needed, on
channels_redis and PostgreSQL), or embedded in ``manage.py serve`` (`run_embedded_worker`, same loop
as daphne). ``manage.py runworker call-observer`` still works but only answers messages (no scan).
Messages (see `calls.observer.dispatch`): ``observe.start`` claims the call's lease and observes it
unless another worker holds a live lease on it; ``observe.stop`` asks its observer to flush and detach.

Leases (calls.observer.lease): the pool of each process has an owner id; it renews the leases of its
observers every `OBSERVER_LEASE_HEARTBEAT_S`, and its scanner claims every `OBSERVER_LEASE_SCAN_S`
the live calls whose lease expired (their worker died) or that have none, and observes them. An
observer whose lease was taken over is fenced (stops without writing). On shutdown (SIGTERM) the
worker stops scanning and taking messages, lets its observers flush, and releases their leases, so
that another worker takes the calls over at its next scan instead of after the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import get_channel_layer
from channels.worker import Worker
from django.conf import settings
from django.db import DatabaseError, close_old_connections
from redis.exceptions import RedisError

from calls.observer import lease as leases
from calls.observer.dispatch import OBSERVER_CHANNEL
from calls.observer.lease import LeaseToken
from calls.observer.observer import CallObserver
from calls.observer.writers import single_writer_database

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Allocations (net) between two young-generation collections (CPython's default: 700).
GC_YOUNG_THRESHOLD = int(os.environ.get("OBSERVER_GC_YOUNG_THRESHOLD", "10000"))
_gc_tuned = False


class ObserverPool:
    """The observers of this process, at most one per call (and, with leases, one per call across
    all processes)."""

    def __init__(self) -> None:
        self._observers: dict[uuid.UUID, CallObserver] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[Any]] = {}
        #: This worker instance's lease owner id.
        self.owner = leases.new_owner_id()
        #: Set while shutting down: no new call is taken.
        self.closing = False
        self._heartbeat: asyncio.Task[None] | None = None
        self._scan_wake: asyncio.Event | None = None

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._observers

    def __len__(self) -> int:
        return len(self._observers)

    def get(self, call_id: uuid.UUID) -> CallObserver | None:
        return self._observers.get(call_id)

    def task(self, call_id: uuid.UUID) -> asyncio.Task[Any] | None:
        return self._tasks.get(call_id)

    def start(self, call_id: uuid.UUID, **options: Any) -> CallObserver:
        """Observe `call_id` on the running loop; the existing observer if one runs already.
        Pass `lease=` (a token this pool claimed) to fence the observer's writes."""
        existing = self._observers.get(call_id)
        if existing is not None:
            return existing
        options.setdefault("user_agent", f"voiceagent-observer/{self.owner}")
        observer = CallObserver(call_id, **options)
        task = asyncio.create_task(observer.run(), name=f"observer-{call_id}")
        self._observers[call_id] = observer
        self._tasks[call_id] = task

        def forget(done: asyncio.Task[Any]) -> None:
            if self._tasks.get(call_id) is done:
                del self._tasks[call_id]
                del self._observers[call_id]
            if not done.cancelled() and done.exception() is not None:
                logger.error("call %s: observer crashed", call_id, exc_info=done.exception())

        task.add_done_callback(forget)
        if observer.lease is not None:
            self._ensure_heartbeat()
        return observer

    # ---- leases -----------------------------------------------------------------------------------

    def tokens(self) -> list[LeaseToken]:
        return [o.lease for o in self._observers.values() if o.lease is not None and not o.fenced]

    async def claim_and_start(self, call_id: uuid.UUID) -> CallObserver | None:
        """`observe.start`: claim the call's lease and observe it; None if another worker holds it
        (or the call is not live, or we are shutting down)."""
        if self.closing:
            return None
        existing = self._observers.get(call_id)
        if existing is not None:
            return existing
        token = await lease_call(leases.claim, call_id, self.owner)
        if token is None or self.closing:
            if token is not None:
                await lease_call(leases.release, [token])
            logger.info("call %s: observed by another worker (or not live); not taken", call_id)
            return None
        return self.start(call_id, lease=token)

    async def scan_once(self) -> int:
        """Claim the live calls whose lease expired or that have none; observe them."""
        if self.closing:
            return 0
        tokens = await lease_call(leases.claim_expired, self.owner)
        started = 0
        for token in tokens:
            existing = self._observers.get(token.call_id)
            if existing is not None and not existing.fenced and not self.closing:
                # Our own lease lapsed (this process lagged) and nobody took it: keep observing
                # under the new epoch; a write under the old one retries with the new token.
                existing.adopt(token)
                continue
            if self.closing or existing is not None:
                # A fenced observer of ours is still finishing: give the claim back.
                await lease_call(leases.release, [token])
                continue
            self.start(token.call_id, lease=token)
            started += 1
        if started:
            logger.info("took over the observation of %d call(s) (lease missing or expired)", started)
        return started

    async def scan_forever(self) -> None:
        """The lease scanner: runs until cancelled; database trouble is retried at the next scan."""
        interval = float(settings.OBSERVER_LEASE_SCAN_S)
        self._scan_wake = asyncio.Event()
        while not self.closing:
            try:
                await self.scan_once()
            except DatabaseError:
                logger.exception("lease scan failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._scan_wake.wait(), interval)

    async def stop_scanning(self, scanner: asyncio.Task[None]) -> None:
        """Shutdown: no more claims. The scan in progress is let finish (a claim cancelled half-way
        would leave leases that nobody observes nor releases until they expire); what it claims
        now is released at once, since `closing` is set."""
        self.closing = True
        if self._scan_wake is not None:
            self._scan_wake.set()
        await asyncio.wait([scanner], timeout=5.0)
        if not scanner.done():
            scanner.cancel()
        await asyncio.gather(scanner, return_exceptions=True)

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._beat_forever(), name="observer-lease-heartbeat")

    async def heartbeat_once(self) -> set[uuid.UUID]:
        """Renew this pool's leases; fence the observers whose lease was taken over."""
        tokens = {token.call_id: token for token in self.tokens()}
        lost: set[uuid.UUID] = await lease_call(leases.renew, list(tokens.values()))
        for call_id in lost:
            observer = self._observers.get(call_id)
            if observer is not None and observer.lease == tokens[call_id]:  # not re-claimed meanwhile
                observer.fence()
        return lost

    async def _beat_forever(self) -> None:
        interval = float(settings.OBSERVER_LEASE_HEARTBEAT_S)
        while self._observers:
            try:
                await self.heartbeat_once()
            except DatabaseError:
                logger.exception("lease heartbeat failed; retrying")
            await asyncio.sleep(interval)

    def stop(self, call_id: uuid.UUID, *, reason: str) -> bool:
        """Ask the call's observer to stop; False if this process does not observe it."""
        observer = self._observers.get(call_id)
        if observer is None:
            return False
        observer.request_stop(reason)
        return True

    async def aclose(self, *, grace_s: float = 10.0) -> None:
        """Worker shutdown: stop every observer task (calls go on upstream; their events so far are
        flushed), then release their leases so that another worker takes the calls over at once.
        Bounded by `grace_s`."""
        self.closing = True
        tokens = self.tokens()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if tokens:
            try:
                released = await lease_call(leases.release, tokens)
                logger.info("released %d observer lease(s)", released)
            except DatabaseError:
                logger.exception("could not release the leases; they expire after the TTL")
        self.closing = False


#: This process's observers.
pool = ObserverPool()

#: Lease operations run on a thread (and database connection) of their own: queued behind the
#: observers' writes on the shared thread, a heartbeat could be late enough under load to lose leases.
_lease_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="observer-lease")


async def lease_call(func: Callable[..., T], *args: Any) -> T:
    """Run a `calls.observer.lease` function on the lease thread (connections checked like
    `database_sync_to_async` does: a broken one is replaced, a pooled one returned).

    SQLite (development, tests: one process) admits one writer at a time, and its shared in-memory
    test database fails a second writer at once instead of waiting: there lease operations take the
    same shared thread as every other write (calls.observer.writers)."""
    if single_writer_database():
        result: T = await database_sync_to_async(func)(*args)
        return result

    def run() -> T:
        close_old_connections()
        try:
            return func(*args)
        finally:
            close_old_connections()

    return await asyncio.get_running_loop().run_in_executor(_lease_executor, run)


def _call_id(message: dict[str, Any]) -> uuid.UUID | None:
    try:
        return uuid.UUID(str(message.get("call_id")))
    except ValueError:
        logger.warning("observer message %s without a valid call id", message.get("type"))
        return None


class ObserverWorkerConsumer(AsyncConsumer):  # type: ignore[misc]
    """Routed from the `call-observer` channel (ChannelNameRouter in asgi.py). Handlers return at
    once: the observation runs on its own task."""

    async def observe_start(self, message: dict[str, Any]) -> None:
        call_id = _call_id(message)
        if call_id is not None:
            try:
                await pool.claim_and_start(call_id)
            except DatabaseError:  # the scanner claims it once the database answers again
                logger.exception("call %s: could not claim the lease", call_id)

    async def observe_stop(self, message: dict[str, Any]) -> None:
        call_id = _call_id(message)
        if call_id is not None and not pool.stop(call_id, reason=str(message.get("reason") or "")):
            logger.info("call %s: stop requested but not observed here", call_id)


class EmbeddedWorker(Worker):  # type: ignore[misc]
    """Channels' `Worker` that can be cancelled: its listener tasks and application instances (which
    the stock worker leaves running, since `runworker` ends with its whole loop) end with it."""

    async def handle(self) -> None:
        listeners = [asyncio.ensure_future(self.listener(channel)) for channel in self.channels]
        try:
            await asyncio.gather(*listeners)
        finally:
            for listener in listeners:
                listener.cancel()
            futures = [details["future"] for details in self.application_instances.values()]
            for scope_id in list(self.application_instances):
                self.delete_application_instance(scope_id)
            await asyncio.gather(*listeners, *futures, return_exceptions=True)

    async def listener(self, channel: str) -> None:
        """Channels' listener, but a lost channel layer (Redis restarting) is waited out instead of
        ending the worker: its observers go on writing to the database meanwhile, and the lease
        scanner keeps attaching to unobserved calls. Retries with a capped back-off."""
        delay = 0.5
        while True:
            started = time.monotonic()
            try:
                await super().listener(channel)
            except (RedisError, OSError) as exc:
                if time.monotonic() - started > 30:
                    delay = 0.5  # it had worked for a while: a new outage starts the back-off anew
                logger.warning(
                    "channel layer unreachable (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            return


def build_worker() -> Worker:
    """A worker for the observer channel on the default layer (what `runworker call-observer` runs)."""
    from channels.routing import get_default_application

    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("CHANNEL_LAYERS is not configured; the call observer cannot run")
    return EmbeddedWorker(
        application=get_default_application(), channels=[OBSERVER_CHANNEL], channel_layer=layer
    )


async def resume_live_calls() -> int:
    """Observe again the calls the database says may be live and no worker holds (this process was
    restarted mid-call, or another worker died): one lease scan. Safe with any number of workers."""
    return await pool.scan_once()


def tune_gc() -> None:
    """Keep the garbage collector's pauses short in a process that observes many calls.

    Every received event is a few dicts that live until their batch is written (≈0.25 s): they
    survive the young collections and fill the old generation, whose full collections then walk
    everything the process ever loaded (Django, the models, the libraries) — measured with
    bench/observer_throughput.py at 500 calls: 14 % of the worker's time in the collector and pauses
    up to 199 ms, which every event of the worker waits out. `gc.freeze()` moves what exists now (the
    loaded program) out of the collector's sight for good, so a full collection only walks the live
    calls' objects; a larger young-generation threshold makes the young collections fewer. Garbage
    cycles are still collected. Once per process (OBSERVER_GC_YOUNG_THRESHOLD overrides the
    threshold; bench/observer_throughput.py compares with `BENCH_NO_GC_TUNING=1`)."""
    global _gc_tuned
    if _gc_tuned:
        return
    _gc_tuned = True
    gc.collect()
    gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(max(gen0, GC_YOUNG_THRESHOLD), gen1, gen2)


async def run_embedded_worker() -> None:
    """Run the observer worker on the current loop until cancelled (``serve``'s embedded default,
    and ``manage.py observe``): the channel worker for messages plus the lease scanner. Cancelling
    it is the graceful shutdown: no new call is taken, observers flush, leases are released."""
    tune_gc()
    worker = build_worker()
    logger.info("call observer worker %s running in this process (channel %s)", pool.owner, OBSERVER_CHANNEL)
    scanner = asyncio.create_task(pool.scan_forever(), name="observer-lease-scanner")
    try:
        await worker.arun()
    finally:
        await pool.stop_scanning(scanner)
        await pool.aclose()
