"""The sideband WebSocket `GET /v1/realtime?call_id=…`: attach, mirror, act, detach, back-pressure."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.engine.conftest import RunningEngine, StartEngine, assert_error_shape


@pytest.fixture
async def ws_client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        yield session


async def next_event(ws: aiohttp.ClientWebSocketResponse, event_type: str) -> dict[str, Any]:
    """The next server event of `event_type` (others are skipped); fails after 5 s."""
    async with asyncio.timeout(5):
        while True:
            message = await ws.receive()
            assert message.type == aiohttp.WSMsgType.TEXT, message
            event: dict[str, Any] = json.loads(message.data)
            if event["type"] == event_type:
                return event


async def test_unknown_call_rejects_the_upgrade_with_404_json(engine: RunningEngine) -> None:
    response = await engine.http.get(
        f"{engine.base_url}/realtime",
        params={"call_id": "rtc_000000000000000000000000"},
        headers={
            **engine.auth,
            "Connection": "Upgrade",
            "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13",
            "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode(),
        },
    )
    assert response.status_code == 404
    assert assert_error_shape(response.json())["code"] == "call_not_found"


async def test_missing_call_id_is_400_naming_it(engine: RunningEngine) -> None:
    response = await engine.http.get(
        f"{engine.base_url}/realtime", params={"model": "gpt-realtime"}, headers=engine.auth
    )
    assert response.status_code == 400
    assert assert_error_shape(response.json())["param"] == "call_id"


async def test_sideband_without_a_key_is_401(engine: RunningEngine, ws_client: aiohttp.ClientSession) -> None:
    call_id = await engine.incoming_call()
    with pytest.raises(aiohttp.WSServerHandshakeError) as raised:
        await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}")
    assert raised.value.status == 401


async def test_observers_see_the_calls_events_and_steer_it(
    engine: RunningEngine, ws_client: aiohttp.ClientSession
) -> None:
    call_id = await engine.incoming_call()
    url = f"{engine.ws_url}?call_id={call_id}"
    with_header = await ws_client.ws_connect(url, headers=engine.auth)
    with_protocol = await ws_client.ws_connect(
        url, protocols=("realtime", f"openai-insecure-api-key.{engine.config.api_key}")
    )
    assert with_protocol.protocol == "realtime"

    await engine.control(call_id, "accept", {"type": "realtime", "instructions": "First."})
    for ws in (with_header, with_protocol):
        created = await next_event(ws, "session.created")
        assert created["session"]["instructions"] == "First."
        assert created["event_id"].startswith("event_")

    await with_protocol.send_json({"type": "session.update", "session": {"instructions": "Second."}})
    for ws in (with_header, with_protocol):
        assert (await next_event(ws, "session.updated"))["session"]["instructions"] == "Second."
    assert engine.state.calls.get(call_id).session["instructions"] == "Second."
    await with_header.close()
    await with_protocol.close()


async def test_closing_a_sideband_does_not_end_the_call(
    engine: RunningEngine, ws_client: aiohttp.ClientSession
) -> None:
    call_id = await engine.incoming_call()
    await engine.control(call_id, "accept", {"type": "realtime"})
    first = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", headers=engine.auth)
    second = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", headers=engine.auth)
    await first.close()
    await asyncio.sleep(0.05)

    call = engine.state.calls.get(call_id)
    assert call.state == "active"
    await second.send_json({"type": "session.update", "session": {"instructions": "Still here."}})
    assert (await next_event(second, "session.updated"))["session"]["instructions"] == "Still here."
    await second.close()


async def test_malformed_messages_get_an_error_event_on_that_socket(
    engine: RunningEngine, ws_client: aiohttp.ClientSession
) -> None:
    call_id = await engine.incoming_call()
    await engine.control(call_id, "accept", {"type": "realtime"})
    ws = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", headers=engine.auth)
    await ws.send_str("not json")
    error = await next_event(ws, "error")
    assert error["error"]["code"] == "invalid_json"
    await ws.send_json({"type": "no.such.event"})
    assert (await next_event(ws, "error"))["error"]["param"] == "type"
    assert engine.state.calls.get(call_id).state == "active"
    await ws.close()


async def test_hangup_closes_the_sidebands_normally(
    engine: RunningEngine, ws_client: aiohttp.ClientSession
) -> None:
    call_id = await engine.incoming_call()
    ws = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", headers=engine.auth)
    await engine.control(call_id, "hangup")
    async with asyncio.timeout(5):
        message = await ws.receive()
    assert message.type == aiohttp.WSMsgType.CLOSE
    assert ws.close_code == 1000


async def _raw_upgrade(engine: RunningEngine, call_id: str) -> socket.socket:
    """A sideband connection from a client that never reads after the handshake (tiny receive
    buffer, so the engine's writes back up quickly)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    loop = asyncio.get_running_loop()
    await loop.sock_connect(sock, ("127.0.0.1", engine.port))
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /v1/realtime?call_id={call_id} HTTP/1.1\r\nHost: 127.0.0.1:{engine.port}\r\n"
        f"Authorization: Bearer {engine.config.api_key}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
    )
    await loop.sock_sendall(sock, request.encode())
    head = b""
    async with asyncio.timeout(5):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)
    assert head.startswith(b"HTTP/1.1 101"), head
    return sock


async def test_a_slow_observer_is_dropped_and_the_call_goes_on(
    start_engine: StartEngine, ws_client: aiohttp.ClientSession
) -> None:
    engine = await start_engine(sideband_queue_size=4, sideband_send_timeout=1.0)
    call_id = await engine.incoming_call()
    await engine.control(call_id, "accept", {"type": "realtime", "output_modalities": ["text"]})
    slow = await _raw_upgrade(engine, call_id)
    fast = await ws_client.ws_connect(
        f"{engine.ws_url}?call_id={call_id}", headers=engine.auth, max_msg_size=0
    )
    try:
        text = "x" * 200_000
        for n in range(40):  # ~16 MB of events: far more than the slow client's socket buffers hold
            await fast.send_json(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": f"{n}{text}"}],
                    },
                }
            )
            await next_event(fast, "conversation.item.added")

        # The slow socket is cut off (after the bytes already buffered for it)...
        loop = asyncio.get_running_loop()
        with contextlib.suppress(ConnectionResetError):  # an aborted connection is cut off too
            async with asyncio.timeout(15):
                while await loop.sock_recv(slow, 1 << 20):
                    pass
        # ...while the call and the other observer carry on.
        assert engine.state.calls.get(call_id).state == "active"
        await fast.send_json({"type": "session.update", "session": {"instructions": "Alive."}})
        assert (await next_event(fast, "session.updated"))["session"]["instructions"] == "Alive."
    finally:
        slow.close()
        await fast.close()


async def test_a_key_offered_only_as_subprotocol_is_never_written_to_the_log(
    engine: RunningEngine, ws_client: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    call_id = await engine.incoming_call()
    key_protocol = f"openai-insecure-api-key.{engine.config.api_key}"
    with caplog.at_level(logging.DEBUG):
        ws = await ws_client.ws_connect(f"{engine.ws_url}?call_id={call_id}", protocols=(key_protocol,))
        await engine.control(call_id, "accept", {"type": "realtime"})
        await next_event(ws, "session.created")
        await ws.close()
    assert engine.config.api_key not in caplog.text
