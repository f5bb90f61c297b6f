"""`realtime.call.incoming`: a verified delivery becomes one phone Call, accepted (or rejected) upstream
once, whatever the number of deliveries; the observer is asked to watch it and greets the caller."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import openai
import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from django.db import connection
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import AgentProfile, Call, Event, WebhookDelivery
from realtime_local.call import LocalCall
from telephony import services
from telephony.services import (
    END_REASON_CLOSED,
    END_REASON_MISSED,
    END_REASON_OVER_CAPACITY,
    Decision,
    answer_incoming_call,
    record_delivery,
    verify_webhook,
    wait_for_answers,
)
from tests.engine.conftest import WEBHOOK_SECRET, RunningEngine
from tests.factories import AgentProfileFactory
from tests.telephony.conftest import Captured, envelope, post_webhook, signed_headers
from tests.web.conftest import FakeUpstream, Respond

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

SignedIncomingCall = Callable[..., Awaitable[Captured]]
StartUpstream = Callable[[Respond], Awaitable[FakeUpstream]]
CALLER, CALLEE = "+15551110000", "+15552220000"


def engine_call(engine: RunningEngine, provider_call_id: str) -> LocalCall:
    call = engine.state.calls.get(provider_call_id)
    assert isinstance(call, LocalCall)
    return call


async def ok(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200)


def accepts(upstream: FakeUpstream) -> list[str]:
    return [seen.path for seen in upstream.seen if seen.path.endswith("/accept")]


def incoming(call_id: str = "rtc_fake000000000001", **extra: Any) -> bytes:
    headers = [
        {"name": "From", "value": f'"Ann" <sip:{CALLER}@trunk.example;user=phone>;tag=a1'},
        {"name": "To", "value": f"<sip:{CALLEE}@sip.api.openai.com>"},
        {"name": "Call-ID", "value": "abc@trunk.example"},
    ]
    return envelope(call_id=call_id, sip_headers=headers, **extra)


async def test_a_signed_incoming_call_is_recorded_accepted_and_observed(
    signed_incoming_call: SignedIncomingCall,
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
    observer_inbox: Callable[[], Awaitable[dict[str, Any]]],
) -> None:
    captured = await signed_incoming_call(**{"from": CALLER, "to": CALLEE})
    local = engine_call(phone_engine, captured.provider_call_id)
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert response.status_code == 200
    assert json.loads(response.content) == {"outcome": "accepted"}
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    assert (call.source, call.mode, call.transport) == ("sip", "phone", "sip")
    assert (call.caller_number, call.callee_number) == (CALLER, CALLEE)
    assert {h["name"] for h in call.sip_headers} >= {"From", "To", "Call-ID"}
    assert call.agent_id == default_agent.pk
    await asyncio.wait_for(local.accepted.wait(), 10)
    assert local.state == "active"
    assert local.session["instructions"] == default_agent.instructions
    message = await observer_inbox()
    assert message == {"type": "observe.start", "call_id": str(call.id), "reason": ""}
    delivery = await WebhookDelivery.objects.aget()
    assert (delivery.webhook_id, delivery.type, delivery.outcome, delivery.call_id) == (
        captured.webhook_headers["webhook-id"],
        "realtime.call.incoming",
        "accepted",
        call.id,
    )


async def test_the_engine_webhook_is_verified_by_the_openai_sdk(
    signed_incoming_call: SignedIncomingCall,
) -> None:
    captured = await signed_incoming_call(**{"from": CALLER})
    client = openai.OpenAI(
        api_key="sk-unused", webhook_secret=WEBHOOK_SECRET, base_url="http://127.0.0.1:9/v1"
    )
    event = client.webhooks.unwrap(captured.body.decode(), captured.webhook_headers)
    assert event.type == "realtime.call.incoming"
    assert event.data.call_id == captured.provider_call_id
    # … and by ours, on the same bytes.
    verified = verify_webhook(body=captured.body, headers=captured.webhook_headers)
    assert verified.event["data"]["call_id"] == captured.provider_call_id
    with pytest.raises(openai.InvalidWebhookSignatureError):
        client.webhooks.unwrap(captured.body.decode() + " ", captured.webhook_headers)


async def test_a_delivery_repeated_three_times_makes_one_call_and_one_accept(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    captured = await signed_incoming_call(**{"from": CALLER})
    outcomes = []
    for _ in range(3):
        response = await post_webhook(captured.body, captured.webhook_headers)
        assert response.status_code == 200
        outcomes.append(json.loads(response.content)["outcome"])
        await wait_for_answers()
    assert outcomes == ["accepted", "duplicate", "duplicate"]
    assert await Call.objects.acount() == 1
    assert await WebhookDelivery.objects.acount() == 1
    assert engine_call(phone_engine, captured.provider_call_id).state == "active"


async def test_concurrent_repeats_through_the_view_make_one_call_and_one_accept(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    upstream = await fake_upstream(ok)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    headers = signed_headers(body)
    responses = await asyncio.gather(*(post_webhook(body, headers) for _ in range(3)))
    await wait_for_answers()
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert sorted(json.loads(r.content)["outcome"] for r in responses) == [
        "accepted",
        "duplicate",
        "duplicate",
    ]
    assert await Call.objects.acount() == 1
    assert len(accepts(upstream)) == 1


async def test_deliveries_racing_on_separate_connections_make_one_call_and_one_accept(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    """Three threads, three database connections, released together: the unique webhook id decides
    (on PostgreSQL the losers wait on the winner's row lock, then get the IntegrityError)."""
    if connection.vendor == "sqlite" and "memory" in str(connection.settings_dict["NAME"]):
        pytest.skip("SQLite's shared in-memory test database fails concurrent writers; use PostgreSQL")
    upstream = await fake_upstream(ok)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    webhook = verify_webhook(body=body, headers=signed_headers(body))
    barrier = threading.Barrier(3)
    decisions: list[Decision] = []
    errors: list[BaseException] = []

    def deliver() -> None:
        try:
            barrier.wait(5)
            decisions.append(record_delivery(webhook=webhook))
        except BaseException as exc:  # reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=deliver) for _ in range(3)]
    for thread in threads:
        thread.start()

    def join_all() -> None:
        for thread in threads:
            thread.join(20)

    await asyncio.to_thread(join_all)
    assert errors == []
    winners = [d for d in decisions if not d.duplicate]
    assert len(decisions) == 3 and len(winners) == 1
    for decision in winners:  # what receive_webhook does with a decision that is not a repeat
        await answer_incoming_call(decision=decision)
    assert await Call.objects.acount() == 1
    assert await WebhookDelivery.objects.acount() == 1
    assert len(accepts(upstream)) == 1


async def test_the_same_call_under_a_new_webhook_id_is_not_answered_twice(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    upstream = await fake_upstream(ok)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    first = await post_webhook(body, signed_headers(body, webhook_id="evt_first0000000000000001"))
    second = await post_webhook(body, signed_headers(body, webhook_id="evt_second000000000000001"))
    await wait_for_answers()
    assert (first.status_code, second.status_code) == (200, 200)
    assert json.loads(second.content)["outcome"] == "duplicate"
    assert await Call.objects.acount() == 1
    assert len(accepts(upstream)) == 1


async def test_over_the_concurrent_call_limit_the_call_is_rejected_busy(
    signed_incoming_call: SignedIncomingCall,
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
    settings: SettingsWrapper,
) -> None:
    settings.TELEPHONY_MAX_CONCURRENT_CALLS = 1
    await Call.objects.acreate(
        source=Call.Source.SIP, mode=Call.Mode.PHONE, agent=default_agent, status=Call.Status.ACTIVE
    )
    captured = await signed_incoming_call(**{"from": CALLER})
    local = engine_call(phone_engine, captured.provider_call_id)
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert json.loads(response.content) == {"outcome": "rejected"}
    await asyncio.wait_for(local.ended.wait(), 10)
    assert local.end_reason == "rejected:486"
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    assert (call.status, call.end_reason) == ("rejected", END_REASON_OVER_CAPACITY)
    assert call.ended_at is not None


async def test_below_the_limit_the_call_is_accepted(
    signed_incoming_call: SignedIncomingCall,
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
    settings: SettingsWrapper,
) -> None:
    settings.TELEPHONY_MAX_CONCURRENT_CALLS = 1
    await Call.objects.acreate(
        source=Call.Source.SIP, mode=Call.Mode.PHONE, agent=default_agent, status=Call.Status.ENDED
    )
    captured = await signed_incoming_call()
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert json.loads(response.content) == {"outcome": "accepted"}


async def test_outside_business_hours_the_call_is_rejected_unavailable(
    signed_incoming_call: SignedIncomingCall,
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
    settings: SettingsWrapper,
) -> None:
    other_day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[(dt.datetime.now(dt.UTC).weekday() + 3) % 7]
    settings.TELEPHONY_BUSINESS_HOURS = f"{other_day} 09:00-17:00 UTC"
    captured = await signed_incoming_call()
    local = engine_call(phone_engine, captured.provider_call_id)
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert json.loads(response.content) == {"outcome": "rejected"}
    await asyncio.wait_for(local.ended.wait(), 10)
    assert local.end_reason == "rejected:480"
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    assert (call.status, call.end_reason) == ("rejected", END_REASON_CLOSED)


async def test_inside_business_hours_the_call_is_accepted(
    signed_incoming_call: SignedIncomingCall, default_agent: AgentProfile, settings: SettingsWrapper
) -> None:
    settings.TELEPHONY_BUSINESS_HOURS = "Mon-Sun 00:00-24:00 Europe/Paris"
    captured = await signed_incoming_call()
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert json.loads(response.content) == {"outcome": "accepted"}


async def test_a_caller_who_hung_up_before_the_accept_is_a_missed_call_not_a_failure(
    signed_incoming_call: SignedIncomingCall, phone_engine: RunningEngine, default_agent: AgentProfile
) -> None:
    captured = await signed_incoming_call(**{"from": CALLER})
    hung_up = await phone_engine.control(captured.provider_call_id, "hangup")
    assert hung_up.status_code == 200
    response = await post_webhook(captured.body, captured.webhook_headers)
    assert response.status_code == 200
    await wait_for_answers()
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    assert (call.status, call.end_reason, call.error) == ("ended", END_REASON_MISSED, "")
    assert call.ended_at is not None


async def test_an_accept_the_api_refuses_fails_the_call_and_the_delivery(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)

    await fake_upstream(broken)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    response = await post_webhook(body, signed_headers(body))
    await wait_for_answers()
    assert response.status_code == 200
    call = await Call.objects.aget()
    assert call.status == "failed" and "500" in call.error
    assert (await WebhookDelivery.objects.aget()).outcome == "failed"


async def test_the_dialled_number_chooses_the_agent(
    signed_incoming_call: SignedIncomingCall, default_agent: AgentProfile
) -> None:
    sales = await sync_to_async(AgentProfileFactory.create)(phone_numbers=["+1 (555) 222-0000"])
    captured = await signed_incoming_call(**{"from": CALLER, "to": CALLEE})
    await post_webhook(captured.body, captured.webhook_headers)
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    assert call.agent_id == sales.pk


async def test_other_event_types_are_stored_as_ignored_and_acknowledged(
    settings: SettingsWrapper, default_agent: AgentProfile
) -> None:
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = envelope("response.completed", id="resp_123")
    response = await post_webhook(body, signed_headers(body, webhook_id="evt_other000000000000001"))
    assert response.status_code == 200
    delivery = await WebhookDelivery.objects.aget()
    assert (delivery.type, delivery.outcome, delivery.call_id) == ("response.completed", "ignored", None)
    assert await Call.objects.acount() == 0


async def test_the_webhook_answers_before_the_accept_is_made(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    """A slow API does not hold the webhook's answer: the accept runs in the background."""
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200)

    upstream = await fake_upstream(slow)
    settings.REALTIME_HTTP_TIMEOUT = 10.0
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    response = await asyncio.wait_for(post_webhook(body, signed_headers(body)), 5)
    assert response.status_code == 200
    assert len(services._answering) == 1 and len(accepts(upstream)) <= 1
    release.set()
    await wait_for_answers()
    assert len(accepts(upstream)) == 1


async def test_the_observer_greets_a_phone_caller_once_accepted(
    signed_incoming_call: SignedIncomingCall,
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
    observer_worker: Any,
) -> None:
    captured = await signed_incoming_call(**{"from": CALLER})
    await post_webhook(captured.body, captured.webhook_headers)
    call = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    async with asyncio.timeout(15):
        while True:
            if await Event.objects.filter(call=call, type="response.created").aexists():
                break
            await asyncio.sleep(0.1)
    await phone_engine.control(captured.provider_call_id, "hangup")


async def test_the_accept_carries_the_agent_session_without_the_turn_detection_sip_refuses(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]],
    settings: SettingsWrapper,
    default_agent: AgentProfile,
) -> None:
    upstream = await fake_upstream(ok)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = incoming()
    await post_webhook(body, signed_headers(body))
    await wait_for_answers()
    [accept] = [seen for seen in upstream.seen if seen.path.endswith("/accept")]
    session = json.loads(accept.body)
    assert session["type"] == "realtime" and session["instructions"] == default_agent.instructions
    turn_detection = session["audio"]["input"]["turn_detection"]
    assert turn_detection["type"] == "server_vad"
    assert not {"threshold", "prefix_padding_ms", "silence_duration_ms"} & set(turn_detection)
