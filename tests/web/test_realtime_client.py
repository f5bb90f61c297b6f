"""`RealtimeClient`: the wire format, against the real engine and against misbehaving loopback servers."""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web

from calls.models import AgentProfile
from calls.services.realtime_client import (
    InvalidProviderCallId,
    RealtimeClient,
    RealtimeError,
    RealtimeUnavailable,
    is_valid_provider_call_id,
)
from calls.services.session_config import build_session_config
from tests.engine.conftest import RunningEngine, make_offer
from tests.web.conftest import FakeUpstream, Respond

StartUpstream = Callable[[Respond], Awaitable[FakeUpstream]]
ANSWER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"

HOSTILE_IDS = [
    "..%2F..%2Fclient_secrets",
    "rtc_../../client_secrets",
    "rtc_abcdef/../../x",
    "rtc_abcdef%2F..",
    "rtc_abcdef\n",
    "rtc_abc",
    "rtc_" + "a" * 65,
    "",
]


async def ok(request: web.Request) -> web.Response:
    return web.Response(status=200)


def test_provider_call_id_pattern() -> None:
    assert is_valid_provider_call_id("rtc_7a2dc633b69fd91485deab21")
    assert is_valid_provider_call_id("rtc_u1_9c6574da8b8a41a18da9308f4ad974ce")
    assert not any(is_valid_provider_call_id(value) for value in HOSTILE_IDS)


@pytest.mark.parametrize("action", ["hangup", "accept", "reject", "refer"])
async def test_hostile_call_ids_never_reach_the_upstream(fake_upstream: StartUpstream, action: str) -> None:
    upstream = await fake_upstream(ok)
    async with RealtimeClient() as client:
        for hostile in HOSTILE_IDS:
            with pytest.raises(InvalidProviderCallId):
                if action == "hangup":
                    await client.hangup_call(hostile)
                elif action == "accept":
                    await client.accept_call(hostile, session={"type": "realtime"})
                elif action == "reject":
                    await client.reject_call(hostile)
                else:
                    await client.refer_call(hostile, target_uri="tel:+15550100")
            with pytest.raises(InvalidProviderCallId):
                client.sideband_url(hostile)
    assert upstream.seen == []


async def test_call_control_bodies_are_json_and_hangup_has_none(fake_upstream: StartUpstream) -> None:
    upstream = await fake_upstream(ok)
    call_id = "rtc_0123456789abcdef"
    async with RealtimeClient() as client:
        await client.accept_call(call_id, session={"type": "realtime", "model": "gpt-realtime"})
        await client.reject_call(call_id, status_code=486)
        await client.refer_call(call_id, target_uri="tel:+15550100")
        await client.hangup_call(call_id)

    assert [seen.path for seen in upstream.seen] == [
        f"/v1/realtime/calls/{call_id}/{action}" for action in ("accept", "reject", "refer", "hangup")
    ]
    accept, reject, refer, hangup = upstream.seen
    assert json.loads(accept.body) == {"type": "realtime", "model": "gpt-realtime"}
    assert json.loads(reject.body) == {"status_code": 486}
    assert json.loads(refer.body) == {"target_uri": "tel:+15550100"}
    assert hangup.body == b""
    assert all(seen.headers["Authorization"] == "Bearer sk-fake" for seen in upstream.seen)


async def test_create_call_sends_multipart_sdp_and_session(fake_upstream: StartUpstream) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            status=201,
            text=ANSWER,
            content_type="application/sdp",
            headers={"Location": "/v1/realtime/calls/rtc_0123456789abcdef"},
        )

    upstream = await fake_upstream(answer)
    async with RealtimeClient() as client:
        created = await client.create_call(offer_sdp="v=0\r\noffer\r\n", session={"type": "realtime"})

    assert created.provider_call_id == "rtc_0123456789abcdef"
    assert created.answer_sdp == ANSWER
    seen = upstream.seen[0]
    assert seen.headers["Content-Type"].startswith("multipart/form-data")
    assert b'name="sdp"' in seen.body and b"v=0\r\noffer\r\n" in seen.body
    assert b'name="session"' in seen.body and b'{"type": "realtime"}' in seen.body


@pytest.mark.parametrize(
    "location",
    ["", "/v1/realtime/calls/", "/v1/realtime/calls/..%2F..%2Fclient_secrets", "/v1/realtime/calls/x y"],
)
async def test_an_answer_with_an_unusable_location_is_unavailable(
    fake_upstream: StartUpstream, location: str
) -> None:
    async def answer(request: web.Request) -> web.Response:
        return web.Response(
            status=201, text=ANSWER, content_type="application/sdp", headers={"Location": location}
        )

    await fake_upstream(answer)
    async with RealtimeClient() as client:
        with pytest.raises(RealtimeUnavailable) as raised:
            await client.create_call(offer_sdp="v=0\r\n", session={})
    assert raised.value.code == "invalid_location"


