"""The aiortc peer without speech: SDP answer shape, loopback candidates, video, teardown."""

from __future__ import annotations

import asyncio
import contextvars
import time
from typing import Any

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection

from realtime_local.call import EngineRuntime, start_webrtc_call
from realtime_local.events import new_rtc_call_id
from realtime_local.media import offer_loopback_candidates
from realtime_local.schemas import validate_session
from tests.engine.fixtures_media import RealtimeTestClient

pytestmark = pytest.mark.timeout(60)


async def offer_with_video(*, loopback: bool = False) -> tuple[RTCPeerConnection, str]:
    """A browser-like offer; with `loopback`, it carries 127.0.0.1 candidates (without any candidate,
    aioice on the answering side prunes every component and gathers nothing)."""
    offer_loopback_candidates(loopback)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio", direction="sendrecv")
    pc.addTransceiver("video", direction="sendrecv")
    pc.createDataChannel("oai-events")
    await pc.setLocalDescription(await pc.createOffer())
    return pc, pc.localDescription.sdp


def media_sections(sdp: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    for chunk in sdp.split("\r\nm=")[1:]:
        sections[chunk.split(" ", 1)[0]] = chunk
    return sections


async def test_answer_has_sendrecv_opus_audio_and_inactive_video() -> None:
    pc, offer = await offer_with_video()
    try:
        started = time.perf_counter()
        call, answer = await start_webrtc_call(
            call_id=new_rtc_call_id(), offer_sdp=offer, session=validate_session({}), runtime=EngineRuntime()
        )
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"offer->answer in process: {elapsed_ms:.1f} ms")
        sections = media_sections(answer)
        assert "a=sendrecv" in sections["audio"] and "opus/48000/2" in sections["audio"]
        assert "a=inactive" in sections["video"]
        assert "webrtc-datachannel" in sections["application"]
        assert "127.0.0.1" not in answer  # loopback is opt-in
        await call.hangup()
        await call.hangup()  # idempotent
        assert call.ended.is_set() and call.end_reason == "hangup"
    finally:
        await pc.close()


async def test_loopback_candidates_are_offered_when_opted_in() -> None:
    pc, offer = await offer_with_video(loopback=True)
    try:
        call, answer = await start_webrtc_call(
            call_id=new_rtc_call_id(),
            offer_sdp=offer,
            session=validate_session({}),
            runtime=EngineRuntime(loopback_candidates=True),
        )
        candidates = [line for line in answer.splitlines() if line.startswith("a=candidate")]
        assert any(" 127.0.0.1 " in line for line in candidates), candidates
        await call.hangup()
    finally:
        await pc.close()


async def test_loopback_opt_in_stays_with_the_peer_that_asked() -> None:
    pc, offer = await offer_with_video(loopback=True)
    try:
        opted, answer = await start_webrtc_call(
            call_id=new_rtc_call_id(),
            offer_sdp=offer,
            session=validate_session({}),
            runtime=EngineRuntime(loopback_candidates=True),
        )
        await opted.hangup()
        # a task of its own, as each HTTP request is: the opt-in above must not leak into it
        plain, answer = await asyncio.create_task(
            start_webrtc_call(
                call_id=new_rtc_call_id(),
                offer_sdp=offer,
                session=validate_session({}),
                runtime=EngineRuntime(),
            ),
            context=contextvars.Context(),
        )
        assert "127.0.0.1" not in answer
        await plain.hangup()
    finally:
        await pc.close()


async def test_call_ends_when_the_browser_goes_away() -> None:
    offer_loopback_candidates(True)  # works in loopback-only namespaces too
    client = RealtimeTestClient()
    call_ref: dict[str, Any] = {}
    try:
        call, answer = await start_webrtc_call(
            call_id=new_rtc_call_id(),
            offer_sdp=await client.offer(),
            session=validate_session({}),
            runtime=EngineRuntime(loopback_candidates=True),
        )
        call_ref["call"] = call
        await client.set_answer(answer)
        await client.wait_open()
        await client.wait_for("session.created")
        assert call.state == "active"
    finally:
        await client.close()
    await asyncio.wait_for(call_ref["call"].ended.wait(), 30)
    assert call_ref["call"].end_reason == "peer_closed"
