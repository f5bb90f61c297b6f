"""Client-driven audio turns (turn detection off): `input_audio_buffer.append` with base64 PCM16 at
24 kHz (the sideband/non-WebRTC input path), `commit`, `clear`, then client-side playback control:
`output_audio_buffer.clear` and `conversation.item.truncate`. Uses the real speech stack."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from openai.types.realtime.realtime_server_event import RealtimeServerEvent
from pydantic import TypeAdapter

from realtime_local.call import EngineRuntime
from tests.engine.fixtures_media import (
    RealtimeTestClient,
    ServedEngine,
    connected_client,
    espeak,
    serve_engine,
    speech_stack,  # noqa: F401 - the session-scoped fixture, used by name below
)

pytestmark = [pytest.mark.speech, pytest.mark.timeout(90)]
SERVER_EVENT: TypeAdapter[Any] = TypeAdapter(RealtimeServerEvent)
MANUAL = {"type": "realtime", "audio": {"input": {"turn_detection": None}}}


@pytest.fixture
async def client(speech_stack: Any) -> AsyncIterator[RealtimeTestClient]:  # noqa: F811
    engine: ServedEngine
    async with (
        serve_engine(EngineRuntime(speech=speech_stack, loopback_candidates=True)) as engine,
        connected_client(engine, MANUAL) as (client, _, _),
    ):
        # The appended audio is the only input: the microphone track's silence would otherwise be
        # buffered between the appended chunks as they arrive (on a loaded box, garbling the speech).
        client.mic.hold()
        yield client


def append_speech(client: RealtimeTestClient, text: str) -> None:
    """Send `text` spoken, as 24 kHz PCM16 in 100 ms base64 chunks."""
    pcm = espeak(text, rate=24_000)
    for i in range(0, len(pcm), 2400):
        client.send(
            {
                "type": "input_audio_buffer.append",
                "audio": base64.b64encode(pcm[i : i + 2400].tobytes()).decode(),
            }
        )


async def test_appended_audio_is_committed_transcribed_and_answered_on_request(
    client: RealtimeTestClient,
) -> None:
    start = len(client.events)
    client.send({"type": "input_audio_buffer.commit", "event_id": "evt_empty"})
    error = await client.wait_for("error", after=start)
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"

    append_speech(client, "Please tell me a long story")
    await asyncio.sleep(0.5)
    client.send({"type": "input_audio_buffer.commit"})
    committed = await client.wait_for("input_audio_buffer.committed", after=start)
    completed = await client.wait_for("conversation.item.input_audio_transcription.completed", after=start)
    assert completed["item_id"] == committed["item_id"]
    assert "story" in completed["transcript"].lower()
    await asyncio.sleep(0.5)
    assert "response.created" not in client.types()[start:]  # no server VAD: no automatic response

    client.send({"type": "response.create"})
    playing = await client.wait_for("output_audio_buffer.started", after=start)
    await asyncio.sleep(1.5)
    client.send({"type": "response.cancel"})
    done = await client.wait_for("response.done", after=start)
    assert done["response"]["status"] == "cancelled"
    assert done["response"]["status_details"]["reason"] == "client_cancelled"
    client.send({"type": "output_audio_buffer.clear"})
    cleared = await client.wait_for("output_audio_buffer.cleared", after=start)
    assert cleared["response_id"] == playing["response_id"]
    await asyncio.sleep(0.3)
    assert "output_audio_buffer.stopped" not in client.types()[start:]  # cleared, not played out

    item_id = done["response"]["output"][0]["id"]
    client.send(
        {"type": "conversation.item.truncate", "item_id": item_id, "content_index": 0, "audio_end_ms": 1000}
    )
    truncated = await client.wait_for("conversation.item.truncated", after=start)
    assert truncated["audio_end_ms"] == 1000
    client.send({"type": "conversation.item.retrieve", "item_id": item_id})
    retrieved = await client.wait_for("conversation.item.retrieved", after=start)
    kept = retrieved["item"]["content"][0]["transcript"]
    assert 0 < len(kept.split()) <= 4, kept  # about one second of speech
    client.send(
        {
            "type": "conversation.item.truncate",
            "item_id": item_id,
            "content_index": 0,
            "audio_end_ms": 600_000,
            "event_id": "evt_too_long",
        }
    )
    error = await client.wait_for("error", lambda e: e["error"]["event_id"] == "evt_too_long", after=start)
    assert error["error"]["param"] == "audio_end_ms"
    for event in client.events:
        SERVER_EVENT.validate_python(event)


async def test_clear_drops_appended_audio(client: RealtimeTestClient) -> None:
    start = len(client.events)
    append_speech(client, "hello there")
    client.send({"type": "input_audio_buffer.clear"})
    await client.wait_for("input_audio_buffer.cleared", after=start)
    client.send({"type": "input_audio_buffer.commit"})
    error = await client.wait_for("error", after=start)
    assert error["error"]["code"] == "input_audio_buffer_commit_empty"


async def test_text_modality_answers_in_text_even_with_speech_loaded(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send({"type": "session.update", "session": {"output_modalities": ["text"]}})
    await client.wait_for("session.updated", after=start)
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hello there"}],
            },
        }
    )
    client.send({"type": "response.create"})
    done = await client.wait_for("response.done", after=start)
    assert done["response"]["output_modalities"] == ["text"]
    assert done["response"]["output"][0]["content"][0]["type"] == "output_text"
    types = client.types()[start:]
    assert "response.output_text.delta" in types
    assert (
        "output_audio_buffer.started" not in types and "response.output_audio_transcript.delta" not in types
    )