async def test_an_oversized_answer_is_cut_off(fake_upstream: StartUpstream) -> None:
    async def flood(request: web.Request) -> web.Response:
        return web.Response(status=201, body=b"v=0\r\n" + b"a" * 400_000, content_type="application/sdp")

    await fake_upstream(flood)
    async with RealtimeClient() as client:
        with pytest.raises(RealtimeUnavailable) as raised:
            await client.create_call(offer_sdp="v=0\r\n", session={})
    assert raised.value.code == "answer_too_large"


async def test_a_client_secret_answer_without_value_is_unavailable(fake_upstream: StartUpstream) -> None:
    async def odd(request: web.Request) -> web.Response:
        return web.json_response({"client_secret": {"value": "ek_x"}})

    await fake_upstream(odd)
    async with RealtimeClient() as client:
        with pytest.raises(RealtimeUnavailable, match="lacks 'value' or 'expires_at'"):
            await client.create_client_secret(session={"type": "realtime"})


async def test_an_unreachable_api_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once the socket is closed
    async with RealtimeClient(base_url=f"http://127.0.0.1:{port}/v1", api_key="sk-x", timeout=2) as client:
        with pytest.raises(RealtimeUnavailable) as raised:
            await client.hangup_call("rtc_0123456789abcdef")
    assert raised.value.code == "upstream_unreachable"
    assert "sk-x" not in raised.value.message


async def test_the_engine_refuses_an_unknown_call_with_404(local_engine: RunningEngine) -> None:
    async with RealtimeClient() as client:
        with pytest.raises(RealtimeError) as raised:
            await client.hangup_call("rtc_0123456789abcdef")
    assert raised.value.status == 404
    assert not isinstance(raised.value, RealtimeUnavailable)
    assert "not found" in raised.value.message


async def test_the_engine_accepts_our_session_config(local_engine: RunningEngine) -> None:
    """Our config passes the engine's strict schema (unknown fields would be a 400)."""
    profile = AgentProfile(name="Test", instructions="Be brief.", voice="cedar", model="gpt-realtime")
    session = build_session_config(profile, mode="audio")
    async with RealtimeClient() as client:
        created = await client.create_call(offer_sdp=await make_offer(), session=session)
        secret = await client.create_client_secret(session=session, expires_in_s=60)
        await client.hangup_call(created.provider_call_id)

    live = session["audio"]["input"]["transcription"]
    assert live == {"model": "whisper-1"}
    assert secret.value.startswith("ek_")


def test_sideband_url_follows_the_base_url() -> None:
    local = RealtimeClient(base_url="http://127.0.0.1:8765/v1", api_key="sk-local", timeout=1)
    remote = RealtimeClient(base_url="https://api.openai.com/v1/", api_key="sk-real", timeout=1)

    assert (
        local.sideband_url("rtc_0123456789abcdef")
        == "ws://127.0.0.1:8765/v1/realtime?call_id=rtc_0123456789abcdef"
    )
    assert (
        remote.sideband_url("rtc_0123456789abcdef")
        == "wss://api.openai.com/v1/realtime?call_id=rtc_0123456789abcdef"
    )
    assert remote.sideband_headers() == {"Authorization": "Bearer sk-real"}


def test_session_config_push_to_talk_when_the_profile_has_no_turn_detection() -> None:
    profile = AgentProfile(
        name="PTT", instructions="Hi.", voice="ash", model="gpt-realtime-mini", turn_detection=None
    )
    session = build_session_config(profile, mode="audio")

    assert session["audio"]["input"]["turn_detection"] is None
    assert session["audio"]["output"] == {"voice": "ash"}
    assert (session["type"], session["model"], session["instructions"]) == (
        "realtime",
        "gpt-realtime-mini",
        "Hi.",
    )
    with pytest.raises(ValueError, match="Unknown call mode"):
        build_session_config(profile, mode="hologram")


@pytest.mark.parametrize("base_url", ["127.0.0.1:8765/v1", "http://[::1/v1"], ids=["no-scheme", "bad-host"])
async def test_a_mistyped_base_url_is_unavailable_not_a_crash(base_url: str) -> None:
    async with RealtimeClient(base_url=base_url, api_key="sk-x", timeout=1) as client:
        with pytest.raises(RealtimeUnavailable) as raised:
            await client.hangup_call("rtc_0123456789abcdef")
    assert raised.value.code == "upstream_unreachable"
