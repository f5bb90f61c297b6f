"""20 concurrent calls, each asking for a slow (1 s, sync) tool at the same time: the tools run side
by side, and each call's other events are stored while its tool is still running.

Behaviour is asserted (every tool started before any finished; an event sent during the tool is
stored while the invocation is still pending); the figures (function call → output sent, and
send → stored for the in-between event) are printed: `bench/tool_concurrency.py` runs this with
output shown. No timing is asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from collections.abc import Iterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Event, ToolInvocation
from calls.tools import make_tool, registry
from tests.engine.conftest import RunningEngine, StartEngine
from tests.factories import AgentProfileFactory
from tests.web.conftest import point_settings_at
from tests.web.test_observer_calls import MakeLiveCall, driver, eventually, next_event, observing, say

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

CALLS = int(os.environ.get("TOOL_BENCH_CALLS", "20"))
TOOL_SECONDS = 1.0
#: (start, end) of each run of the tool, in the thread that ran it.
RUNS: list[tuple[float, float]] = []


def slow_lookup(topic: str) -> dict[str, str]:
    """Look something up in the slow archive (takes a second).

    Args:
        topic: What to look up.
    """
    started = time.monotonic()
    time.sleep(TOOL_SECONDS)
    RUNS.append((started, time.monotonic()))
    return {"topic": topic, "found": "an old map"}


@pytest.fixture
async def roomy_engine(start_engine: StartEngine, settings: SettingsWrapper) -> RunningEngine:
    running = await start_engine(max_calls=CALLS + 2)
    point_settings_at(settings, base_url=running.base_url, api_key=running.config.api_key)
    return running


@pytest.fixture
def slow_tool() -> Iterator[None]:
    RUNS.clear()
    registry.register(make_tool(slow_lookup, timeout_s=30))
    yield
    registry.unregister("slow_lookup")


async def one_call(
    engine: RunningEngine, make_live_call: MakeLiveCall, agent: Any, start: asyncio.Event, ready: list[object]
) -> dict[str, Any]:
    live = await make_live_call(engine, agent=agent)
    await observing(live)
    await live.accept()
    note = f"a note for {live.call.id}"
    async with driver(engine, live) as ws:
        ready.append(live)
        await start.wait()
        await say(ws, "Please do a slow lookup of the archive")
        seen: list[dict[str, Any]] = []
        arguments_done = await next_event(ws, "response.function_call_arguments.done", seen)
        function_call_at = time.monotonic()
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": note}],
                    },
                }
            )
        )
        note_sent_at = time.monotonic()

        async def note_stored() -> bool:
            return await Event.objects.filter(
                call=live.call, type="conversation.item.added", payload__item__content__0__text=note
            ).aexists()

        await eventually(note_stored, within_s=30)
        note_stored_at = time.monotonic()
        status_when_stored = (
            await ToolInvocation.objects.aget(call=live.call, function_call_id=arguments_done["call_id"])
        ).status
        while True:
            added = await next_event(ws, "conversation.item.added", seen)
            if added["item"]["type"] == "function_call_output":
                break
        output_at = time.monotonic()
        answer = await next_event(ws, "response.done", seen)
    return {
        "call": live.call,
        "tool_ms": (output_at - function_call_at) * 1000,
        "note_ms": (note_stored_at - note_sent_at) * 1000,
        "pending_when_note_stored": status_when_stored == ToolInvocation.Status.PENDING,
        "answer": answer["response"]["output"][0],
    }


async def test_slow_tools_of_20_calls_run_side_by_side_without_delaying_events(
    roomy_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall, slow_tool: None
) -> None:
    agent = await sync_to_async(AgentProfileFactory.create)(tools=["slow_lookup"])
    start = asyncio.Event()
    ready: list[object] = []
    tasks = [
        asyncio.create_task(one_call(roomy_engine, make_live_call, agent, start, ready)) for _ in range(CALLS)
    ]
    # Every call is set up (observed, accepted, driver attached) before the questions go out together.

    async def all_ready() -> bool:
        failed = [task for task in tasks if task.done()]
        if failed:
            await failed[0]  # a call that failed to set up: show why
        return len(ready) == CALLS

    await eventually(all_ready, within_s=90)
    wall = time.monotonic()
    start.set()
    results = await asyncio.gather(*tasks)
    wall_s = time.monotonic() - wall

    invocations = [invocation async for invocation in ToolInvocation.objects.filter(call__agent=agent)]
    assert len(invocations) == CALLS
    assert all(invocation.status == ToolInvocation.Status.COMPLETED for invocation in invocations)
    # Side by side: every tool had started running (in its thread) before the first one finished.
    assert len(RUNS) == CALLS
    assert max(start for start, _ in RUNS) < min(end for _, end in RUNS)
    # Each call's other events went on being stored while its tool ran.
    assert all(result["pending_when_note_stored"] for result in results)
    assert all("old map" in json.dumps(result["answer"]) for result in results)

    tool_ms = sorted(result["tool_ms"] for result in results)
    note_ms = sorted(result["note_ms"] for result in results)
    print(
        f"\n{CALLS} calls, slow tool {TOOL_SECONDS:g} s each, cpus={os.cpu_count()} "
        f"load={os.getloadavg()[0]:.2f}\n"
        f"function call -> function_call_output sent (ms): min {tool_ms[0]:.0f} "
        f"median {statistics.median(tool_ms):.0f} max {tool_ms[-1]:.0f}\n"
        f"event sent while the tool ran -> stored (ms): min {note_ms[0]:.0f} "
        f"median {statistics.median(note_ms):.0f} max {note_ms[-1]:.0f}\n"
        f"all {CALLS} tool turns, questions out -> last answer: {wall_s:.2f} s"
    )
