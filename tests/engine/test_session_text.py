"""Session machinery over a real WebRTC data channel, text-only (engine without speech).

Every event the engine emits is parsed with the official SDK's `RealtimeServerEvent` union: the
shapes, not just the type names, must be what OpenAI's clients expect.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from realtime_local.call import EngineRuntime, new_incoming_call
from realtime_local.events import new_rtc_call_id
from realtime_local.schemas import validate_session
from tests.engine.fixtures_media import RealtimeTestClient, ServedEngine, connected_client, serve_engine

pytestmark = pytest.mark.timeout(60)

SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
TOOLS = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]


def assert_sdk_valid(events: list[dict[str, Any]]) -> None:
    for event in events:
        SERVER_EVENT.validate_python(event)
        assert event["event_id"].startswith("event_") and len(event["event_id"]) == 28


@pytest.fixture
async def text_engine() -> AsyncIterator[ServedEngine]:
    async with serve_engine(EngineRuntime(speech=None, loopback_candidates=True)) as engine:
        yield engine


@pytest.fixture
async def client(text_engine: ServedEngine) -> AsyncIterator[RealtimeTestClient]:
    async with connected_client(text_engine, {"type": "realtime", "tools": TOOLS}) as (client, _, _):
        yield client


def user_text(text: str) -> dict[str, Any]:
    return {
        "type": "conversation.item.create",
        "event_id": "evt_client_1",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]},
    }


async def test_session_created_is_first_event_and_carries_the_session(client: RealtimeTestClient) -> None:
    first = client.events[0]
    assert first["type"] == "session.created"
    assert first["session"]["type"] == "realtime"
    assert first["session"]["tools"][0]["name"] == "get_weather"
    assert_sdk_valid(client.events)


async def test_text_message_and_response_create_produce_a_text_response_in_order(
    client: RealtimeTestClient,
) -> None:
    start = len(client.events)
    client.send(user_text("hello there, I am testing"))
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    events = client.events[start:]
    types = [e["type"] for e in events]
    expected = [
        "conversation.item.added",
        "conversation.item.done",
        "response.created",
        "response.output_item.added",
        "conversation.item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "conversation.item.done",
        "response.done",
    ]
    assert [t for t in types if t in expected] == expected
    text = "".join(e["delta"] for e in events if e["type"] == "response.output_text.delta")
    assert "hello there" in text.lower()
    response = done["response"]
    assert response["status"] == "completed"
    assert response["output"][0]["content"][0]["text"] == text
    assert response["usage"]["output_tokens"] > 0
    assert response["output_modalities"] == ["text"]
    await client.wait_for("rate_limits.updated", after=start)
    assert_sdk_valid(client.events)


async def test_function_call_then_output_is_spoken_back(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send(user_text("what is the weather in Paris"))
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    call = done["response"]["output"][0]
    assert call["type"] == "function_call" and call["name"] == "get_weather"
    assert json.loads(call["arguments"]) == {"city": "Paris"}
    args_done = await client.wait_for("response.function_call_arguments.done", after=start)
    assert args_done["call_id"] == call["call_id"]

    start = len(client.events)
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "function_call_output",
                "call_id": call["call_id"],
                "output": '{"forecast": "sunny"}',
            },
        }
    )
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    assert "sunny" in done["response"]["output"][0]["content"][0]["text"]
    assert_sdk_valid(client.events)


async def test_invalid_client_events_answer_error_and_keep_the_call(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send({"type": "no.such.event", "event_id": "evt_bad_1"})
    error = await client.wait_for("error", after=start)
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["event_id"] == "evt_bad_1"
    client.channel.send("not json")
    await client.wait_for("error", lambda e: e["error"]["code"] == "invalid_json", after=start)
    client.send(
        {
            "type": "session.update",
            "event_id": "evt_bad_2",
            "session": {"audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "x"}}}},
        }
    )
    error = await client.wait_for("error", lambda e: e["error"]["event_id"] == "evt_bad_2", after=start)
    assert error["error"]["param"] == "session.audio.input.turn_detection.threshold"
    client.send({"type": "conversation.item.delete", "item_id": "item_missing", "event_id": "evt_bad_3"})
    await client.wait_for("error", lambda e: e["error"]["event_id"] == "evt_bad_3", after=start)
    # still alive: a valid event works
    client.send({"type": "session.update", "session": {"instructions": "Be brief."}})
    updated = await client.wait_for("session.updated", after=start)
    assert updated["session"]["instructions"] == "Be brief."
    assert_sdk_valid(client.events)


async def test_items_can_be_retrieved_deleted_and_inserted_at_root(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send(user_text("first"))
    added = await client.wait_for("conversation.item.added", after=start)
    item_id = added["item"]["id"]
    client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = await client.wait_for("conversation.item.retrieved", after=start)
    assert retrieved["item"]["content"][0]["text"] == "first"
    client.send({**user_text("zeroth"), "previous_item_id": "root"})
    root = await client.wait_for("conversation.item.added", lambda e: e["item"]["id"] != item_id, after=start)
    assert root["previous_item_id"] == "root"
    client.send({"type": "conversation.item.delete", "item_id": item_id})
    deleted = await client.wait_for("conversation.item.deleted", after=start)
    assert deleted["item_id"] == item_id
    assert_sdk_valid(client.events)


async def test_out_of_band_response_is_not_added_to_the_conversation(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send(
        {
            "type": "response.create",
            "response": {
                "conversation": "none",
                "output_modalities": ["text"],
                "metadata": {"purpose": "summary"},
                "input": [
                    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}
                ],
            },
        }
    )
    done = await client.wait_for("response.done", after=start)
    assert done["response"]["conversation_id"] is None
    assert done["response"]["metadata"] == {"purpose": "summary"}
    assert "conversation.item.added" not in client.types()[start:]
    assert_sdk_valid(client.events)


async def test_second_response_create_while_active_is_refused(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send(user_text("tell me a long story"))
    client.send({"type": "response.create"})
    client.send({"type": "response.create", "event_id": "evt_second"})
    error = await client.wait_for("error", after=start)
    assert error["error"]["code"] == "conversation_already_has_active_response"
    assert error["error"]["event_id"] == "evt_second"
    await client.wait_for("response.done", after=start)


class Recorder:
    """An attached event sink, as the sideband is."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_count(self, kind: str, count: int) -> None:
        while [e["type"] for e in self.events].count(kind) < count:
            self.changed.clear()
            await self.changed.wait()


async def test_cancel_before_the_response_ever_ran_still_closes_it_and_frees_the_slot() -> None:
    call = new_incoming_call(call_id=new_rtc_call_id(), runtime=EngineRuntime(), sip_headers=[])
    recorder = Recorder()
    call.attach(recorder)
    try:
        await call.accept(validate_session({"type": "realtime"}))
        await call.handle_client_event(user_text("tell me a long story"))
        # back to back, no await in between that would let the response task start
        await call.handle_client_event({"type": "response.create"})
        await call.handle_client_event({"type": "response.cancel"})
        await call.handle_client_event({"type": "response.create", "event_id": "evt_after"})
        async with asyncio.timeout(10):
            await recorder.wait_count("response.done", 2)
        dones = [e["response"] for e in recorder.events if e["type"] == "response.done"]
        assert [d["status"] for d in dones] == ["cancelled", "completed"]
        assert dones[0]["status_details"]["reason"] == "client_cancelled"
        assert not [e for e in recorder.events if e["type"] == "error"]
        created = [e["response"]["id"] for e in recorder.events if e["type"] == "response.created"]
        assert created == [d["id"] for d in dones]
        assert_sdk_valid(recorder.events)
    finally:
        await call.hangup()
