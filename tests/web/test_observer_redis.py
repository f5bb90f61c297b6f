"""The observer worker across the real Redis channel layer (the production topology's transport).

The request to observe goes through Redis to the worker's `call-observer` channel, and the events it
publishes come back through a Redis group, exactly as between separate web and worker processes.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call, Event
from calls.observer.publish import call_group
from calls.observer.worker import run_embedded_worker
from calls.services.calls import hang_up_call
from tests.engine.conftest import RunningEngine
from tests.web.test_observer_calls import MakeLiveCall, exchange, observing

REDIS_URL = os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/0"

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


def _redis_reachable() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
async def redis_layer(settings: SettingsWrapper) -> AsyncIterator[Any]:
    """channels_redis on REDIS_URL, with a key prefix of this test's own (flushed afterwards)."""
    if not _redis_reachable():
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {"hosts": [REDIS_URL], "prefix": f"test-observer-{uuid.uuid4().hex[:8]}"},
        }
    }
    layer = get_channel_layer()
    yield layer
    await layer.flush()
    await layer.close_pools()


async def test_the_worker_observes_and_publishes_through_redis(
    local_engine: RunningEngine, redis_layer: Any, make_live_call: MakeLiveCall
) -> None:
    worker = asyncio.create_task(run_embedded_worker())
    try:
        live = await make_live_call(local_engine)
        listener = await redis_layer.new_channel()
        await redis_layer.group_add(call_group(live.call.id), listener)
        observer = await observing(live)  # observe.start went through Redis
        await live.accept()
        seen = await exchange(local_engine, live, "Over Redis.")

        published: dict[int, dict[str, Any]] = {}
        async with asyncio.timeout(10):
            while seen[-1]["event_id"] not in {e.get("event_id") for e in published.values()}:
                message = await redis_layer.receive(listener)
                if message["type"] == "call.events":
                    published.update({item["sequence"]: item["event"] for item in message["events"]})
        assert sorted(published) == list(range(1, len(published) + 1))
        stored = {e.sequence: e.payload async for e in Event.objects.filter(call=live.call)}
        assert all(stored[sequence] == event for sequence, event in published.items())

        await hang_up_call(call=await Call.objects.aget(pk=live.call.pk))  # observe.stop via Redis
        await asyncio.wait_for(observer.finished.wait(), 10)
        assert (await Call.objects.aget(pk=live.call.pk)).status == Call.Status.ENDED
    finally:
        worker.cancel()
        await asyncio.wait([worker], timeout=10)
