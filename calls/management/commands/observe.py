"""`manage.py observe`: a call-observer worker process (the Procfile's `worker`).

Runs what ``serve`` embeds, on its own: the Channels worker for the ``call-observer`` channel
(``observe.start``/``observe.stop`` from any web process, through channels_redis) and the lease
scanner that takes over the calls of workers that died (calls.observer.lease). Run as many as needed.

SIGTERM or SIGINT is a graceful shutdown: the worker stops taking calls, its observers flush what they
received, their leases are released (so another worker takes the calls over at its next scan rather
than after the lease TTL), then the process exits 0. A second signal exits at once.

On PostgreSQL its sessions get `idle_in_transaction_session_timeout` (OBSERVER_DB_IDLE_TX_TIMEOUT_S):
a worker frozen (SIGSTOP, a VM pause) in the middle of a write holds its lease row locked, and the
other workers' claims skip locked rows; the server ends such a session, so the call can be taken
over. (Behind a transaction-mode pooler, set it on the workers' database role instead.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.signals import connection_created

from calls.observer.worker import pool, run_embedded_worker
from voiceagent.monitoring.metrics import serve_worker_metrics

logger = logging.getLogger("voiceagent.observe")


def limit_idle_transactions(sender: Any, connection: BaseDatabaseWrapper, **kwargs: Any) -> None:
    """A new PostgreSQL session of this worker: end it if it idles inside a transaction (frozen)."""
    if connection.vendor != "postgresql":
        return
    timeout_ms = int(float(settings.OBSERVER_DB_IDLE_TX_TIMEOUT_S) * 1000)
    with connection.cursor() as cursor:
        cursor.execute(f"SET idle_in_transaction_session_timeout = {timeout_ms}")


class Command(BaseCommand):
    help = "Run a call-observer worker (channel messages and lease takeover) until SIGTERM."

    def handle(self, *args: Any, **options: Any) -> None:
        connection_created.connect(limit_idle_transactions)
        serve_worker_metrics()  # METRICS_WORKER_PORT set: this worker's series on its own port
        asyncio.run(self.run())
        self.stdout.write("Observer worker stopped.")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()

        def on_signal(signum: int) -> None:
            if stop.is_set():  # a second signal: no more patience
                os._exit(1)
            logger.info("signal %d: stopping the observer worker", signum)
            stop.set()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, on_signal, signum)
        worker = asyncio.create_task(run_embedded_worker(), name="call-observer-worker")
        self.stdout.write(f"observer worker running (lease owner {pool.owner})")
        self.stdout.flush()
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait({worker, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not worker.done():
            worker.cancel()
        await asyncio.gather(worker, return_exceptions=True)
        if not worker.cancelled() and worker.exception() is not None:
            raise worker.exception()  # type: ignore[misc]
