"""`transfer_call`: only to a target on the agent's allow-list, only for a live phone call."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async

from calls.models import AgentProfile, Call
from realtime_local.call import LocalCall
from telephony.services import (
    TransferError,
    TransferNotAllowed,
    normalize_transfer_target,
    transfer_call,
    wait_for_answers,
)
from tests.engine.conftest import RunningEngine
from tests.telephony.conftest import Captured, post_webhook

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SignedIncomingCall = Callable[..., Awaitable[Captured]]


async def live_phone_call(
    signed_incoming_call: SignedIncomingCall, engine: RunningEngine, agent: AgentProfile, targets: list[str]
) -> tuple[Call, LocalCall]:
    agent.transfer_targets = targets
    await agent.asave(update_fields=["transfer_targets"])
    captured = await signed_incoming_call(**{"from": "+15551110000"})
    local = engine.state.calls.get(captured.provider_call_id)
    assert isinstance(local, LocalCall)
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert response.status_code == 200
    await wait_for_answers()
    assert local.state == "active"
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    return call, local


async def test_a_call_is_transferred_to_an_allowed_number(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    call, local = await live_phone_call(
        signed_incoming_call, phone_engine, default_agent, ["+1 555 333 4444"]
    )
    result = await transfer_call(call=call, target_uri="tel:+15553334444")
    assert result.status == "transferred"
    assert local.refer_target == "tel:+15553334444"
    await asyncio.wait_for(local.ended.wait(), 5)
    stored = await Call.objects.aget(pk=call.pk)
    assert (stored.status, stored.end_reason) == ("transferred", "transferred to tel:+15553334444")
    assert stored.ended_at is not None


async def test_a_sip_uri_on_the_list_is_allowed(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    call, local = await live_phone_call(
        signed_incoming_call, phone_engine, default_agent, ["sip:desk@pbx.example.com"]
    )
    await transfer_call(call=call, target_uri="sip:desk@pbx.example.com")
    assert local.refer_target == "sip:desk@pbx.example.com"


async def test_a_target_not_on_the_list_is_refused_and_nothing_is_sent(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    call, local = await live_phone_call(signed_incoming_call, phone_engine, default_agent, ["+15553334444"])
    with pytest.raises(TransferNotAllowed) as refused:
        await transfer_call(call=call, target_uri="+19005550000")
    assert refused.value.code == "not_allowed"
    assert local.state == "active" and local.refer_target is None
    assert (await Call.objects.aget(pk=call.pk)).status == call.status


async def test_with_an_empty_list_nothing_can_be_transferred(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    call, local = await live_phone_call(signed_incoming_call, phone_engine, default_agent, [])
    with pytest.raises(TransferNotAllowed):
        await transfer_call(call=call, target_uri="+15553334444")
    assert local.refer_target is None


async def test_a_web_call_or_a_finished_call_cannot_be_transferred(default_agent: AgentProfile) -> None:
    web = await Call.objects.acreate(agent=default_agent, provider_call_id="rtc_web0000000001")
    with pytest.raises(TransferError) as not_phone:
        await transfer_call(call=web, target_uri="+15553334444")
    assert not_phone.value.code == "not_phone"
    ended = await Call.objects.acreate(
        agent=default_agent,
        source=Call.Source.SIP,
        status=Call.Status.ENDED,
        provider_call_id="rtc_sip0000000001",
    )
    with pytest.raises(TransferError) as not_live:
        await transfer_call(call=ended, target_uri="+15553334444")
    assert not_live.value.code == "not_live"


@pytest.mark.parametrize(
    ("given", "normalized"),
    [
        ("+1 (555) 333-4444", "tel:+15553334444"),
        ("tel:+1-555-333-4444", "tel:+15553334444"),
        ("SIP:desk@pbx.example.com", "sip:desk@pbx.example.com"),
        ("sips:desk@pbx.example.com;transport=tls", "sips:desk@pbx.example.com;transport=tls"),
    ],
)
def test_targets_are_normalized(given: str, normalized: str) -> None:
    assert normalize_transfer_target(given) == normalized


@pytest.mark.parametrize("given", ["", "desk", "http://evil.example", "tel:", "sip:<x>", "+1 555 abc"])
def test_malformed_targets_are_refused(given: str) -> None:
    with pytest.raises(TransferError) as refused:
        normalize_transfer_target(given)
    assert refused.value.code == "invalid_target"


async def test_malformed_allow_list_entries_are_ignored(default_agent: AgentProfile) -> None:
    from telephony.services import allowed_transfer_targets

    default_agent.transfer_targets = ["not a number", "+15553334444", 42]
    assert await sync_to_async(allowed_transfer_targets)(default_agent) == ["tel:+15553334444"]
