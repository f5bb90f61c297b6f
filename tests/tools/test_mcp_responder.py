"""The local engine's rule responder picks the right tool among an MCP server's namespaced tools."""

from __future__ import annotations

import json

from realtime_local.speech.base import ToolSpec
from realtime_local.speech.responder import RuleResponder

WEATHER = ToolSpec(
    name="weather__get_weather",
    description="Get the current weather for a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
# Tools of the same server: "weather" is in their names too, but not in what they do.
SLOW = ToolSpec(name="weather__slow", description="Sleep for a while.", parameters={"type": "object"})
BOOM = ToolSpec(name="weather__boom", description="Always fails.", parameters={"type": "object"})


def test_namespaced_weather_tool_is_called_with_the_city() -> None:
    for tools in ([SLOW, BOOM, WEATHER], [WEATHER, SLOW, BOOM]):
        reply = RuleResponder().match_tool("What is the weather in Paris?", tools)
        assert reply is not None
        assert reply.name == "weather__get_weather"
        assert json.loads(reply.arguments) == {"city": "Paris"}


def test_the_tools_own_name_outranks_the_server_name() -> None:
    # Both names contain "weather" and both descriptions mention it; only get_weather's own name
    # does (without the namespace rank, the first listed tool would win the tie).
    chatty = ToolSpec(name="weather__slow", description="Wait a while, then talk about the weather.")
    reply = RuleResponder().match_tool("What is the weather in Paris?", [chatty, WEATHER])
    assert reply is not None
    assert reply.name == "weather__get_weather"


def test_a_server_name_alone_still_matches() -> None:
    forecast = ToolSpec(name="weather__forecast", description="Tomorrow's forecast for a city.")
    reply = RuleResponder().match_tool("How is the weather in Rome?", [forecast])
    assert reply is not None
    assert reply.name == "weather__forecast"


def test_unrelated_questions_call_no_tool() -> None:
    assert RuleResponder().match_tool("Tell me a story", [WEATHER, SLOW, BOOM]) is None
