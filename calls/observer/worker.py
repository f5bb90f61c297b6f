"""The `call-observer` worker: a Channels consumer that runs one `CallObserver` task per live call.

Run it with ``manage.py runworker call-observer`` (production: as many worker processes as needed,
on channels_redis), or embedded in ``manage.py serve`` (`run_embedded_worker`, same loop as daphne).
Messages (see `calls.observer.dispatch`): ``observe.start`` starts observing a call unless this
process already does; ``observe.stop`` asks its observer to flush and detach.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

from channels.consumer import AsyncConsumer
from channels.db import database_sync_to_async
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels.worker import Worker
from django.db import DatabaseError

from calls.observer import store
from calls.observer.dispatch import OBSERVER_CHANNEL
from calls.observer.observer import CallObserver

logger = logging.getLogger(__name__)


class ObserverPool:
    """The observers of this process, at most one per call."""

    def __init__(self) -> None:
        self._observers: dict[uuid.UUID, CallObserver] = {}
        self._tasks: dict[uuid.UUID, asyncio.Task[Any]] = {}

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._observers

    def __len__(self) -> int:
        return len(self._observers)

    def get(self, call_id: uuid.UUID) -> CallObserver | None:
        return self._observers.get(call_id)

    def task(self, call_id: uuid.UUID) -> asyncio.Task[Any] | None:
        return self._tasks.get(call_id)

    def start(self, call_id: uuid.UUID, **options: Any) -> CallObserver:
        """Observe `call_id` on the running loop; the existing observer if one runs already."""
        existing = self._observers.get(call_id)
        if existing is not None:
            return existing
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
        return observer

    def stop(self, call_id: uuid.UUID, *, reason: str) -> bool:
        """Ask the call's observer to stop; False if this process does not observe it."""
        observer = self._observers.get(call_id)
        if observer is None:
            return False
        observer.request_stop(reason)
        return True

    async def aclose(self, *, grace_s: float = 10.0) -> None:
        """Worker shutdown: stop every observer task (calls go on upstream; their events so far are
        flushed). Bounded by `grace_s`."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=grace_s)


#: This process's observers.
pool = ObserverPool()


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
            pool.start(call_id)

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
    """Observe again the calls the database says may be live (the process was restarted mid-call).

    Only with the in-memory layer, where this process is the only observer there is: with a shared
    layer several workers would resume the same calls (that needs the lease design.md describes).
    A call that ended meanwhile is closed by its observer ("ended upstream": the API answers 404).
    """
    if not isinstance(get_channel_layer(), InMemoryChannelLayer):
        return 0
    call_ids = await database_sync_to_async(store.live_call_ids)()
    for call_id in call_ids:
        pool.start(call_id)
    if call_ids:
        logger.info("resuming the observation of %d call(s) left live by a previous run", len(call_ids))
    return len(call_ids)


async def run_embedded_worker() -> None:
    """Run the observer worker on the current loop until cancelled (``serve``'s embedded default)."""
    worker = build_worker()
    logger.info("call observer worker running in this process (channel %s)", OBSERVER_CHANNEL)
    try:
        try:
            await resume_live_calls()
        except DatabaseError:  # the worker still serves new calls
            logger.exception("could not look for calls left live by a previous run")
        await worker.arun()
    finally:
        await pool.aclose()
