"""Where the observers' batch writes run: one merged writer per worker (event loop).

Every observer flushes its call's buffer at turn boundaries and every 0.25 s. Written one call per
transaction, a worker with K live calls paid K transactions per tick (pool check, BEGIN, INSERT, turn
upserts, COMMIT: ~5 round trips each), and that, not the events themselves, capped a worker at ~80
calls (bench/observer_throughput.py, profile in bench/README.md). So the observers hand their batches
to this process's `MergedWriter`, which writes whatever batches are waiting, of all calls, in ONE
transaction (`store.write_batches`: one fencing statement for all leases, one COPY for the events, one
upsert for the turns), then resolves each observer's wait with its own result:

- group commit: a transaction starts as soon as a batch waits and a writer slot is free; batches that
  arrive while it runs go into the next one, so at low load a boundary event is written at once and
  at high load each transaction carries many calls;
- ordering: an observer hands over one batch at a time (its flush lock) and waits for its result, so a
  call's batches are committed in order and its sequences stay contiguous;
- fencing is per call inside the shared transaction: a call whose lease was taken over gets nothing
  written and its observer gets `LeaseLost` (and stops), the other calls' rows are committed;
- isolation of faults: if the merged transaction fails on the data (a constraint, a value PostgreSQL
  refuses), its batches are written again one call per transaction, so one bad batch cannot hold back
  every call of the worker; on a lost database every waiting observer gets the error and keeps its
  batch for its next flush (nothing dropped);
- bounded: one transaction takes at most `MAX_EVENTS_PER_TRANSACTION` events; memory is bounded by the
  observers (each has one batch in flight and pauses reading when its buffer is full).

SQLite admits one writer at a time (and its shared in-memory test database fails a second one at once):
there the merged transactions run on Channels' shared database thread, one at a time. On PostgreSQL they
run on `OBSERVER_DB_WRITERS` threads at most (each with a pooled connection for the transaction).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import DataError, IntegrityError, connections

from calls.observer import store

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Events one merged transaction takes at most (a backlog after a database outage is written in parts).
MAX_EVENTS_PER_TRANSACTION: Final = 20_000

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _writer_pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=writer_slots(), thread_name_prefix="observer-db")
        return _executor


def single_writer_database() -> bool:
    """SQLite: one writer at a time (and its shared in-memory test database fails a second one at
    once instead of waiting), so every write of the process goes through one thread."""
    return connections["default"].vendor == "sqlite"


def writer_slots() -> int:
    """Merged transactions that may be in flight at once (1 on SQLite)."""
    if single_writer_database():
        return 1
    return max(1, int(settings.OBSERVER_DB_WRITERS))


def concurrent_writes() -> bool:
    """Whether two merged transactions may run at the same time (not on SQLite)."""
    return writer_slots() > 1


def batch_writer(func: Callable[..., _T]) -> Callable[..., Any]:
    """`func` as an awaitable that runs on the writer threads (or the shared thread on SQLite)."""
    writer: Callable[..., Any]
    if single_writer_database():
        writer = DatabaseSyncToAsync(func)
    else:
        writer = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_writer_pool())
    return writer


_Waiting = tuple[store.CallBatch, "asyncio.Future[store.BatchResult]"]


class MergedWriter:
    """The batches of every call of one event loop, written together (see the module doc)."""

    def __init__(self, *, slots: int) -> None:
        self.slots = slots
        self._waiting: list[_Waiting] = []
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()
        #: Transactions committed and batches they held (bench and tests read them).
        self.transactions = 0
        self.batches = 0

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    async def write(self, batch: store.CallBatch) -> store.BatchResult:
        """Write `batch` with the next merged transaction; its result, or the exception of its write
        (`LeaseLost` when its call's lease was taken over). A caller must not hand over a second
        batch of the same call before this returns (the observer's flush lock sees to it)."""
        future: asyncio.Future[store.BatchResult] = asyncio.get_running_loop().create_future()
        self._waiting.append((batch, future))
        if self._running < self.slots:
            self._running += 1
            task = asyncio.create_task(self._run(), name="observer-merged-writer")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await future

    def _take(self) -> list[_Waiting]:
        taken, events = 0, 0
        for batch, _ in self._waiting:
            if taken and events + len(batch.events) > MAX_EVENTS_PER_TRANSACTION:
                break
            taken += 1
            events += len(batch.events)
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def _run(self) -> None:
        """One writer slot: merged transactions back to back while batches wait, then exit (no task
        outlives the work, so a loop that ends leaves nothing pending)."""
        try:
            while self._waiting:
                group = self._take()
                try:
                    results = await self._write([batch for batch, _ in group])
                except Exception as exc:  # e.g. the database is unreachable: every observer retries
                    for _, future in group:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                except BaseException:  # cancelled (the loop is ending): so are the waits
                    for _, future in group:
                        future.cancel()
                    raise
                self.transactions += 1
                self.batches += len(group)
                for (_, future), result in zip(group, results, strict=True):
                    if future.done():
                        continue
                    if isinstance(result, BaseException):
                        future.set_exception(result)
                    else:
                        future.set_result(result)
        finally:
            self._running -= 1

    async def _write(self, batches: list[store.CallBatch]) -> list[store.BatchResult | Exception]:
        merged: list[store.BatchResult | Exception]
        try:
            merged = list(await batch_writer(store.write_batches)(batches))
        except (IntegrityError, DataError) as exc:
            if len(batches) == 1:
                raise
            # The data of (at least) one batch was refused: the others must not wait on it forever.
            logger.warning(
                "a merged write of %d calls failed (%s); writing them one call per transaction",
                len(batches),
                type(exc).__name__,
            )
            merged = []
            for batch in batches:
                try:
                    merged.extend(await batch_writer(store.write_batches)([batch]))
                except (IntegrityError, DataError) as single:
                    merged.append(single)
        return merged

    async def aclose(self) -> None:
        """Wait until what was handed over is written (tests; a worker's observers wait for their own
        batches already)."""
        while self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._tasks), return_exceptions=True)


_writers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MergedWriter] = weakref.WeakKeyDictionary()


def merged_writer() -> MergedWriter:
    """The running loop's merged writer (a worker process runs its observers on one loop)."""
    loop = asyncio.get_running_loop()
    writer = _writers.get(loop)
    if writer is None:
        writer = _writers[loop] = MergedWriter(slots=writer_slots())
    return writer


async def write(batch: store.CallBatch) -> store.BatchResult:
    """Hand `batch` to this loop's merged writer and wait for its result (see `MergedWriter.write`)."""
    return await merged_writer().write(batch)
