"""Agent profiles choose their built-in tools: the admin offers the registered ones as checkboxes,
refuses unknown names, and the session config of the next call carries their function specs."""

from __future__ import annotations

import asyncio
import json

import pytest
from django.test import Client

from calls.models import AgentProfile, Call
from calls.services.session_config import build_session_config
from calls.tools import ToolContext, registry
from tests.factories import AgentProfileFactory, CallFactory

pytestmark = pytest.mark.django_db


def change_form(profile: AgentProfile, **overrides: object) -> dict[str, object]:
    return {
        "name": profile.name,
        "instructions": profile.instructions,
        "voice": profile.voice,
        "model": profile.model,
        "turn_detection": "null",
        **overrides,
    }


def test_the_admin_offers_registered_tools_and_saves_the_ticked_ones(admin_client: Client) -> None:
    profile = AgentProfileFactory.create(tools=[])
    url = f"/admin/calls/agentprofile/{profile.pk}/change/"
    page = admin_client.get(url).content.decode()
    for name in registry.names():
        assert f'value="{name}"' in page
    response = admin_client.post(url, change_form(profile, tools=["get_weather", "end_call"]))
    assert response.status_code == 302, response.content.decode()[:2000]
    profile.refresh_from_db()
    assert profile.tools == ["get_weather", "end_call"]


def test_the_admin_refuses_a_tool_that_is_not_registered(admin_client: Client) -> None:
    profile = AgentProfileFactory.create(tools=["get_weather"])
    response = admin_client.post(
        f"/admin/calls/agentprofile/{profile.pk}/change/", change_form(profile, tools=["rm_rf"])
    )
    assert response.status_code == 200
    assert "rm_rf is not one of the available choices" in response.content.decode()
    profile.refresh_from_db()
    assert profile.tools == ["get_weather"]


def test_the_session_config_carries_the_profiles_tools_and_follows_changes() -> None:
    profile = AgentProfileFactory.create(tools=["get_weather"])
    config = build_session_config(profile, mode=Call.Mode.AUDIO)
    assert config["tools"] == [registry.get("get_weather").function_spec()]  # type: ignore[union-attr]
    assert config["tools"][0]["parameters"]["required"] == ["city"]
    profile.tools = ["get_current_time", "no_longer_registered"]
    profile.save()
    phone = build_session_config(AgentProfile.objects.get(pk=profile.pk), mode=Call.Mode.PHONE)
    assert [spec["name"] for spec in phone["tools"]] == ["get_current_time"]


@pytest.mark.django_db(transaction=True)
async def test_transfer_call_passes_on_the_telephony_refusal() -> None:
    services = pytest.importorskip("telephony.services")
    if not hasattr(services, "transfer_call"):
        pytest.skip("telephony has no transfer service in this tree")
    call = await asyncio.to_thread(
        CallFactory.create,
        source=Call.Source.SIP,
        mode=Call.Mode.PHONE,
        status=Call.Status.ACTIVE,
        provider_call_id="rtc_transfer_test",
    )
    transfer = registry.get("transfer_call")
    assert transfer is not None
    result = await transfer.invoke('{"target": "+1 555 000 1111"}', context=ToolContext(call=call))
    assert result.status == "failed"
    assert json.loads(result.output)["error"].startswith("transfer refused: ")
    assert (await Call.objects.aget(pk=call.pk)).status == Call.Status.ACTIVE
