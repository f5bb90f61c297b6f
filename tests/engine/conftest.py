"""Fixtures for the local engine's tests: a real engine on a free loopback port, in-process.

`start_engine(**config_overrides)` runs `create_app` on an aiohttp TCP site bound to 127.0.0.1:0 with
speech disabled (text-only), so protocol tests start in milliseconds; `engine` is one with the
defaults. `webhook_receiver` is a real loopback HTTP server that records what it receives (raw body
bytes and headers), to check the engine's signed webhooks. No Django, no database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from realtime_local.app import ENGINE, Engine, create_app
from realtime_local.config import EngineConfig

API_KEY = "sk-local"
#: A fixed, valid Standard Webhooks secret so tests can verify signatures independently.
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@dataclass
class RunningEngine:
    """An engine serving on loopback: its base URL, its state and an HTTP client with the API key."""

    app: web.Application
    runner: web.AppRunner
    port: int
    config: EngineConfig
    http: httpx.AsyncClient

    @property
    def state(self) -> Engine:
        return self.app[ENGINE]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/realtime"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.api_key}"}

    async def incoming_call(self, **body: Any) -> str:
        """Create a SIP-style incoming call through the engine extension; return its id."""
        response = await self.http.post(
            f"{self.base_url}/realtime/_local/incoming_calls", json=body, headers=self.auth
        )
        assert response.status_code == 201, response.text
        call_id: str = response.json()["call_id"]
        return call_id

    async def control(self, call_id: str, action: str, body: Any = None) -> httpx.Response:
        return await self.http.post(
            f"{self.base_url}/realtime/calls/{call_id}/{action}",
            headers=self.auth,
            **({} if body is None else {"json": body}),
        )


StartEngine = Callable[..., Awaitable[RunningEngine]]


def assert_error_shape(body: dict[str, object]) -> dict[str, object]:
    """The API's error object: exactly message, type, code, param."""
    assert set(body) == {"error"}
    error = body["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "code", "param"}
    assert isinstance(error["message"], str) and error["message"]
    return error


@pytest.fixture
async def start_engine() -> AsyncIterator[StartEngine]:
    """Factory: start an engine with `EngineConfig` overrides; all are stopped after the test."""
    started: list[RunningEngine] = []

    async def start(**overrides: Any) -> RunningEngine:
        settings: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "api_key": API_KEY,
            "webhook_secret": WEBHOOK_SECRET,
            "speech": False,
            "max_calls": 4,
            "webhook_backoff": 0.05,
            "webhook_timeout": 2.0,
        }
        settings.update(overrides)
        config = EngineConfig(**settings)
        app = create_app(config)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = int(runner.addresses[0][1])
        running = RunningEngine(
            app=app, runner=runner, port=port, config=config, http=httpx.AsyncClient(timeout=10.0)
        )
        started.append(running)
        await asyncio.wait_for(running.state.ready.wait(), 10)
        return running

    yield start
    for running in started:
        await running.http.aclose()
        await asyncio.wait_for(running.runner.cleanup(), 15)


@pytest.fixture
async def engine(start_engine: StartEngine) -> RunningEngine:
    """An engine with the default test settings."""
    return await start_engine()


@dataclass
class ReceivedWebhook:
    body: bytes
    headers: dict[str, str]


@dataclass
class WebhookReceiver:
    """A loopback HTTP endpoint recording webhooks; answers 500 to the first `fail_first` ones."""

    url: str
    received: asyncio.Queue[ReceivedWebhook] = field(default_factory=asyncio.Queue)
    fail_first: int = 0
    attempts: int = 0

    async def next(self) -> ReceivedWebhook:
        """The next received request (waits at most 10 s)."""
        return await asyncio.wait_for(self.received.get(), 10.0)


@pytest.fixture
async def webhook_receiver() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver(url="")

    async def handle(request: web.Request) -> web.Response:
        receiver.attempts += 1
        body = await request.read()
        await receiver.received.put(ReceivedWebhook(body=body, headers=dict(request.headers)))
        if receiver.attempts <= receiver.fail_first:
            return web.Response(status=500, text="try again")
        return web.Response(status=200, text="ok")

    app = web.Application()
    app.router.add_post("/webhook", handle)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/webhook"
    yield receiver
    await runner.cleanup()


async def make_offer() -> str:
    """A real WebRTC offer from an aiortc client, shaped like the browser's: one sendrecv audio
    transceiver and the `oai-events` data channel. The peer is closed at once: the engine only needs
    the offer to answer (the media tests of engine-session connect for real)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    try:
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        return sdp
    finally:
        await pc.close()
