"""The observer's tool loop against a real local engine: the engine's rule responder calls a session
tool, the observer runs ours, answers with function_call_output + response.create, and the engine
speaks the result; invocations are stored and published; end_call hangs up politely."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from asgiref.sync import sync_to_async

from calls.models import Call, Event, ToolInvocation, TranscriptTurn
from calls.observer.publish import call_group
from calls.observer.tools import TOOL_FINISHED_EVENT, TOOL_STARTED_EVENT
from tests.engine.conftest import RunningEngine
from tests.factories import AgentProfileFactory
from tests.web.test_observer_calls import MakeLiveCall, driver, eventually, next_event, observing, say

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]


async def agent_with(*tools: str) -> Any:
    return await sync_to_async(AgentProfileFactory.create)(tools=list(tools))


async def test_the_weather_question_runs_our_tool_and_the_answer_speaks_the_table(
    local_engine: RunningEngine, observer_worker: object, channel_layer: Any, make_live_call: MakeLiveCall
) -> None:
    live = await make_live_call(local_engine, agent=await agent_with("get_weather", "get_current_time"))
    listener = await channel_layer.new_channel()
    await channel_layer.group_add(call_group(live.call.id), listener)
    observer = await observing(live)
    await live.accept()
    seen: list[dict[str, Any]] = []
    async with driver(local_engine, live) as ws:
        await say(ws, "What is the weather in Paris?")
        first_done = await next_event(ws, "response.done", seen)
        (call_item,) = first_done["response"]["output"]
        assert call_item["type"] == "function_call" and call_item["name"] == "get_weather"
        # The observer answers on its own sideband; the driver sees the item and the new response.
        output_item = await next_event(ws, "conversation.item.added", seen)
        assert output_item["item"]["type"] == "function_call_output"
        assert output_item["item"]["call_id"] == call_item["call_id"]
        answer = await next_event(ws, "response.done", seen)
    part = answer["response"]["output"][0]["content"][0]
    transcript = part.get("transcript") or part.get("text")
    assert "Paris" in transcript and "18" in transcript and "sunny" in transcript

    invocation = await ToolInvocation.objects.aget(call=live.call)
    assert invocation.function_call_id == call_item["call_id"]
    assert (invocation.tool_name, invocation.status) == ("get_weather", ToolInvocation.Status.COMPLETED)
    assert invocation.arguments == {"city": "Paris"}
    assert '"temperature_celsius": 18' in invocation.output and invocation.duration_ms is not None

    async def assistant_said_weather() -> bool:
        return await TranscriptTurn.objects.filter(
            call=live.call, role="assistant", text__contains="sunny"
        ).aexists()

    await eventually(assistant_said_weather)

    async def tool_events() -> list[Event] | None:
        rows = [
            event
            async for event in Event.objects.filter(
                call=live.call, type__in=[TOOL_STARTED_EVENT, TOOL_FINISHED_EVENT]
            ).order_by("sequence")
        ]
        return rows if len(rows) == 2 else None

    started, finished = await eventually(tool_events)
    assert started.payload["name"] == "get_weather" and started.payload["arguments"] == {"city": "Paris"}
    assert finished.payload["status"] == "completed" and "sunny" in finished.payload["output"]

    # The console hears about it live: the tool events are published to the call's group.
    published: set[str] = set()
    async with asyncio.timeout(10):
        while TOOL_FINISHED_EVENT not in published:
            message = await channel_layer.receive(listener)
            if message["type"] == "call.events":
                published.update(item["event"]["type"] for item in message["events"])
    assert TOOL_STARTED_EVENT in published

    # One function call, one output, one new response: nothing ran twice.
    assert await ToolInvocation.objects.filter(call=live.call).acount() == 1
    assert not (await Call.objects.aget(pk=live.call.pk)).session_tampered
    observer.request_stop("test over")


async def test_the_session_offers_the_profiles_tools(
    local_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall
) -> None:
    live = await make_live_call(local_engine, agent=await agent_with("get_weather"))
    await observing(live)
    await live.accept()
    async with driver(local_engine, live) as ws:
        # A tool the profile does not offer is not called: the engine just answers.
        await say(ws, "What time is it in Tokyo?")
        done = await next_event(ws, "response.done", [])
    assert done["response"]["output"][0]["type"] == "message"
    assert not await ToolInvocation.objects.filter(call=live.call).aexists()


async def test_end_call_hangs_up_after_the_goodbye(
    local_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall
) -> None:
    live = await make_live_call(local_engine, agent=await agent_with("end_call"))
    observer = await observing(live)
    await live.accept()
    seen: list[dict[str, Any]] = []
    async with driver(local_engine, live) as ws:
        await say(ws, "Thanks, that is all, please end the call.")
        first = await next_event(ws, "response.done", seen)
        assert first["response"]["output"][0]["name"] == "end_call"
        goodbye = await next_event(ws, "response.done", seen)
        assert goodbye["response"]["output"][0]["type"] == "message"
    await asyncio.wait_for(observer.finished.wait(), 15)
    call = await Call.objects.aget(pk=live.call.pk)
    assert call.status == Call.Status.ENDED
    assert call.end_reason.startswith("ended by the agent")
    invocation = await ToolInvocation.objects.aget(call=live.call)
    assert invocation.tool_name == "end_call" and invocation.status == ToolInvocation.Status.COMPLETED
