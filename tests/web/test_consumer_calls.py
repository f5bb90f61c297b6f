"""The live console WebSocket `/ws/calls/<uuid>/`: owner only, stored events then live ones, status.

Driven through the project's real ASGI application (origin check, session auth, URL router) with
Channels' `WebsocketCommunicator`, signed in with a real session cookie.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.test import AsyncClient

from calls.models import Call
from calls.observer.worker import pool
from calls.services.calls import HANGUP_REASON, hang_up_call
from tests.engine.conftest import RunningEngine
from tests.factories import CallFactory, StaffUserFactory, add_events
from tests.web.test_observer_calls import MakeLiveCall, exchange, observing
from voiceagent.asgi import application

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def communicator(call_id: uuid.UUID | str, user: User | None) -> WebsocketCommunicator:
    """A socket to the call's stream from a browser on our origin, signed in as `user` (or not)."""
    headers = [(b"origin", b"http://localhost:8000"), (b"host", b"localhost:8000")]
    if user is not None:
        client = AsyncClient()
        await client.aforce_login(user)
        headers.append((b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode()))
    return WebsocketCommunicator(application, f"/ws/calls/{call_id}/", headers=headers)


async def refused_with(comm: WebsocketCommunicator) -> int:
    connected, _ = await comm.connect(timeout=5)
    assert connected  # accepted first, so that the browser learns the close code
    message = await comm.receive_output(timeout=5)
    assert message["type"] == "websocket.close", message
    code: int = message["code"]
    await comm.wait()
    return code


async def receive_all(comm: WebsocketCommunicator, *, quiet_s: float = 0.5) -> list[dict[str, Any]]:
    """Messages until none arrives for `quiet_s`."""
    received: list[dict[str, Any]] = []
    # receive_nothing, not a timed receive: a receive that times out kills the application.
    while not await comm.receive_nothing(timeout=quiet_s):
        received.append(await comm.receive_json_from(timeout=5))
    return received


async def test_someone_elses_call_is_refused_with_4403(channel_layer: Any, transactional_db: None) -> None:
    call = await sync_to_async(CallFactory.create)()
    await sync_to_async(add_events)(call, 3)
    intruder = await sync_to_async(StaffUserFactory.create)()
    assert await refused_with(await communicator(call.id, intruder)) == 4403


async def test_an_anonymous_visitor_is_refused_with_4403(channel_layer: Any, transactional_db: None) -> None:
    call = await sync_to_async(CallFactory.create)()
    assert await refused_with(await communicator(call.id, None)) == 4403


async def test_an_unknown_call_is_refused_with_4404(channel_layer: Any, transactional_db: None) -> None:
    user = await sync_to_async(StaffUserFactory.create)()
    assert await refused_with(await communicator(uuid.uuid4(), user)) == 4404


async def test_the_owner_gets_the_status_then_the_stored_events_in_order(
    channel_layer: Any, transactional_db: None
) -> None:
    call = await sync_to_async(CallFactory.create)()
    await sync_to_async(add_events)(call, 620)  # more than one page of stored events
    comm = await communicator(call.id, call.user)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    messages = await receive_all(comm)
    assert messages[0] == {"type": "status", "status": "ended", "end_reason": "hangup", "error": None}
    assert [m["sequence"] for m in messages[1:]] == list(range(1, 621))
    assert messages[1]["type"] == "event" and messages[1]["event"]["delta"] == "word 0"
    await comm.disconnect()


async def test_the_owner_watches_a_live_call_stored_then_live_without_gaps_or_repeats(
    local_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall
) -> None:
    live = await make_live_call(local_engine)
    observer = await observing(live)
    await live.accept()
    await exchange(local_engine, live, "Before the console opened.")
    assert live.call.user is not None
    comm = await communicator(live.call.id, live.call.user)
    connected, _ = await comm.connect(timeout=5)
    assert connected
    live_part = await exchange(local_engine, live, "While it watches.")
    await hang_up_call(call=await Call.objects.aget(pk=live.call.pk))
    await asyncio.wait_for(observer.finished.wait(), 10)
    messages = await receive_all(comm, quiet_s=1.0)
    await comm.disconnect()

    statuses = [m for m in messages if m["type"] == "status"]
    events = [m for m in messages if m["type"] == "event"]
    assert statuses[0]["status"] == "active"
    assert statuses[-1] == {"type": "status", "status": "ended", "end_reason": HANGUP_REASON, "error": None}
    assert [m["sequence"] for m in events] == list(range(1, len(events) + 1))
    sent_ids = [m["event"]["event_id"] for m in events]
    assert all(event["event_id"] in sent_ids for event in live_part)
    assert live.call.id not in pool
