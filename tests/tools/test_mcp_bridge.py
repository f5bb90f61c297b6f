"""The MCP bridge against the real weather test server: over stdio (a subprocess the bridge spawns)
and over streamable HTTP (a subprocess on a loopback port)."""

from __future__ import annotations

import dataclasses
import json
import uuid

import pytest

from calls.models import Call
from calls.tools.base import TOOL_NAME, ToolContext
from calls.tools.mcp import ServerConnection, ServerSpec, connect, describe_failure, offered_name, probe
from tests.tools.mcp_support import child_pids, http_server_url, stdio_spec

__all__ = ["http_server_url"]  # a fixture, used by name


def context() -> ToolContext:
    """A context for tools that only log the call's id (no database needed)."""
    return ToolContext(call=Call(id=uuid.uuid4()), function_call_id="call_test")


@pytest.fixture(params=["stdio", "streamable-http"])
def spec(request: pytest.FixtureRequest) -> ServerSpec:
    if request.param == "stdio":
        return stdio_spec()
    url: str = request.getfixturevalue("http_server_url")
    return ServerSpec(name="weather", transport="streamable-http", url=url, timeout_s=10.0)


async def test_lists_tools_namespaced_and_calls_get_weather(spec: ServerSpec) -> None:
    connection = await connect(spec)
    try:
        tools = {tool.name: tool for tool in connection.offered_tools()}
        assert set(tools) == {"weather__get_weather", "weather__slow", "weather__boom"}
        weather = tools["weather__get_weather"]
        assert weather.function_spec() == {
            "type": "function",
            "name": "weather__get_weather",
            "description": "Get the current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        }
        result = await weather.invoke(json.dumps({"city": "Paris"}), context=context())
        assert result.status == "completed"
        assert result.output == "The weather in Paris is light rain and 14 degrees."
    finally:
        await connection.close()


async def test_allowed_tools_limits_what_is_offered() -> None:
    connection = await connect(stdio_spec(allowed_tools=("get_weather",)))
    try:
        assert [tool.name for tool in connection.offered_tools()] == ["weather__get_weather"]
        # The listing itself is complete: the admin's test action shows what is left out.
        assert {tool.name for tool in connection.tools} == {"get_weather", "slow", "boom"}
    finally:
        await connection.close()


async def test_is_error_results_become_failed_tool_outputs(spec: ServerSpec) -> None:
    connection = await connect(spec)
    try:
        tools = {tool.name: tool for tool in connection.offered_tools()}
        unknown = await tools["weather__get_weather"].invoke('{"city": "Atlantis"}', context=context())
        assert unknown.status == "failed"
        assert json.loads(unknown.output) == {
            "error": "Error executing tool get_weather: no weather for Atlantis"
        }
        boom = await tools["weather__boom"].invoke("{}", context=context())
        assert boom.status == "failed"
        # The server keeps an unexpected exception's text to itself; the model hears that it failed.
        assert json.loads(boom.output) == {"error": "Error executing tool boom"}
        # A failed call leaves the session usable.
        again = await tools["weather__get_weather"].invoke('{"city": "london"}', context=context())
        assert again.output == "The weather in London is fog and 9 degrees."
    finally:
        await connection.close()


async def test_a_slow_tool_times_out_and_the_session_goes_on() -> None:
    # Started with room to spare (a loaded machine may take over a second to start the server), then
    # the server's timeout is what bounds each call.
    connection = await connect(stdio_spec(timeout_s=10.0))
    connection.spec = dataclasses.replace(connection.spec, timeout_s=1.0)
    try:
        tools = {tool.name: tool for tool in connection.offered_tools()}
        slow = await tools["weather__slow"].invoke('{"seconds": 30}', context=context())
        assert slow.status == "failed"
        assert json.loads(slow.output) == {"error": "weather__slow timed out after 1 s"}
        quick = await tools["weather__get_weather"].invoke('{"city": "Tokyo"}', context=context())
        assert quick.status == "completed"
        assert quick.output == "The weather in Tokyo is clear skies and 22 degrees."
    finally:
        await connection.close()


async def test_invalid_arguments_are_reported_by_the_server() -> None:
    connection = await connect(stdio_spec())
    try:
        weather = {tool.name: tool for tool in connection.offered_tools()}["weather__get_weather"]
        missing = await weather.invoke("{}", context=context())
        assert missing.status == "failed"
        assert "city" in json.loads(missing.output)["error"]
        not_json = await weather.invoke("{city", context=context())
        assert not_json.status == "failed"
        assert json.loads(not_json.output)["error"].startswith("arguments are not valid JSON")
    finally:
        await connection.close()


async def test_close_ends_the_stdio_server_process() -> None:
    before = child_pids()
    connection = await connect(stdio_spec())
    spawned = child_pids() - before
    assert len(spawned) == 1, "the stdio transport runs the server as a child process"
    await connection.close()
    assert not (child_pids() & spawned)
    await connection.close()  # idempotent
    after = await connection.offered_tools()[0].invoke('{"city": "Paris"}', context=context())
    assert after.status == "failed"
    assert json.loads(after.output) == {"error": "the MCP server weather is not connected"}


async def test_unreachable_servers_fail_to_connect_with_a_reason() -> None:
    down = ServerSpec(name="down", transport="streamable-http", url="http://127.0.0.1:9/mcp", timeout_s=5.0)
    with pytest.raises(Exception) as caught:
        await connect(down)
    assert describe_failure(caught.value, 5.0).startswith("ConnectError")
    missing = ServerSpec(name="missing", transport="stdio", command="/nonexistent/mcp-server", timeout_s=5.0)
    with pytest.raises(Exception) as caught:
        await connect(missing)
    assert describe_failure(caught.value, 5.0).startswith("FileNotFoundError")


async def test_a_server_that_never_answers_times_out_and_is_stopped() -> None:
    before = child_pids()
    hung = ServerSpec(name="hung", transport="stdio", command="sleep", args=("60",), timeout_s=0.5)
    connection = ServerConnection(hung)
    with pytest.raises(TimeoutError):
        await connection.open(background_cleanup=True)
    await connection.close()  # waits for the background clean-up
    assert not (child_pids() - before)


async def test_probe_lists_every_tool() -> None:
    assert sorted(await probe(stdio_spec(allowed_tools=("boom",)))) == ["boom", "get_weather", "slow"]


def test_offered_names_fit_the_api() -> None:
    assert offered_name("weather", "get_weather") == "weather__get_weather"
    assert offered_name("files", "read.file/v2") == "files__read_file_v2"
    long = offered_name("a" * 24, "b" * 80)
    assert len(long) == 64
    assert TOOL_NAME.match(long)
