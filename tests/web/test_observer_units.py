"""Pure parts of the observer: usage sums, transcript assembly edge cases, the session guard's diff."""

from __future__ import annotations

import datetime as dt
from typing import Any

from calls.observer.events import SessionEvent, parse_server_event
from calls.observer.observer import session_differences
from calls.observer.transcript import TranscriptAssembler, add_usage

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


def feed(assembler: TranscriptAssembler, *events: dict[str, Any]) -> None:
    for n, payload in enumerate(events):
        event = parse_server_event(payload)
        assert event is not None, payload
        assembler.apply(event, at(n))


def test_usage_sums_every_numeric_leaf_across_responses() -> None:
    first = {"total_tokens": 10, "input_token_details": {"audio_tokens": 4, "cached": True}, "note": "x"}
    second = {"total_tokens": 5, "input_token_details": {"audio_tokens": 1}, "output_tokens": 3}
    assert add_usage(add_usage({}, first), second) == {
        "total_tokens": 15,
        "input_token_details": {"audio_tokens": 5},
        "output_tokens": 3,
    }


def test_text_output_makes_the_assistant_turn() -> None:
    assembler = TranscriptAssembler()
    feed(
        assembler,
        {"type": "response.output_text.delta", "item_id": "item_a", "delta": "Par"},
        {"type": "response.output_text.done", "item_id": "item_a", "text": "Paris."},
    )
    (turn,) = assembler.take_dirty()
    assert (turn.role, turn.text, turn.started_at, turn.ended_at) == ("assistant", "Paris.", at(0), at(1))
    assert assembler.take_dirty() == []  # handed once


def test_a_missed_transcript_is_recovered_from_response_done() -> None:
    assembler = TranscriptAssembler()
    feed(
        assembler,
        {
            "type": "response.done",
            "response": {
                "status": "completed",
                "output": [
                    {
                        "id": "item_b",
                        "type": "message",
                        "role": "assistant",
                        "content": [{"type": "output_audio", "transcript": "Hello."}],
                    },
                    {"id": "fc_1", "type": "function_call", "name": "get_time"},
                ],
                "usage": {"total_tokens": 7},
            },
        },
    )
    (turn,) = assembler.take_dirty()
    assert (turn.item_id, turn.text, turn.interrupted) == ("item_b", "Hello.", False)
    assert assembler.usage == {"total_tokens": 7, "responses": 1}


def test_a_cancelled_response_keeps_the_partial_words_as_an_interrupted_turn() -> None:
    assembler = TranscriptAssembler()
    feed(
        assembler,
        {"type": "response.output_audio_transcript.delta", "item_id": "item_c", "delta": "Well, "},
        {"type": "response.output_audio_transcript.delta", "item_id": "item_c", "delta": "the"},
        {
            "type": "response.done",
            "response": {"status": "cancelled", "output": [{"id": "item_c", "type": "message"}]},
        },
    )
    (turn,) = assembler.take_dirty()
    assert (turn.text, turn.interrupted, turn.started_at) == ("Well, the", True, at(0))


def session(**fields: Any) -> SessionEvent:
    event = parse_server_event({"type": "session.updated", "session": fields})
    assert isinstance(event, SessionEvent)
    return event


EXPECTED = {
    "instructions": "Be brief.",
    "tools": [{"type": "function", "name": "get_time", "parameters": {"type": "object"}}],
}


def test_the_guard_ignores_defaults_the_api_fills_in_and_fields_it_omits() -> None:
    filled = [{"type": "function", "name": "get_time", "parameters": {"type": "object"}, "description": ""}]
    assert session_differences(EXPECTED, session(instructions="Be brief.", tools=filled)) == {}
    assert session_differences(EXPECTED, session(voice="cedar")) == {}


def test_the_guard_reports_changed_instructions_and_tools() -> None:
    changed = session(instructions="Obey me.", tools=[])
    assert session_differences(EXPECTED, changed) == {
        "instructions": {"expected": "Be brief.", "received": "Obey me."},
        "tools": {"expected": EXPECTED["tools"], "received": []},
    }
