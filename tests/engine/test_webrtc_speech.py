"""Spoken turns over real WebRTC: an aiortc client plays espeak-ng speech into the engine's HTTP
endpoint and records what comes back. Loads the offline speech stack (once per test session).

Figures (offer->answer time, turn latency) are logged, never asserted: bench/ measures speed.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from realtime_local.call import EngineRuntime
from tests.engine.fixtures_media import (
    RealtimeTestClient,
    ServedEngine,
    connected_client,
    espeak,
    rms,
    serve_engine,
    speech_stack,  # noqa: F401 - the session-scoped fixture, used by name below
    to_16k,
)

pytestmark = [pytest.mark.speech, pytest.mark.timeout(120)]
logger = logging.getLogger(__name__)
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
SILENCE_1S = np.zeros(48_000, dtype=np.int16)


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", text.lower()))


@pytest.fixture
async def speech_engine(speech_stack: Any) -> AsyncIterator[ServedEngine]:  # noqa: F811
    async with serve_engine(EngineRuntime(speech=speech_stack, loopback_candidates=True)) as engine:
        yield engine


@pytest.fixture
async def call(speech_engine: ServedEngine) -> AsyncIterator[tuple[RealtimeTestClient, str, float]]:
    async with connected_client(speech_engine, {"type": "realtime", "instructions": "Be helpful."}) as conn:
        yield conn


async def test_spoken_question_gets_a_spoken_answer(
    call: tuple[RealtimeTestClient, str, float],
    speech_stack: Any,  # noqa: F811
) -> None:
    client, _, answer_ms = call
    question = "What time does the library open on Sunday"
    client.mic.say(np.concatenate([SILENCE_1S, espeak(question), SILENCE_1S]))

    started = await client.wait_for("input_audio_buffer.speech_started", timeout=15)
    stopped = await client.wait_for("input_audio_buffer.speech_stopped", timeout=15)
    assert stopped["item_id"] == started["item_id"]
    assert 700 <= started["audio_start_ms"] <= 1600  # ~1 s of silence came first
    committed = await client.wait_for("input_audio_buffer.committed", timeout=5)
    assert committed["item_id"] == started["item_id"]
    completed = await client.wait_for("conversation.item.input_audio_transcription.completed", timeout=40)
    heard = words(completed["transcript"])
    deltas = [
        e
        for e in client.events
        if e["type"] == "conversation.item.input_audio_transcription.delta"
        and e["item_id"] == started["item_id"]
    ]
    assert deltas and all(e["delta"] for e in deltas)
    assert {"library", "open", "sunday"} <= heard, completed["transcript"]
    first_audio_index = len(client.received)
    done = await client.wait_for("response.done", timeout=45)
    await client.wait_for("output_audio_buffer.stopped", timeout=30)
    response = done["response"]
    assert response["status"] == "completed"
    message = response["output"][0]
    transcript = message["content"][0]["transcript"]
    assert {"library", "open", "sunday"} <= words(transcript), transcript

    # order of one spoken turn (protocol.md §6)
    types = client.types()
    order = [
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.added",
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "output_audio_buffer.started",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.done",
        "output_audio_buffer.stopped",
    ]
    positions = [types.index(t) for t in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))
    assert types.index("conversation.item.input_audio_transcription.completed") > types.index(
        "input_audio_buffer.committed"
    )

    # what the client heard: not silent, and it says the transcript
    await asyncio.sleep(0.3)
    audio = client.audio(first_audio_index)
    assert rms(audio) > 300
    spoken_back = await asyncio.to_thread(speech_stack.transcriber.transcribe, to_16k(audio))
    overlap = words(spoken_back) & words(transcript)
    assert len(overlap) >= 0.6 * len(words(transcript)), (spoken_back, transcript)
    for event in client.events:
        SERVER_EVENT.validate_python(event)
    started_playing = await client.wait_for("output_audio_buffer.started")
    created = await client.wait_for("response.created")
    logger.info(
        "offer->answer %.1f ms; after speech_stopped (client side): transcription.completed %.0f ms, "
        "response.created %.0f ms, output_audio_buffer.started %.0f ms",
        answer_ms,
        client.seconds_between(stopped, completed) * 1000,
        client.seconds_between(stopped, created) * 1000,
        client.seconds_between(stopped, started_playing) * 1000,
    )


async def test_barge_in_truncates_the_assistant_item_at_what_was_played(
    call: tuple[RealtimeTestClient, str, float],
) -> None:
    client, _, _ = call
    client.mic.say(np.concatenate([SILENCE_1S, espeak("Please tell me a long story"), SILENCE_1S]))
    playing = await client.wait_for("output_audio_buffer.started", timeout=45)
    response_id = playing["response_id"]
    await asyncio.sleep(2.5)
    mark = len(client.events)
    client.mic.say(espeak("Wait, stop there"))

    await client.wait_for("input_audio_buffer.speech_started", after=mark, timeout=10)
    cleared = await client.wait_for("output_audio_buffer.cleared", after=mark, timeout=5)
    assert cleared["response_id"] == response_id
    done = await client.wait_for("response.done", lambda e: e["response"]["id"] == response_id, timeout=5)
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "turn_detected"
    truncated = await client.wait_for("conversation.item.truncated", after=mark, timeout=5)
    item_id = done["response"]["output"][0]["id"]
    assert truncated["item_id"] == item_id
    assert 2000 <= truncated["audio_end_ms"] <= 6000, truncated

    full = " ".join(
        e["delta"]
        for e in client.events
        if e["type"] == "response.output_audio_transcript.delta" and e["response_id"] == response_id
    )
    client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = await client.wait_for("conversation.item.retrieved", after=mark, timeout=5)
    kept = retrieved["item"]["content"][0]["transcript"]
    assert kept and kept.split()[0] == "Once"
    assert (
        len(kept)
        < len("Once upon a time, in a small town by the sea, there lived an old lighthouse keeper.") * 2
    )
    assert len(kept) <= len(full)
    assert "output_audio_buffer.stopped" not in [
        e["type"] for e in client.events[mark:] if e.get("response_id") == response_id
    ]
    for event in client.events:
        SERVER_EVENT.validate_python(event)
