"""The SIP front door over real loopback UDP: a Python UAC calls the engine's UAS, the signed
webhook reaches a loopback receiver, the test accepts/rejects through the HTTP API."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import numpy as np
import openai
import pytest

from realtime_local.config import ConfigError, EngineConfig
from realtime_local.sip import message as sipmsg
from tests.engine.conftest import WEBHOOK_SECRET, RunningEngine, StartEngine, WebhookReceiver
from tests.engine.sip_client import SipClient, sdp_media_port

pytestmark = pytest.mark.timeout(60)


async def sip_engine(start_engine: StartEngine, receiver: WebhookReceiver, **overrides: Any) -> RunningEngine:
    return await start_engine(webhook_url=receiver.url, sip_port=0, **overrides)


def server_of(engine: RunningEngine) -> tuple[str, int]:
    sip = engine.state.sip
    assert sip is not None
    return ("127.0.0.1", sip.port)


async def incoming(receiver: WebhookReceiver) -> dict[str, Any]:
    """The next webhook, verified with the official SDK exactly as a receiver would."""
    hook = await receiver.next()
    client = openai.OpenAI(api_key="unused", webhook_secret=WEBHOOK_SECRET)
    event = client.webhooks.unwrap(hook.body, hook.headers)
    assert event.type == "realtime.call.incoming"
    data: dict[str, Any] = json.loads(hook.body)["data"]
    return data


async def test_invite_accept_media_and_caller_bye(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    client = await SipClient.open(server_of(engine))
    try:
        invite = client.invite()
        trying = await client.next_sip()
        assert trying.status == 100
        ringing = await client.next_sip()
        assert ringing.status == 180 and sipmsg.tag_of(ringing.get("To") or "")
        data = await incoming(webhook_receiver)
        headers = {h["name"]: h["value"] for h in data["sip_headers"]}
        assert "+15551230001" in headers["From"] and "+15559870002" in headers["To"]
        assert headers["Call-ID"] == client.call_id and headers["X-Test-Header"] == "kept"
        assert "Via" not in headers
        client.send(invite)  # a retransmitted INVITE: the same answer again, no second call
        assert (await client.next_sip()).status == 180
        assert len(engine.state.calls) == 1
        call_id = data["call_id"]
        response = await engine.control(call_id, "accept", {"type": "realtime", "instructions": "Be brief."})
        assert response.status_code == 200, response.text
        ok = await client.final_response()
        assert ok.status == 200 and ok.get("Content-Type") == "application/sdp"
        assert "a=rtpmap:0 PCMU/8000" in ok.body.decode()  # the caller's first choice
        client.ack()
        call = engine.state.calls.get(call_id)
        assert call.state == "active"
        client.send(client.request("INVITE", cseq=2, body=client.offer()))  # a re-INVITE (refresh)
        refreshed = await client.final_response()
        assert refreshed.status == 200 and refreshed.body == ok.body
        client.send(client.request("ACK", cseq=2))
        tone = (np.sin(np.arange(8000) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
        await client.send_audio(tone, ("127.0.0.1", sdp_media_port(ok.body)))
        sip = engine.state.sip
        assert sip is not None
        dialog = sip.dialogs[client.call_id]
        assert dialog.rtp is not None and dialog.rtp.stats.packets_in >= 45
        await asyncio.sleep(0.3)
        _, arrivals, markers = client.received_audio()
        assert len(arrivals) >= 10 and markers == 1  # silence flows, paced, marker on the first only
        client.cseq += 1
        client.send(client.request("BYE"))
        bye_ok = await client.final_response()
        assert bye_ok.status == 200 and bye_ok.cseq == (client.cseq, "BYE")
        await asyncio.wait_for(call.ended.wait(), 5)
        assert call.end_reason == "caller_hangup"
        assert (await engine.control(call_id, "hangup")).status_code == 404
        figures = sip.history[-1]
        assert figures.call_id == call_id and figures.end_reason == "caller_hangup"
        assert figures.invite_to_ok_s is not None and figures.rtp_in >= 45 and figures.rtp_out >= 10
    finally:
        client.close()


@pytest.mark.parametrize("status", [486, 603])
async def test_reject_answers_the_sip_status(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver, status: int
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    client = await SipClient.open(server_of(engine))
    try:
        client.invite()
        data = await incoming(webhook_receiver)
        assert (await engine.control(data["call_id"], "reject", {"status_code": status})).status_code == 200
        final = await client.final_response()
        assert final.status == status
        client.ack()
        assert len(engine.state.calls) == 0
    finally:
        client.close()


async def test_no_answer_is_480(start_engine: StartEngine, webhook_receiver: WebhookReceiver) -> None:
    engine = await sip_engine(start_engine, webhook_receiver, accept_timeout=0.5, sweep_interval=0.1)
    client = await SipClient.open(server_of(engine))
    try:
        client.invite()
        await incoming(webhook_receiver)
        final = await client.final_response()
        assert final.status == 480
    finally:
        client.close()


async def test_cancel_before_answer_is_487(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    client = await SipClient.open(server_of(engine))
    try:
        client.invite()
        data = await incoming(webhook_receiver)
        client.send(client.request("CANCEL"))
        statuses = {}
        for _ in range(2):
            msg = await client.final_response()
            statuses[msg.cseq[1]] = msg.status
        assert statuses == {"CANCEL": 200, "INVITE": 487}
        await asyncio.sleep(0.1)
        assert data["call_id"] not in engine.state.calls
        response = await engine.control(data["call_id"], "accept", {"type": "realtime"})
        assert response.status_code == 404  # the caller hung up: accept finds no call
    finally:
        client.close()


async def answered(engine: RunningEngine, client: SipClient, receiver: WebhookReceiver) -> str:
    client.invite()
    data = await incoming(receiver)
    assert (await engine.control(data["call_id"], "accept", {"type": "realtime"})).status_code == 200
    assert (await client.final_response()).status == 200
    client.ack()
    call_id: str = data["call_id"]
    return call_id


async def test_api_hangup_sends_bye(start_engine: StartEngine, webhook_receiver: WebhookReceiver) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    client = await SipClient.open(server_of(engine))
    try:
        call_id = await answered(engine, client, webhook_receiver)
        assert (await engine.control(call_id, "hangup")).status_code == 200
        bye = await client.next_sip()
        assert bye.method == "BYE" and bye.call_id == client.call_id
        assert sipmsg.tag_of(bye.get("To") or "") == client.from_tag
        assert bye.uri == f"sip:caller@127.0.0.1:{client.sip_port}"  # the caller's Contact
        client.reply(bye, 200)
    finally:
        client.close()


async def test_api_refer_sends_refer_then_bye(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    client = await SipClient.open(server_of(engine))
    try:
        call_id = await answered(engine, client, webhook_receiver)
        response = await engine.control(call_id, "refer", {"target_uri": "tel:+15550009999"})
        assert response.status_code == 200
        refer = await client.next_sip()
        assert refer.method == "REFER" and refer.get("Refer-To") == "<tel:+15550009999>"
        client.reply(refer, 202)
        client.cseq += 1
        notify = client.request("NOTIFY").replace(b"Content-Length: 0", b"Event: refer\r\nContent-Length: 0")
        client.send(notify)  # the transfer's progress: the engine then closes the dialog
        started = asyncio.get_running_loop().time()
        assert (await client.final_response()).status == 200
        bye = await client.next_sip()
        assert bye.method == "BYE"
        assert asyncio.get_running_loop().time() - started < 2  # on the NOTIFY, not the 4 s timeout
        client.reply(bye, 200)
    finally:
        client.close()


async def test_options_full_registry_and_bad_offers(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver, max_calls=1)
    first = await SipClient.open(server_of(engine))
    second = await SipClient.open(server_of(engine))
    third = await SipClient.open(server_of(engine))
    try:
        first.send(first.request("OPTIONS", compact=True))
        options = await first.next_sip()
        assert options.status == 200 and "INVITE" in (options.get("Allow") or "")
        first.invite()
        await incoming(webhook_receiver)
        second.invite()
        assert (await second.final_response()).status == 486  # max_calls reached
        third.invite(formats="9 18")  # G.722 / G.729 only
        assert (await third.final_response()).status == 488
        third.send(b"garbage\r\n\r\n")  # dropped silently; the server keeps answering
        third.call_id = "other@127.0.0.1"
        third.send(third.request("BYE"))
        assert (await third.final_response()).status == 481
    finally:
        for client in (first, second, third):
            client.close()


async def test_port_taken_is_a_clear_error(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await sip_engine(start_engine, webhook_receiver)
    port = server_of(engine)[1]
    from realtime_local.sip.uas import SipBindError, SipServer

    server = SipServer(engine.state, host="127.0.0.1", port=port)
    with pytest.raises(SipBindError, match=f"cannot listen for SIP on udp 127.0.0.1:{port}.*--sip-port"):
        await server.start()


@pytest.mark.parametrize("host", ["0.0.0.0", "::1", "localhost"])
def test_sip_host_must_be_a_concrete_ipv4_address(host: str) -> None:
    with pytest.raises(ConfigError, match="--sip-host"):
        EngineConfig(sip_port=0, sip_host=host).validate()
    EngineConfig(sip_port=None, sip_host=host).validate()  # irrelevant without SIP
