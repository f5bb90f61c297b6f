"""The observer against a scripted sideband: garbage, unknown events and awkward orders on the wire.

A real WebSocket server on loopback plays a fixed script (the product's settings point at it), so the
cases the engine never produces are exercised: messages that are not JSON objects, binary frames,
event types the API may add, a known event with the wrong shape, transcription deltas before their
item, and a barge-in (cleared → response.done cancelled → item truncated → retrieved).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from pytest_django.fixtures import Settings as SettingsWrapper
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from calls.models import Call, Event, TranscriptTurn
from calls.observer.worker import pool
from tests.factories import AgentProfileFactory, StaffUserFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

PROVIDER_CALL_ID = "rtc_scripted000001"
USAGE = {
    "total_tokens": 30,
    "input_tokens": 10,
    "output_tokens": 20,
    "input_token_details": {"text_tokens": 10},
}


def ev(event_type: str, n: int, **fields: Any) -> str:
    return json.dumps({"type": event_type, "event_id": f"event_{n:04d}", **fields})


SCRIPT: list[str | bytes] = [
    ev("session.created", 1, session={"instructions": "Answer briefly.", "tools": []}),
    "not json {",
    "[1, 2, 3]",
    b"\x00\x01binary",
    ev("brand.new.event", 2, detail={"x": 1}),
    ev("response.done", 3, response="not an object"),
    # Input transcription partials may come before the user item is announced.
    ev("input_audio_buffer.speech_started", 4, item_id="item_user1", audio_start_ms=0),
    ev("conversation.item.input_audio_transcription.delta", 5, item_id="item_user1", delta="hel"),
    ev("input_audio_buffer.speech_stopped", 6, item_id="item_user1"),
    ev(
        "conversation.item.added",
        7,
        item={"id": "item_user1", "type": "message", "role": "user", "content": [{"type": "input_audio"}]},
    ),
    ev("conversation.item.input_audio_transcription.completed", 8, item_id="item_user1", transcript="hello"),
    ev("response.created", 9, response={"id": "resp_1", "status": "in_progress"}),
    ev("response.output_item.added", 10, item={"id": "item_asst1", "type": "message", "role": "assistant"}),
    ev("response.output_audio_transcript.delta", 11, item_id="item_asst1", delta="Hi there. "),
    ev("response.output_audio_transcript.delta", 12, item_id="item_asst1", delta="How can I help"),
    # Barge-in: the user speaks over the answer.
    ev("input_audio_buffer.speech_started", 13, item_id="item_user2", audio_start_ms=900),
    ev("output_audio_buffer.cleared", 14, response_id="resp_1"),
    ev(
        "response.done",
        15,
        response={
            "id": "resp_1",
            "status": "cancelled",
            "output": [{"id": "item_asst1", "type": "message", "role": "assistant", "status": "incomplete"}],
            "usage": USAGE,
        },
    ),
    ev("conversation.item.truncated", 16, item_id="item_asst1", content_index=0, audio_end_ms=700),
]
RETRIEVED = ev(
    "conversation.item.retrieved",
    17,
    item={
        "id": "item_asst1",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": "Hi there."}],
    },
)


class ScriptedSideband:
    """Plays SCRIPT to the first connection, answers a retrieve, closes; later upgrades get 404."""

    def __init__(self) -> None:
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.authorization: str | None = None

    def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.authorization = request.headers.get("Authorization")
        if self.connections >= 1:  # the call is over: as the API answers for a finished call
            body = b'{"error": {"message": "call not found", "type": "invalid_request_error"}}'
            return Response(404, "Not Found", Headers({"Content-Type": "application/json"}), body)
        return None

    async def handler(self, connection: ServerConnection) -> None:
        self.connections += 1
        for message in SCRIPT:
            await connection.send(message)
        async with asyncio.timeout(5):
            while True:
                event = json.loads(await connection.recv())
                self.received.append(event)
                if event.get("type") == "conversation.item.retrieve":
                    await connection.send(RETRIEVED)
                    break
        await connection.close(1000, "call ended")


@pytest.fixture
async def scripted(settings: SettingsWrapper, channel_layer: Any) -> AsyncIterator[ScriptedSideband]:
    sideband = ScriptedSideband()
    server: Server = await serve(sideband.handler, "127.0.0.1", 0, process_request=sideband.process_request)
    port = server.sockets[0].getsockname()[1]
    settings.REALTIME_BASE_URL = f"http://127.0.0.1:{port}/v1"
    settings.REALTIME_API_KEY = "sk-scripted"
    yield sideband
    server.close()
    await server.wait_closed()


async def test_every_message_is_stored_in_order_whatever_its_shape(scripted: ScriptedSideband) -> None:
    call = await _connecting_call()
    observer = pool.start(call.id, backoff_initial=0.05, stop_grace=0.2)
    await asyncio.wait_for(observer.finished.wait(), 15)

    events = [event async for event in Event.objects.filter(call=call).order_by("sequence")]
    assert [event.sequence for event in events] == list(range(1, len(SCRIPT) + 2))
    assert [event.type for event in events[:7]] == [
        "session.created",
        "voiceagent.malformed",
        "voiceagent.malformed",
        "voiceagent.malformed",
        "brand.new.event",
        "response.done",
        "input_audio_buffer.speech_started",
    ]
    assert events[1].payload["raw"] == "not json {"
    assert events[2].payload["raw"] == "[1, 2, 3]"
    assert events[3].payload["reason"] == "binary message"
    assert events[4].payload == json.loads(SCRIPT[4])  # stored as received
    assert events[-1].type == "conversation.item.retrieved"
    assert scripted.authorization == "Bearer sk-scripted"

    call = await Call.objects.aget(pk=call.pk)
    assert (call.status, call.end_reason) == (Call.Status.ENDED, "ended upstream")
    # Answered when the sideband attached: at or before the first event it brought.
    assert call.answered_at is not None and call.answered_at <= events[0].received_at
    assert call.usage == {**USAGE, "responses": 1}  # the malformed response.done counted nothing


async def test_turns_tolerate_early_deltas_and_a_barge_in_keeps_what_was_heard(
    scripted: ScriptedSideband,
) -> None:
    call = await _connecting_call()
    observer = pool.start(call.id, backoff_initial=0.05, stop_grace=0.2)
    await asyncio.wait_for(observer.finished.wait(), 15)

    assert {"type": "conversation.item.retrieve", "item_id": "item_asst1"} in scripted.received
    turns = [turn async for turn in TranscriptTurn.objects.filter(call=call).order_by("started_at", "id")]
    assert [(turn.item_id, turn.role, turn.text, turn.interrupted) for turn in turns] == [
        ("item_user1", "user", "hello", False),
        ("item_asst1", "assistant", "Hi there.", True),
    ]
    started = await Event.objects.aget(call=call, type="input_audio_buffer.speech_started", sequence=7)
    assert turns[0].started_at == started.received_at  # from speech start, not from the late item


async def _connecting_call() -> Call:
    agent = await sync_to_async(AgentProfileFactory.create)(instructions="Answer briefly.")
    user = await sync_to_async(StaffUserFactory.create)()
    return await Call.objects.acreate(
        provider_call_id=PROVIDER_CALL_ID, user=user, agent=agent, status=Call.Status.CONNECTING
    )
