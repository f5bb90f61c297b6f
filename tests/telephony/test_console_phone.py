"""The console's phone card: the line's number, live phone calls, and a staff hang-up button."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import AgentProfile, Call
from realtime_local.call import LocalCall
from telephony.services import STAFF_HANGUP_REASON, wait_for_answers
from tests.engine.conftest import RunningEngine
from tests.factories import StaffUserFactory, UserFactory
from tests.telephony.conftest import Captured, post_webhook

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def staff_client(*, enforce_csrf: bool = False) -> AsyncClient:
    client = AsyncClient(enforce_csrf_checks=enforce_csrf)
    await client.aforce_login(await sync_to_async(StaffUserFactory.create)())
    return client


async def live_phone_call(
    signed_incoming_call: Callable[..., Awaitable[Captured]], engine: RunningEngine
) -> tuple[Call, LocalCall]:
    captured = await signed_incoming_call(**{"from": "+15551110000", "to": "+15552220000"})
    local = engine.state.calls.get(captured.provider_call_id)
    assert isinstance(local, LocalCall)
    await post_webhook(captured.body, captured.webhook_headers)
    await wait_for_answers()
    return await Call.objects.aget(provider_call_id=captured.provider_call_id), local


async def test_the_console_says_where_to_call_when_from_number_is_set(
    settings: SettingsWrapper, default_agent: AgentProfile
) -> None:
    settings.FROM_NUMBER = "+15550009999"
    page = await (await staff_client()).get("/")
    assert b"Call the agent at" in page.content and b'href="tel:+15550009999"' in page.content


async def test_without_a_number_or_a_phone_call_there_is_no_phone_card(
    settings: SettingsWrapper, default_agent: AgentProfile
) -> None:
    settings.FROM_NUMBER = ""
    page = await (await staff_client()).get("/")
    assert page.status_code == 200 and b'data-testid="phone-line"' not in page.content


async def test_staff_hang_up_a_live_phone_call_from_the_console(
    signed_incoming_call: Callable[..., Awaitable[Captured]],
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
) -> None:
    call, local = await live_phone_call(signed_incoming_call, phone_engine)
    client = await staff_client()
    page = await client.get("/")
    assert b"+15551110000" in page.content and f"/telephony/calls/{call.pk}/hang-up".encode() in page.content
    response = await client.post(f"/telephony/calls/{call.pk}/hang-up")
    assert response.status_code == 302 and response["Location"] == "/"
    await asyncio.wait_for(local.ended.wait(), 5)
    call = await Call.objects.aget(pk=call.pk)
    assert (call.status, call.end_reason) == ("ended", STAFF_HANGUP_REASON)


async def test_the_hang_up_needs_staff_csrf_and_post(
    signed_incoming_call: Callable[..., Awaitable[Captured]],
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
) -> None:
    call, local = await live_phone_call(signed_incoming_call, phone_engine)
    url = f"/telephony/calls/{call.pk}/hang-up"
    anonymous = await AsyncClient().post(url)
    assert anonymous.status_code == 302 and "/accounts/login/" in anonymous["Location"]
    user = AsyncClient()
    await user.aforce_login(await sync_to_async(UserFactory.create)())
    assert (await user.post(url)).status_code == 403
    assert (await (await staff_client()).get(url)).status_code == 405
    assert (await (await staff_client(enforce_csrf=True)).post(url)).status_code == 403
    assert local.state == "active"
    assert (await Call.objects.aget(pk=call.pk)).status in ("connecting", "active")
