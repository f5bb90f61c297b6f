"""The observer worker embedded in ``manage.py serve``: same process, same event loop as daphne.

daphne runs Twisted's asyncio reactor; once the reactor runs, its asyncio loop is the running loop,
so the Channels `Worker` for ``call-observer`` runs there as one more task, beside the HTTP and
WebSocket connections, and reaches the in-memory channel layer the web code sends to. At reactor
shutdown the worker is cancelled (observers flush what they received) before the loop stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from calls.observer.worker import run_embedded_worker

logger = logging.getLogger(__name__)

#: Seconds the shutdown waits for the observers to flush.
SHUTDOWN_GRACE_S = 10.0


class EmbeddedWorker:
    """Starts the worker task when the reactor runs and stops it before the reactor shuts down."""

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        """Schedule on daphne's reactor (import after `daphne.server` installed the asyncio reactor)."""
        from twisted.internet import reactor as installed

        # Typed through zope interfaces whose methods omit `self`: mypy misreads them.
        reactor: Any = installed
        # callLater from callWhenRunning: the start then runs inside the loop, not before it.
        reactor.callWhenRunning(reactor.callLater, 0, self.start)
        reactor.addSystemEventTrigger("before", "shutdown", self.stop)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.task = self.loop.create_task(run_embedded_worker(), name="call-observer-worker")
        self.task.add_done_callback(self._report)

    def stop(self) -> Any:
        """A Deferred that fires once the worker (and its observers) stopped, or None."""
        from twisted.internet.defer import Deferred

        task = self.task
        if task is None or task.done():
            return None
        task.cancel()
        return Deferred.fromFuture(asyncio.ensure_future(asyncio.wait([task], timeout=SHUTDOWN_GRACE_S)))

    @staticmethod
    def _report(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            logger.error("the call observer worker stopped", exc_info=task.exception())


def install_embedded_worker() -> EmbeddedWorker:
    worker = EmbeddedWorker()
    worker.install()
    return worker
