"""Where the observers' batch writes run.

Channels' `database_sync_to_async` is thread-sensitive: every call goes through one shared thread and
its one connection, so in a worker with many live calls each call's flush queues behind all the
others' (bench/observer_throughput.py: most of the worker's time was spent waiting on PostgreSQL on
that single thread, and at 50 calls it stored half of what arrived). A call's own flushes are already
ordered by its flush lock, and every batch is one transaction, so batches of different calls may run
side by side: on PostgreSQL they run on a small pool of threads, each taking a connection from
Django's pool for the batch. SQLite admits one writer at a time, so there the shared thread stays.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from channels.db import DatabaseSyncToAsync
from django.conf import settings
from django.db import connections

_T = TypeVar("_T")

_executor: ThreadPoolExecutor | None = None
_executor_lock = threading.Lock()


def _writer_pool() -> ThreadPoolExecutor:
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(
                max_workers=max(1, int(settings.OBSERVER_DB_WRITERS)), thread_name_prefix="observer-db"
            )
        return _executor


def single_writer_database() -> bool:
    """SQLite: one writer at a time (and its shared in-memory test database fails a second one at
    once instead of waiting), so every write of the process goes through one thread."""
    return connections["default"].vendor == "sqlite"


def concurrent_writes() -> bool:
    """Whether batches of different calls may be written at the same time (not on SQLite)."""
    return not single_writer_database() and int(settings.OBSERVER_DB_WRITERS) > 1


def batch_writer(func: Callable[..., _T]) -> Callable[..., Any]:
    """`func` as an awaitable that runs on the writer threads (or the shared thread on SQLite)."""
    writer: Callable[..., Any]
    if concurrent_writes():
        writer = DatabaseSyncToAsync(func, thread_sensitive=False, executor=_writer_pool())
    else:
        writer = DatabaseSyncToAsync(func)
    return writer
