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


async def test_inbound_audio_packets_reach_the_decoder_as_they_arrive() -> None:
    """aiortc holds every inbound audio packet until 4 newer frames arrived (80 ms added to every
    end of turn); the engine's receivers release each packet at once. This pins the private
    attribute the engine replaces, so an aiortc upgrade that renames it fails here."""
    from realtime_local.media import InOrderAudioBuffer

    pc, offer = await offer_with_video()
    try:
        call, _answer = await start_webrtc_call(
            call_id=new_rtc_call_id(), offer_sdp=offer, session=validate_session({}), runtime=EngineRuntime()
        )
        assert call.peer is not None
        audio = [t for t in call.peer.pc.getTransceivers() if t.kind == "audio"]
        assert len(audio) == 1
        buffer = getattr(audio[0].receiver, "_RTCRtpReceiver__jitter_buffer")  # noqa: B009 - private
        assert isinstance(buffer, InOrderAudioBuffer)
        await call.hangup()
    finally:
        await pc.close()


def test_in_order_audio_buffer_releases_at_once_skips_gaps_and_drops_late_packets() -> None:
    from aiortc.rtp import RtpPacket

    from realtime_local.media import InOrderAudioBuffer

    buffer = InOrderAudioBuffer()

    def add(sequence: int) -> int | None:
        packet = RtpPacket(sequence_number=sequence, timestamp=sequence * 960, payload=b"x")
        packet._data = b"x"  # type: ignore[attr-defined] # the receiver sets the depayloaded data
        pli, frame = buffer.add(packet)
        assert pli is False
        return None if frame is None else int(frame.timestamp) // 960

    assert add(65534) == 65534  # released as it arrives: no waiting for the next packet
    assert add(65535) == 65535
    assert add(0) == 0  # sequence numbers wrap
    assert add(0) is None  # a duplicate
    assert add(3) == 3  # a gap (1, 2 lost or late) is skipped at once
    assert add(2) is None  # a late packet is dropped rather than played out of order
    assert add(4) == 4
    assert add(30_000) == 30_000  # a jump forward or a restarted stream goes on from there


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
