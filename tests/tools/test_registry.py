"""The registry: schemas derived from signatures and docstrings, and what `invoke` answers for bad
arguments, raising tools and slow tools (always a result, never an exception)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Annotated, Literal

import pytest
from pydantic import Field

from calls.models import Call
from calls.tools import (
    Toolbox,
    ToolContext,
    ToolError,
    ToolRegistry,
    make_tool,
    parse_docstring,
    registry,
    tool,
)
from calls.tools.builtins import transfer_target_uri
from tests.factories import CallFactory

# Transactional: the async tests create their call in a worker thread (its own connection).
pytestmark = pytest.mark.django_db(transaction=True)


def book_table(
    restaurant: str,
    people: int,
    seating: Literal["inside", "terrace"] = "inside",
    note: str | None = None,
) -> dict[str, object]:
    """Book a table at a restaurant.

    A second paragraph of the description.

    Args:
        restaurant: The restaurant's name.
        people (int): How many guests, counting the
            caller.
        seating: Where to sit.

    Returns:
        The booking.
    """
    return {"restaurant": restaurant, "people": people, "seating": seating, "note": note}


def test_the_schema_comes_from_the_signature_and_the_docstring() -> None:
    made = make_tool(book_table)
    assert made.name == "book_table"
    assert made.description == "Book a table at a restaurant. A second paragraph of the description."
    schema = made.parameters
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    assert schema["required"] == ["restaurant", "people"]
    props = schema["properties"]
    assert props["restaurant"] == {"type": "string", "description": "The restaurant's name."}
    assert props["people"] == {"type": "integer", "description": "How many guests, counting the caller."}
    assert props["seating"]["enum"] == ["inside", "terrace"] and props["seating"]["default"] == "inside"
    assert props["seating"]["description"] == "Where to sit."
    assert "description" not in props["note"]  # not documented: no invented text
    assert made.function_spec() == {
        "type": "function",
        "name": "book_table",
        "description": made.description,
        "parameters": schema,
    }


def test_field_metadata_and_a_context_parameter_are_honoured() -> None:
    @tool(name="roll", timeout_s=2)
    async def roll_dice(
        sides: Annotated[int, Field(ge=2, le=100, description="Faces.")], context: ToolContext
    ) -> int:
        """Roll a die."""
        return sides

    assert roll_dice.name == "roll" and roll_dice.timeout_s == 2
    assert roll_dice.context_parameter == "context"
    assert list(roll_dice.parameters["properties"]) == ["sides"]
    assert roll_dice.parameters["properties"]["sides"] == {
        "type": "integer",
        "minimum": 2,
        "maximum": 100,
        "description": "Faces.",
    }


def test_an_untyped_parameter_is_refused() -> None:
    def untyped(city):
        """No types."""

    with pytest.raises(TypeError, match="type hint"):
        make_tool(untyped)


def test_docstring_sections_are_split() -> None:
    description, params = parse_docstring(book_table.__doc__)
    assert description.startswith("Book a table")
    assert set(params) == {"restaurant", "people", "seating"}


def test_builtins_are_registered_with_their_schemas() -> None:
    assert {"get_current_time", "get_weather", "end_call", "transfer_call"} <= set(registry.names())
    weather = registry.function_specs(["get_weather", "no_such_tool"])
    assert [spec["name"] for spec in weather] == ["get_weather"]
    assert weather[0]["parameters"]["required"] == ["city"]


def context() -> ToolContext:
    return ToolContext(call=CallFactory.create(), function_call_id="call_test")


async def test_invalid_arguments_are_a_tool_error_for_the_model() -> None:
    ctx = await asyncio.to_thread(context)
    made = make_tool(book_table)
    for arguments, expected in [
        ('{"restaurant": "Chez Nous"}', "people: Field required"),
        ('{"restaurant": "Chez Nous", "people": "many"}', "people: Input should be a valid integer"),
        (
            '{"restaurant": "X", "people": 2, "seating": "roof"}',
            "seating: Input should be 'inside' or 'terrace'",
        ),
        ('{"restaurant": "X", "people": 2, "colour": "red"}', "colour: Extra inputs are not permitted"),
        ("not json", "arguments are not valid JSON"),
        ("[1, 2]", "arguments must be a JSON object"),
    ]:
        result = await made.invoke(arguments, context=ctx)
        assert result.status == "failed", arguments
        assert expected in json.loads(result.output)["error"], (arguments, result.output)
    ok = await made.invoke('{"restaurant": "X", "people": "3"}', context=ctx)
    assert ok.ok and json.loads(ok.output)["people"] == 3


async def test_a_tool_that_raises_fails_with_the_error_type_and_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ctx = await asyncio.to_thread(context)

    @tool
    def explode(secret: str) -> str:
        """Always fails."""
        raise RuntimeError("disk on fire")

    result = await explode.invoke('{"secret": "the caller\'s PIN 4321"}', context=ctx)
    assert result.status == "failed"
    assert json.loads(result.output) == {"error": "RuntimeError: disk on fire"}
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "explode" in logged and str(ctx.call.pk) in logged
    assert "4321" not in logged  # ids only: never the arguments


async def test_a_tool_error_is_passed_to_the_model_as_said() -> None:
    ctx = await asyncio.to_thread(context)
    result = await registry.get("get_current_time").invoke(  # type: ignore[union-attr]
        '{"timezone": "Mars/Olympus_Mons"}', context=ctx
    )
    assert result.status == "failed"
    assert "unknown time zone 'Mars/Olympus_Mons'" in json.loads(result.output)["error"]
    good = await registry.get("get_current_time").invoke('{"timezone": "Asia/Tokyo"}', context=ctx)  # type: ignore[union-attr]
    assert good.ok and json.loads(good.output)["iso"].endswith("+09:00")


async def test_slow_tools_time_out_sync_and_async_without_blocking_the_loop() -> None:
    ctx = await asyncio.to_thread(context)
    release = threading.Event()

    @tool(timeout_s=0.3)
    def slow_sync(seconds: float) -> str:
        """Sleeps in a thread."""
        release.wait(seconds)
        return "late"

    @tool(timeout_s=0.3)
    async def slow_async(seconds: float) -> str:
        """Sleeps on the loop."""
        await asyncio.sleep(seconds)
        return "late"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    counting = asyncio.create_task(ticker())
    started = time.monotonic()
    results = await asyncio.gather(
        slow_sync.invoke('{"seconds": 5}', context=ctx), slow_async.invoke('{"seconds": 5}', context=ctx)
    )
    elapsed = time.monotonic() - started
    counting.cancel()
    release.set()
    for result, name in zip(results, ["slow_sync", "slow_async"], strict=True):
        assert result.status == "failed"
        assert json.loads(result.output) == {"error": f"{name} timed out after 0.3 s"}
        assert 250 <= result.duration_ms < 2000
    assert elapsed < 2.0
    assert ticks >= 10  # the loop kept running while the sync tool slept


def test_get_weather_reads_the_bundled_table() -> None:
    weather = registry.get("get_weather")
    assert weather is not None
    assert weather.handler(city="paris") == {
        "city": "Paris",
        "country": "France",
        "temperature_celsius": 18,
        "conditions": "sunny",
    }
    assert weather.handler(city="São Paulo")["temperature_celsius"] == 25
    with pytest.raises(ToolError, match="no weather known for 'Atlantis'"):
        weather.handler(city="Atlantis")


async def test_transfer_is_refused_on_web_calls_and_targets_are_normalised() -> None:
    ctx = await asyncio.to_thread(context)
    assert ctx.call.source == Call.Source.WEB
    result = await registry.get("transfer_call").invoke('{"target": "+1 555 123 4567"}', context=ctx)  # type: ignore[union-attr]
    assert result.status == "failed" and "phone calls only" in result.output
    assert transfer_target_uri("+1 (555) 123-4567") == "tel:+15551234567"
    assert transfer_target_uri("sip:desk@example.com") == "sip:desk@example.com"
    with pytest.raises(ToolError):
        transfer_target_uri("the manager")


def test_registry_and_toolbox_refuse_duplicate_names() -> None:
    first = make_tool(book_table)
    own = ToolRegistry([first])
    with pytest.raises(ValueError, match="registered already"):
        own.register(make_tool(book_table))
    box = Toolbox([first])
    assert not box.add(make_tool(book_table)) and box.names() == ["book_table"]
    with pytest.raises(ValueError, match="must match"):
        make_tool(book_table, name="weather.get")


async def test_get_current_time_understands_a_city_that_names_a_zone() -> None:
    ctx = await asyncio.to_thread(context)
    clock = registry.get("get_current_time")
    assert clock is not None
    result = await clock.invoke('{"timezone": "new york"}', context=ctx)
    assert result.ok and json.loads(result.output)["timezone"] == "America/New_York"
