"""The official `openai` SDK, pointed at the engine's base URL, as an independent client.

If these pass, code written against OpenAI's Realtime API (client secrets, WebRTC call creation, SIP
call control, webhook verification, the sideband connection with `call_id`) works against the
engine unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import openai
import pytest
from openai import AsyncOpenAI

from tests.engine.conftest import WEBHOOK_SECRET, RunningEngine, StartEngine, WebhookReceiver, make_offer


@pytest.fixture
async def client(engine: RunningEngine) -> AsyncIterator[AsyncOpenAI]:
    async with AsyncOpenAI(
        base_url=engine.base_url,
        api_key=engine.config.api_key,
        webhook_secret=WEBHOOK_SECRET,
        max_retries=0,
        timeout=10.0,
    ) as sdk:
        yield sdk


async def test_client_secrets_create(client: AsyncOpenAI) -> None:
    secret = await client.realtime.client_secrets.create(
        session={"type": "realtime", "instructions": "Say hi.", "audio": {"output": {"voice": "marin"}}},
        expires_after={"anchor": "created_at", "seconds": 120},
    )
    assert secret.value.startswith("ek_")
    assert secret.expires_at > 0
    assert secret.session.type == "realtime"
    assert secret.session.object == "realtime.session"
    assert secret.session.id.startswith("sess_")
    assert secret.session.instructions == "Say hi."


async def test_client_secret_with_a_bad_field_raises_bad_request_naming_it(client: AsyncOpenAI) -> None:
    bad_session: Any = {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "x"}}},
    }
    with pytest.raises(openai.BadRequestError) as raised:
        await client.realtime.client_secrets.create(session=bad_session)
    assert raised.value.param == "session.audio.input.turn_detection.threshold"


async def test_calls_create_answers_the_offer(client: AsyncOpenAI, engine: RunningEngine) -> None:
    raw = await client.realtime.calls.with_raw_response.create(
        sdp=await make_offer(), session={"type": "realtime", "instructions": "WebRTC via the SDK."}
    )
    assert raw.status_code == 201
    answer = raw.parse().text
    assert answer.startswith("v=0")
    call_id = raw.headers["location"].rsplit("/", 1)[-1]
    assert engine.state.calls.get(call_id).session["instructions"] == "WebRTC via the SDK."


async def test_calls_create_with_only_an_offer_sends_raw_sdp(client: AsyncOpenAI) -> None:
    # Without `session` the SDK posts the bare offer as application/sdp.
    raw = await client.realtime.calls.with_raw_response.create(sdp=await make_offer())
    assert raw.status_code == 201
    assert raw.headers["location"].startswith("/v1/realtime/calls/rtc_")


async def test_accept_then_hangup(client: AsyncOpenAI, engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    await client.realtime.calls.accept(call_id, type="realtime", instructions="Phone agent.")
    assert engine.state.calls.get(call_id).state == "active"
    await client.realtime.calls.hangup(call_id)
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.hangup(call_id)


async def test_reject(client: AsyncOpenAI, engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    await client.realtime.calls.reject(call_id, status_code=486)
    assert call.ended.is_set()
    with pytest.raises(openai.NotFoundError):
        await client.realtime.calls.accept(call_id, type="realtime")


async def test_refer(client: AsyncOpenAI, engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    await client.realtime.calls.accept(call_id, type="realtime")
    await client.realtime.calls.refer(call_id, target_uri="sip:desk@example.com")
    assert call.end_reason == "transferred"


async def test_sdk_errors_map_to_its_exception_classes(client: AsyncOpenAI, engine: RunningEngine) -> None:
    with pytest.raises(openai.NotFoundError) as not_found:
        await client.realtime.calls.hangup("rtc_ffffffffffffffffffffffff")
    assert not_found.value.code == "call_not_found"
    async with AsyncOpenAI(base_url=engine.base_url, api_key="sk-wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError) as unauthorized:
            await wrong.realtime.client_secrets.create()
    assert unauthorized.value.code == "invalid_api_key"


async def test_webhooks_unwrap_verifies_the_engines_webhook(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await start_engine(webhook_url=webhook_receiver.url)
    call_id = await engine.incoming_call(**{"from": "+15551112222"})
    received = await webhook_receiver.next()
    async with AsyncOpenAI(
        base_url=engine.base_url, api_key="sk-local", webhook_secret=WEBHOOK_SECRET
    ) as sdk:
        event = sdk.webhooks.unwrap(received.body, received.headers)
        assert event.type == "realtime.call.incoming"
        assert event.data.call_id == call_id
        assert any("+15551112222" in header.value for header in event.data.sip_headers)
        with pytest.raises(openai.InvalidWebhookSignatureError):
            sdk.webhooks.unwrap(received.body, received.headers, secret="whsec_" + "A" * 32)


async def test_realtime_connect_with_call_id_receives_the_calls_events(
    client: AsyncOpenAI, engine: RunningEngine
) -> None:
    call_id = await engine.incoming_call()
    async with client.realtime.connect(call_id=call_id) as connection:
        await client.realtime.calls.accept(call_id, type="realtime", instructions="Observed.")
        seen: dict[str, Any] = {}
        async with asyncio.timeout(5):
            async for event in connection:
                seen[event.type] = event
                if event.type == "session.created":
                    break
        assert seen["session.created"].session.instructions == "Observed."

        await connection.session.update(session={"type": "realtime", "instructions": "Steered."})
        async with asyncio.timeout(5):
            async for event in connection:
                if event.type == "session.updated":
                    assert event.session.type == "realtime"
                    assert event.session.instructions == "Steered."
                    break
    assert engine.state.calls.get(call_id).state == "active"  # closing the sideband leaves the call up
