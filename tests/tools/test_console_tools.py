"""The console shows tool calls live: the transcript model turns the observer's voiceagent.tool.*
events into a "tool" turn (name, arguments, then output, status and duration). Runs the real module
in Node (it has no DOM dependencies); the browser e2e covers the page itself."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE = shutil.which("node")
MODULE = Path(__file__).resolve().parents[2] / "static" / "console" / "transcript.js"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run_model(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    script = f"""
        import {{ TranscriptModel }} from {json.dumps(MODULE.as_uri())};
        const model = new TranscriptModel();
        for (const event of {json.dumps(events)}) model.apply(event);
        console.log(JSON.stringify(model.turns));
    """
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    turns: list[dict[str, Any]] = json.loads(done.stdout)
    return turns


def test_a_tool_call_appears_when_it_starts_and_is_completed_with_its_output() -> None:
    started = {
        "type": "voiceagent.tool.started",
        "call_id": "call_1",
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    (running,) = run_model([started])
    assert running["role"] == "tool" and running["status"] == "running" and not running["final"]
    assert running["text"] == 'get_weather({"city":"Paris"})'

    finished = {
        "type": "voiceagent.tool.finished",
        "call_id": "call_1",
        "name": "get_weather",
        "status": "completed",
        "output": '{"city": "Paris", "conditions": "sunny"}',
        "duration_ms": 3,
    }
    (done,) = run_model([started, finished])
    assert done["final"] and done["status"] == "completed"
    assert done["text"] == 'get_weather({"city":"Paris"}) → {"city": "Paris", "conditions": "sunny"} (3 ms)'


def test_a_failed_tool_call_keeps_its_place_between_the_turns() -> None:
    user = {
        "type": "conversation.item.added",
        "item": {
            "type": "message",
            "id": "item_u",
            "role": "user",
            "content": [{"type": "input_text", "text": "Hi"}],
        },
    }
    failed = {
        "type": "voiceagent.tool.finished",
        "call_id": "call_2",
        "name": "get_current_time",
        "status": "failed",
        "output": '{"error": "unknown time zone"}',
    }
    turns = run_model([user, {**failed, "type": "voiceagent.tool.started", "arguments": {}}, failed])
    assert [turn["role"] for turn in turns] == ["user", "tool"]
    assert turns[1]["status"] == "failed" and "unknown time zone" in turns[1]["text"]
