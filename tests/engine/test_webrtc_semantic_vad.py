"""semantic_vad over real WebRTC: an aiortc client speaks espeak-ng into the engine with
`turn_detection: {"type": "semantic_vad", ...}` and gets the normal spoken-turn events.

Loads the offline speech stack (once per test session). Latency is measured by
bench/voice_latency.py, never asserted here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest

from realtime_local.call import EngineRuntime
from tests.engine.fixtures_media import (
    RATE,
    ServedEngine,
    connected_client,
    espeak,
    serve_engine,
    speech_stack,  # noqa: F401 - the session-scoped fixture, used by name below
)

pytestmark = [pytest.mark.speech, pytest.mark.timeout(120)]


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), dtype=np.int16)


def trimmed(text: str) -> np.ndarray:
    """espeak speech at 48 kHz without its own leading/trailing silence."""
    pcm = espeak(text)
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > 600)
    return pcm[loud[0] : loud[-1] + 1]


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture
async def speech_engine(speech_stack: Any) -> AsyncIterator[ServedEngine]:  # noqa: F811
    async with serve_engine(EngineRuntime(speech=speech_stack, loopback_candidates=True)) as engine:
        yield engine


async def test_semantic_vad_turn_gets_the_normal_spoken_turn_events(speech_engine: ServedEngine) -> None:
    session = {
        "type": "realtime",
        "instructions": "Be helpful.",
        "audio": {"input": {"turn_detection": {"type": "semantic_vad", "eagerness": "high"}}},
    }
    async with connected_client(speech_engine, session) as (client, _, _):
        created = await client.wait_for("session.created")
        assert created["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        question = trimmed("What time does the library open on Sunday")
        client.mic.say(np.concatenate([silence(1.0), question, silence(1.5)]))

        started = await client.wait_for("input_audio_buffer.speech_started", timeout=15)
        stopped = await client.wait_for("input_audio_buffer.speech_stopped", timeout=15)
        assert stopped["item_id"] == started["item_id"]
        # audio_end_ms is the end of speech, not the end of the wait (the mic may start a bit late)
        spoken_ms = len(question) * 1000 // RATE
        assert spoken_ms - 300 <= stopped["audio_end_ms"] - started["audio_start_ms"] <= spoken_ms + 300
        completed = await client.wait_for("conversation.item.input_audio_transcription.completed", timeout=40)
        assert {"library", "open", "sunday"} <= words(completed["transcript"]), completed["transcript"]
        done = await client.wait_for("response.done", timeout=45)
        assert done["response"]["status"] == "completed"
        await client.wait_for("output_audio_buffer.stopped", timeout=30)

        types = client.types()
        order = [
            "input_audio_buffer.speech_started",
            "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed",
            "conversation.item.added",
            "response.created",
            "response.output_item.added",
            "output_audio_buffer.started",
            "response.output_audio_transcript.done",
            "response.done",
            "output_audio_buffer.stopped",
        ]
        positions = [types.index(t) for t in order]
        assert positions == sorted(positions), list(zip(order, positions, strict=True))
        assert types.count("input_audio_buffer.speech_stopped") == 1


async def test_session_update_to_semantic_vad_low_holds_a_trailing_turn_and_honours_create_response(
    speech_engine: ServedEngine,
) -> None:
    async with connected_client(speech_engine, {"type": "realtime"}) as (client, _, _):
        await client.wait_for("session.created")
        client.send(
            {
                "type": "session.update",
                "session": {
                    "type": "realtime",
                    "audio": {
                        "input": {
                            "turn_detection": {
                                "type": "semantic_vad",
                                "eagerness": "low",
                                "create_response": False,
                            }
                        }
                    },
                },
            }
        )
        updated = await client.wait_for("session.updated")
        assert updated["session"]["audio"]["input"]["turn_detection"]["type"] == "semantic_vad"
        # 1.5 s after "and": low eagerness waits 2 s for a trailing turn (a complete one: 400 ms);
        # server VAD (500 ms) or any fixed wait short enough for conversation ends the turn there
        first, second = trimmed("I would like a table for two and"), trimmed("a bottle of water please")
        client.mic.say(np.concatenate([silence(0.8), first, silence(1.5), second, silence(2.0)]))

        completed = await client.wait_for("conversation.item.input_audio_transcription.completed", timeout=40)
        heard = words(completed["transcript"])
        assert {"table", "water"} <= heard, completed["transcript"]
        await asyncio.sleep(1.5)
        types = client.types()
        assert types.count("input_audio_buffer.speech_stopped") == 1, types
        assert types.count("input_audio_buffer.committed") == 1
        assert "response.created" not in types  # create_response: false
