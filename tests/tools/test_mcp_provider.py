"""McpToolProvider: per call, the tools of the enabled MCP servers linked to the call's profile."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from django.db import connection

from calls.models import AgentProfile, Call, McpServer
from calls.observer.store import CallSnapshot, load_call
from calls.tools.base import ToolContext, ToolRegistry, build_toolbox
from calls.tools.mcp import UNAVAILABLE_EVENT, McpToolProvider, enabled_servers
from tests.factories import AgentProfileFactory, CallFactory
from tests.tools.mcp_support import SERVER_SCRIPT, child_pids

pytestmark = pytest.mark.django_db(transaction=True)


def weather_server(**fields: object) -> McpServer:
    values: dict[str, object] = {
        "name": "weather",
        "transport": McpServer.Transport.STDIO,
        "command": sys.executable,
        "args": [str(SERVER_SCRIPT)],
        "timeout_s": 10.0,
    }
    values.update(fields)
    server: McpServer = McpServer.objects.create(**values)
    return server


async def poll(condition: Callable[[], bool], *, timeout_s: float) -> None:
    """Wait until `condition()` holds (process state in /proc has no event to wait on)."""
    async with asyncio.timeout(timeout_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.05)


def make_call(*servers: McpServer, agent: AgentProfile | None = None) -> Call:
    profile = agent or AgentProfileFactory.create(tools=[])
    for server in servers:
        server.agents.add(profile)
    call: Call = CallFactory.create(agent=profile)
    return Call.objects.select_related("agent").get(pk=call.pk)


async def test_offers_the_profiles_enabled_servers_only() -> None:
    def setup() -> Call:
        call = make_call(weather_server(allowed_tools=["get_weather"]))
        # Disabled, and linked to another profile: neither is offered on this call.
        make_call(weather_server(name="other"))
        off = weather_server(name="off", enabled=False)
        off.agents.add(call.agent)
        return call

    call = await database_sync_to_async(setup)()
    provider = McpToolProvider()
    before = child_pids()
    tools = await provider.open(call)
    try:
        assert [tool.name for tool in tools] == ["weather__get_weather"]
        assert len(child_pids() - before) == 1, "one server process: the disabled one is not started"
        result = await tools[0].invoke('{"city": "Paris"}', context=ToolContext(call=call))
        assert result.output == "The weather in Paris is light rain and 14 degrees."
        assert provider.pop_notices(call) == []
    finally:
        await provider.close(call)
    assert not (child_pids() - before), "closing the call stops its server processes"
    assert provider.open_calls() == 0


async def test_the_observer_reads_the_servers_with_the_call_and_the_provider_asks_nothing_more() -> None:
    """`store.load_call` reads the agent's enabled servers with the call (one thread hand-off when
    an observer starts); the provider then offers exactly those without a query of its own."""

    def setup() -> Call:
        call = make_call(weather_server(allowed_tools=["get_weather"]))
        off = weather_server(name="off", enabled=False)
        off.agents.add(call.agent)
        make_call(weather_server(name="other"))  # another profile's server
        return call

    call = await database_sync_to_async(setup)()
    without = await database_sync_to_async(make_call)()  # a profile with no server
    queries: list[str] = []

    def count(execute: Callable[..., object], sql: str, *args: object) -> object:
        queries.append(sql)
        return execute(sql, *args)

    def load(call_id: uuid.UUID) -> tuple[CallSnapshot | None, int]:
        queries.clear()
        with connection.execute_wrapper(count):
            return load_call(call_id), len(queries)

    snapshot, with_servers_queries = await database_sync_to_async(load)(call.pk)
    assert snapshot is not None and snapshot.last_sequence == 0
    assert with_servers_queries == 2, "the call (with its agent and last sequence), then its servers"
    bare, bare_queries = await database_sync_to_async(load)(without.pk)
    assert bare is not None and bare_queries == 1
    assert await enabled_servers(bare.call) == []

    def read_specs() -> list[str]:
        queries.clear()
        with connection.execute_wrapper(count):
            return [spec.name for spec in async_to_sync(enabled_servers)(snapshot.call)]

    assert await database_sync_to_async(read_specs)() == ["weather"]
    assert queries == [], "the servers read with the call are used as they are"
    # A call loaded without them (a test, an admin action) still gets its servers from the database.
    assert [spec.name for spec in await enabled_servers(call)] == ["weather"]


async def test_a_server_that_is_down_leaves_the_call_with_the_other_tools(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def setup() -> Call:
        return make_call(
            weather_server(),
            weather_server(
                name="down",
                transport=McpServer.Transport.STREAMABLE_HTTP,
                command="",
                args=[],
                url="http://127.0.0.1:9/mcp",
                headers={"Authorization": "Bearer secret-token"},
                timeout_s=5.0,
            ),
            weather_server(name="hung", command="sleep", args=["60"], timeout_s=1.0),
        )

    call = await database_sync_to_async(setup)()
    registry = ToolRegistry()
    provider = McpToolProvider()
    registry.add_provider(provider)
    before = child_pids()
    caplog.set_level(logging.WARNING, logger="calls.tools.mcp")
    started = time.monotonic()
    toolbox = await build_toolbox(call, registry=registry)
    opened_in = time.monotonic() - started
    try:
        assert toolbox.names() == ["weather__get_weather", "weather__slow", "weather__boom"]
        # Servers connect concurrently and a hung one does not wait for its shutdown: the call's
        # start is held up by the longest timeout at most (1 s here), not by the sum or the clean-up.
        assert opened_in < 5.0
        notices = provider.pop_notices(call)
        assert [(notice["type"], notice["server"]) for notice in notices] == [
            (UNAVAILABLE_EVENT, "down"),
            (UNAVAILABLE_EVENT, "hung"),
        ]
        assert notices[0]["reason"].startswith("ConnectError")
        assert notices[1]["reason"] == "no answer within 1 s"
        assert provider.pop_notices(call) == [], "notices are handed over once"
        logged = [record.getMessage() for record in caplog.records]
        assert any("MCP server down is unavailable (ConnectError" in line for line in logged)
        assert any("MCP server hung is unavailable (no answer within 1 s)" in line for line in logged)
        assert not any("secret-token" in line for line in logged), "headers never reach the log"
        weather = toolbox.get("weather__get_weather")
        assert weather is not None
        result = await weather.invoke(json.dumps({"city": "Tokyo"}), context=ToolContext(call=call))
        assert result.status == "completed"
    finally:
        await toolbox.aclose()
    assert not (child_pids() - before), "the working and the hung server processes are both gone"


async def test_a_profile_without_servers_gets_no_tools() -> None:
    call = await database_sync_to_async(make_call)()
    provider = McpToolProvider()
    assert list(await provider.open(call)) == []
    await provider.close(call)
    assert provider.open_calls() == 0


async def test_a_call_that_ends_while_its_servers_connect_leaves_no_process() -> None:
    def setup() -> Call:
        return make_call(weather_server(name="hung", command="sleep", args=["60"], timeout_s=30.0))

    call = await database_sync_to_async(setup)()
    provider = McpToolProvider()
    before = child_pids()
    opening = asyncio.ensure_future(provider.open(call))
    await poll(lambda: bool(child_pids() - before), timeout_s=10)  # the server process is spawned
    opening.cancel()
    with pytest.raises(asyncio.CancelledError):
        await opening
    assert provider.open_calls() == 0
    # The clean-up runs on its own (stdin closed, then SIGTERM after the SDK's grace period).
    await poll(lambda: not (child_pids() - before), timeout_s=15)
