"""The admin's "Hang up" action ends live calls through the lifecycle service."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.test import AsyncClient

from calls.admin import ADMIN_HANGUP_REASON
from calls.models import AgentProfile, Call
from realtime_local.call import LocalCall
from telephony.services import wait_for_answers
from tests.engine.conftest import RunningEngine
from tests.telephony.conftest import Captured, post_webhook

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

CHANGELIST = "/admin/calls/call/"


async def admin_client() -> AsyncClient:
    user = await sync_to_async(User.objects.create_superuser)("root", "root@example.com", "pw")
    client = AsyncClient()
    await client.aforce_login(user)
    return client


async def test_hang_up_ends_a_live_phone_call_and_leaves_finished_ones(
    signed_incoming_call: Callable[..., Awaitable[Captured]],
    phone_engine: RunningEngine,
    default_agent: AgentProfile,
) -> None:
    captured = await signed_incoming_call(**{"from": "+15551110000"})
    local = phone_engine.state.calls.get(captured.provider_call_id)
    assert isinstance(local, LocalCall)
    await post_webhook(captured.body, captured.webhook_headers)
    await wait_for_answers()
    live = await Call.objects.aget(provider_call_id=captured.provider_call_id)
    finished = await Call.objects.acreate(
        agent=default_agent, status=Call.Status.ENDED, end_reason="ended upstream", source=Call.Source.SIP
    )
    client = await admin_client()
    page = await client.get(CHANGELIST)
    assert b"Hang up selected live calls" in page.content
    response = await client.post(
        CHANGELIST, {"action": "hang_up", "_selected_action": [str(live.pk), str(finished.pk)]}, follow=True
    )
    assert response.status_code == 200
    assert b"Hung up 1 call." in response.content
    await asyncio.wait_for(local.ended.wait(), 5)
    live = await Call.objects.aget(pk=live.pk)
    assert (live.status, live.end_reason) == ("ended", ADMIN_HANGUP_REASON)
    finished = await Call.objects.aget(pk=finished.pk)
    assert finished.end_reason == "ended upstream"


async def test_staff_without_permissions_get_no_hang_up_action(default_agent: AgentProfile) -> None:
    user = await sync_to_async(User.objects.create_user)("staff", password="pw", is_staff=True)
    client = AsyncClient()
    await client.aforce_login(user)
    response = await client.get(CHANGELIST)
    assert response.status_code == 403
