"""The engine's HTTP API: call creation, client secrets, call control, limits and teardown."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time

import aiohttp
import pytest
from svix.webhooks import Webhook, WebhookVerificationError

from tests.engine.conftest import (
    WEBHOOK_SECRET,
    RunningEngine,
    StartEngine,
    WebhookReceiver,
    assert_error_shape,
    make_offer,
)

# ---- WebRTC call creation -------------------------------------------------------------------------


async def test_multipart_offer_creates_a_call_answered_with_sdp_and_location(engine: RunningEngine) -> None:
    session = {"type": "realtime", "instructions": "Be brief.", "audio": {"output": {"voice": "cedar"}}}
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        files={"sdp": (None, await make_offer(), "application/sdp"), "session": (None, json.dumps(session))},
        headers=engine.auth,
    )
    assert response.status_code == 201, response.text
    assert response.headers["content-type"].startswith("application/sdp")
    assert response.text.startswith("v=0")
    location = response.headers["Location"]
    assert location.startswith("/v1/realtime/calls/rtc_")
    call = engine.state.calls.get(location.rsplit("/", 1)[-1])
    assert call.kind == "webrtc"
    assert call.session["instructions"] == "Be brief."
    assert call.session["audio"]["output"]["voice"] == "cedar"
    # defaults are filled in for what the client left out
    assert call.session["audio"]["input"]["turn_detection"]["type"] == "server_vad"


async def test_bad_session_field_is_400_naming_the_field(engine: RunningEngine) -> None:
    session = {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "threshold": "high"}}},
    }
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        files={"sdp": (None, await make_offer(), "application/sdp"), "session": (None, json.dumps(session))},
        headers=engine.auth,
    )
    assert response.status_code == 400
    error = assert_error_shape(response.json())
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "session.audio.input.turn_detection.threshold"
    assert len(engine.state.calls) == 0


async def test_unknown_session_field_is_400_naming_it(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        files={
            "sdp": (None, await make_offer(), "application/sdp"),
            "session": (
                None,
                json.dumps({"type": "realtime", "tools": [{"type": "function", "name": "f", "x": 1}]}),
            ),
        },
        headers=engine.auth,
    )
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "session.tools[0].x"


async def test_body_that_is_not_an_sdp_offer_is_400(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        content="hello",
        headers={**engine.auth, "Content-Type": "application/sdp"},
    )
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "sdp"


async def test_oversized_body_is_413_in_the_api_shape(start_engine: StartEngine) -> None:
    engine = await start_engine(max_body_bytes=16 * 1024)
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        files={"sdp": (None, "v=0\r\n" + "a=x\r\n" * 10_000, "application/sdp")},
        headers=engine.auth,
    )
    assert response.status_code == 413
    assert_error_shape(response.json())


# ---- client secrets -------------------------------------------------------------------------------


async def test_client_secret_has_the_sdk_response_fields_and_default_ten_minute_expiry(
    engine: RunningEngine,
) -> None:
    before = int(time.time())
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"session": {"type": "realtime", "instructions": "Hi."}},
        headers=engine.auth,
    )
    assert response.status_code == 200
    body = response.json()
    assert body["value"].startswith("ek_")
    assert before + 600 <= body["expires_at"] <= int(time.time()) + 600
    assert body["session"]["object"] == "realtime.session"
    assert body["session"]["type"] == "realtime"
    assert body["session"]["id"].startswith("sess_")
    assert body["session"]["instructions"] == "Hi."


async def test_client_secret_honours_expires_after(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"expires_after": {"anchor": "created_at", "seconds": 30}},
        headers=engine.auth,
    )
    assert abs(response.json()["expires_at"] - (time.time() + 30)) <= 2


@pytest.mark.parametrize("seconds", [5, 7201, "600"])
async def test_client_secret_expiry_out_of_bounds_is_400(engine: RunningEngine, seconds: object) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"expires_after": {"anchor": "created_at", "seconds": seconds}},
        headers=engine.auth,
    )
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "expires_after.seconds"


async def test_client_secret_with_bad_session_is_400_naming_the_field(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"session": {"type": "realtime", "output_modalities": ["video"]}},
        headers=engine.auth,
    )
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "session.output_modalities[0]"


# ---- SIP-style calls: webhook and call control ----------------------------------------------------


async def test_incoming_call_sends_a_signed_webhook_svix_verifies(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await start_engine(webhook_url=webhook_receiver.url)
    call_id = await engine.incoming_call(**{"from": "+15551230000", "to": "+15559870000"})
    received = await webhook_receiver.next()

    Webhook(WEBHOOK_SECRET).verify(received.body, received.headers)  # raises on a bad signature
    event = json.loads(received.body)
    assert event["type"] == "realtime.call.incoming"
    assert event["object"] == "event"
    assert event["data"]["call_id"] == call_id
    headers = {h["name"]: h["value"] for h in event["data"]["sip_headers"]}
    assert "+15551230000" in headers["From"]
    assert "+15559870000" in headers["To"]
    assert received.headers["webhook-id"] == event["id"]
    assert event["id"].startswith("evt_")


async def test_svix_refuses_a_tampered_webhook(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await start_engine(webhook_url=webhook_receiver.url)
    await engine.incoming_call()
    received = await webhook_receiver.next()
    with pytest.raises(WebhookVerificationError):
        Webhook(WEBHOOK_SECRET).verify(
            received.body.replace(b"realtime.call", b"realtime.cal1"), received.headers
        )


async def test_webhook_signature_is_hmac_sha256_over_id_timestamp_body(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await start_engine(webhook_url=webhook_receiver.url)
    await engine.incoming_call()
    received = await webhook_receiver.next()
    key = base64.b64decode(WEBHOOK_SECRET.removeprefix("whsec_"))
    signed = (
        f"{received.headers['webhook-id']}.{received.headers['webhook-timestamp']}.".encode() + received.body
    )
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    assert received.headers["webhook-signature"] == f"v1,{expected}"
    assert abs(int(received.headers["webhook-timestamp"]) - time.time()) < 30


async def test_webhook_is_retried_with_the_same_id(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    webhook_receiver.fail_first = 2
    engine = await start_engine(webhook_url=webhook_receiver.url)
    await engine.incoming_call()
    attempts = [await webhook_receiver.next() for _ in range(3)]
    assert len({attempt.headers["webhook-id"] for attempt in attempts}) == 1
    assert len({attempt.body for attempt in attempts}) == 1
    for attempt in attempts:
        Webhook(WEBHOOK_SECRET).verify(attempt.body, attempt.headers)
    delivery = next(iter(engine.state.sender.deliveries.values()))
    await asyncio.wait_for(delivery.done.wait(), 5)
    assert delivery.status == "delivered"
    assert delivery.attempts == 3


async def test_accept_activates_an_incoming_call(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    response = await engine.control(
        call_id, "accept", {"type": "realtime", "instructions": "Answer the phone."}
    )
    assert response.status_code == 200, response.text
    call = engine.state.calls.get(call_id)
    assert call.state == "active"
    assert call.session["instructions"] == "Answer the phone."


async def test_accept_requires_type_realtime(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    response = await engine.control(call_id, "accept", {"instructions": "x"})
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "type"
    assert engine.state.calls.get(call_id).state == "incoming"


async def test_accept_takes_vad_timings_that_openai_sip_refuses(engine: RunningEngine) -> None:
    # Documented divergence: OpenAI's SIP accept rejects these (agents-js #741); the engine uses them.
    call_id = await engine.incoming_call()
    vad = {"type": "server_vad", "threshold": 0.6, "prefix_padding_ms": 200, "silence_duration_ms": 400}
    response = await engine.control(
        call_id, "accept", {"type": "realtime", "audio": {"input": {"turn_detection": vad}}}
    )
    assert response.status_code == 200, response.text
    assert engine.state.calls.get(call_id).session["audio"]["input"]["turn_detection"]["threshold"] == 0.6


async def test_accept_twice_is_400(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    assert (await engine.control(call_id, "accept", {"type": "realtime"})).status_code == 200
    response = await engine.control(call_id, "accept", {"type": "realtime"})
    assert response.status_code == 400
    assert_error_shape(response.json())


async def test_reject_ends_the_call_with_the_sip_status(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    assert (await engine.control(call_id, "reject", {"status_code": 486})).status_code == 200
    assert call.ended.is_set()
    assert call.end_reason is not None and "486" in call.end_reason
    assert (await engine.control(call_id, "hangup")).status_code == 404


async def test_reject_defaults_to_603(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    assert (await engine.control(call_id, "reject")).status_code == 200
    assert call.end_reason is not None and "603" in call.end_reason


async def test_reject_with_a_non_sip_status_is_400(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    response = await engine.control(call_id, "reject", {"status_code": 200})
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "status_code"


async def test_refer_transfers_an_active_call(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    await engine.control(call_id, "accept", {"type": "realtime"})
    response = await engine.control(call_id, "refer", {"target_uri": "tel:+15550001111"})
    assert response.status_code == 200, response.text
    assert call.end_reason == "transferred"
    assert (await engine.control(call_id, "refer", {"target_uri": "tel:+15550001111"})).status_code == 404


@pytest.mark.parametrize("target", ["https://example.com", "+15550001111", "tel:", ""])
async def test_refer_needs_a_tel_or_sip_uri(engine: RunningEngine, target: str) -> None:
    call_id = await engine.incoming_call()
    await engine.control(call_id, "accept", {"type": "realtime"})
    response = await engine.control(call_id, "refer", {"target_uri": target})
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "target_uri"


async def test_hangup_ends_the_call_and_removes_it(engine: RunningEngine) -> None:
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    assert (await engine.control(call_id, "hangup")).status_code == 200
    assert call.ended.is_set()
    await asyncio.sleep(0)
    assert call_id not in engine.state.calls


@pytest.mark.parametrize("action", ["accept", "reject", "refer", "hangup"])
async def test_call_control_on_an_unknown_call_is_404(engine: RunningEngine, action: str) -> None:
    body = {"accept": {"type": "realtime"}, "refer": {"target_uri": "tel:+1555"}}.get(action)
    response = await engine.control("rtc_0123456789abcdef01234567", action, body)
    assert response.status_code == 404
    assert assert_error_shape(response.json())["code"] == "call_not_found"


# ---- limits and teardown --------------------------------------------------------------------------


async def test_calls_past_the_maximum_are_429_until_one_ends(engine: RunningEngine) -> None:
    ids = [await engine.incoming_call() for _ in range(engine.config.max_calls)]
    response = await engine.http.post(
        f"{engine.base_url}/realtime/_local/incoming_calls", headers=engine.auth
    )
    assert response.status_code == 429
    error = assert_error_shape(response.json())
    assert str(engine.config.max_calls) in str(error["message"])
    webrtc = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        content=await make_offer(),
        headers={**engine.auth, "Content-Type": "application/sdp"},
    )
    assert webrtc.status_code == 429

    await engine.control(ids[0], "hangup")
    await asyncio.sleep(0)
    await engine.incoming_call()


async def test_incoming_call_not_accepted_in_time_is_ended(start_engine: StartEngine) -> None:
    engine = await start_engine(accept_timeout=0.2, sweep_interval=0.05)
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.end_reason == "accept_timeout"
    assert (await engine.control(call_id, "accept", {"type": "realtime"})).status_code == 404


async def test_idle_active_call_is_hung_up(start_engine: StartEngine) -> None:
    engine = await start_engine(idle_timeout=0.3, sweep_interval=0.05)
    call_id = await engine.incoming_call()
    call = engine.state.calls.get(call_id)
    await engine.control(call_id, "accept", {"type": "realtime"})
    await asyncio.wait_for(call.ended.wait(), 5)
    assert call.end_reason == "idle_timeout"


def _open_sockets() -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                count += 1
        except OSError:
            continue
    return count


async def test_hundred_sequential_calls_leave_no_tasks_sockets_or_calls(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver
) -> None:
    engine = await start_engine(webhook_url=webhook_receiver.url)

    async def one_call(n: int) -> None:
        call_id = await engine.incoming_call()
        if n % 2:
            assert (await engine.control(call_id, "accept", {"type": "realtime"})).status_code == 200
        assert (await engine.control(call_id, "hangup")).status_code == 200
        await webhook_receiver.next()

    await one_call(0)  # warm up: connection pools, first-use allocations
    await asyncio.sleep(0.1)
    tasks_before = len(asyncio.all_tasks())
    sockets_before = _open_sockets()
    for n in range(100):
        await one_call(n)
    await asyncio.sleep(0.1)  # let the webhook and watcher tasks finish

    assert len(engine.state.calls) == 0
    assert len(asyncio.all_tasks()) <= tasks_before
    assert _open_sockets() <= sockets_before
    health = await engine.http.get(f"http://127.0.0.1:{engine.port}/healthz")
    assert health.json()["calls_active"] == 0


async def test_webrtc_calls_with_sidebands_leave_no_tasks_or_sockets(engine: RunningEngine) -> None:
    async with aiohttp.ClientSession() as ws_client:

        async def one_call() -> None:
            created = await engine.http.post(
                f"{engine.base_url}/realtime/calls",
                content=await make_offer(),
                headers={**engine.auth, "Content-Type": "application/sdp"},
            )
            assert created.status_code == 201, created.text
            call_id = created.headers["Location"].rsplit("/", 1)[-1]
            ws = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", headers=engine.auth)
            assert (await engine.control(call_id, "hangup")).status_code == 200
            async with asyncio.timeout(5):
                assert (await ws.receive()).type == aiohttp.WSMsgType.CLOSE
            await ws.close()

        await one_call()
        await asyncio.sleep(0.2)
        tasks_before = len(asyncio.all_tasks())
        sockets_before = _open_sockets()
        for _ in range(20):
            await one_call()
        await asyncio.sleep(0.5)

    assert len(engine.state.calls) == 0
    assert len(asyncio.all_tasks()) <= tasks_before
    assert _open_sockets() <= sockets_before
