"""The observer's tool runner with MCP servers linked to the call's profile (the registered
`McpToolProvider`, the real weather server over stdio, a server that is down)."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import pytest
from channels.db import database_sync_to_async

from calls.models import Call, McpServer, ToolInvocation
from calls.observer.tools import ToolRunner
from calls.tools import registry
from calls.tools.mcp import UNAVAILABLE_EVENT, McpToolProvider
from tests.factories import AgentProfileFactory, CallFactory
from tests.tools.mcp_support import SERVER_SCRIPT, child_pids

pytestmark = pytest.mark.django_db(transaction=True)


def setup_call() -> Call:
    profile = AgentProfileFactory.create(tools=["get_current_time"])
    weather = McpServer.objects.create(
        name="weather", command=sys.executable, args=[str(SERVER_SCRIPT)], allowed_tools=["get_weather"]
    )
    down = McpServer.objects.create(
        name="down", transport=McpServer.Transport.STREAMABLE_HTTP, url="http://127.0.0.1:9/mcp", timeout_s=3
    )
    weather.agents.add(profile)
    down.agents.add(profile)
    call: Call = CallFactory.create(agent=profile)
    return call


async def wait_until(predicate: Any, changed: asyncio.Event, timeout_s: float = 20.0) -> None:
    """Until `predicate()` holds, re-checked whenever the runner sends something."""
    async with asyncio.timeout(timeout_s):
        while not predicate():
            changed.clear()
            await changed.wait()


async def test_mcp_tools_are_offered_run_and_a_down_server_is_recorded() -> None:
    assert any(isinstance(provider, McpToolProvider) for provider in registry.providers)
    call = await database_sync_to_async(setup_call)()
    sent: list[dict[str, Any]] = []
    recorded: list[tuple[str, dict[str, Any]]] = []
    changed = asyncio.Event()

    async def send(event: dict[str, Any]) -> None:
        sent.append(event)
        changed.set()

    before = child_pids()
    runner = ToolRunner(
        call.pk,
        send=send,
        record=lambda kind, payload: recorded.append((kind, payload)),
        hang_up=lambda reason: None,
        expected_session={"tools": []},
    )
    runner.start()
    try:
        # The session is updated with the built-in and the MCP tool; the down server is an event.
        await wait_until(lambda: any(event["type"] == "session.update" for event in sent), changed)
        update = next(event for event in sent if event["type"] == "session.update")
        assert [tool["name"] for tool in update["session"]["tools"]] == [
            "get_current_time",
            "weather__get_weather",
        ]
        unavailable = [payload for kind, payload in recorded if kind == UNAVAILABLE_EVENT]
        assert len(unavailable) == 1
        assert unavailable[0]["server"] == "down"
        assert unavailable[0]["reason"].startswith("ConnectError")

        # The model calls the MCP tool: its output goes back and the next response is asked for.
        runner.on_event(
            {
                "type": "response.function_call_arguments.done",
                "response_id": "resp_1",
                "call_id": "call_w",
                "name": "weather__get_weather",
                "arguments": json.dumps({"city": "Paris"}),
            }
        )
        runner.on_event({"type": "response.done", "response": {"id": "resp_1", "status": "completed"}})
        await wait_until(lambda: any(event["type"] == "response.create" for event in sent), changed)
        output = next(event for event in sent if event["type"] == "conversation.item.create")
        assert output["item"] == {
            "type": "function_call_output",
            "call_id": "call_w",
            "output": "The weather in Paris is light rain and 14 degrees.",
        }
        row = await database_sync_to_async(ToolInvocation.objects.get)(call=call, function_call_id="call_w")
        assert (row.tool_name, row.status) == ("weather__get_weather", ToolInvocation.Status.COMPLETED)
        assert row.arguments == {"city": "Paris"}
    finally:
        await runner.aclose()
    assert not (child_pids() - before), "the call's end stops the MCP server process"
