"""Shared fixtures of the web-call tests (tests/web/): a real local engine the product talks to.

- `local_engine`: an in-process `realtime_local` engine on a free loopback port, speech disabled
  (protocol tests start in milliseconds), served by the test's own event loop; Django's settings
  `REALTIME_BASE_URL`/`REALTIME_API_KEY` point at it for the test. Use from async tests.
- `speech_engine`: the same with the offline speech stack (loaded once per test session), also on
  the test's loop, settings pointed at it.
- `engine_in_thread(speech=…)`: a factory for SYNC tests (Playwright's sync API blocks the test's
  loop): the engine runs on an event loop of its own in a daemon thread, settings pointed at it,
  stopped after the test. Returns a `ThreadedEngine` with `base_url`, `api_key` and `call_ids()`.

Other helpers may add fixtures here by appending only.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from django.contrib.auth.models import User
from django.db import connections
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import AgentProfile
from realtime_local.app import ENGINE, Engine, create_app
from realtime_local.call import EngineRuntime
from realtime_local.config import EngineConfig
from tests.engine.conftest import API_KEY, RunningEngine, StartEngine, start_engine
from tests.engine.fixtures_media import ServedEngine, serve_engine, speech_stack
from tests.factories import StaffUserFactory, UserFactory

__all__ = ["engine_in_thread", "local_engine", "speech_engine", "speech_stack", "start_engine"]


def point_settings_at(settings: SettingsWrapper, *, base_url: str, api_key: str) -> None:
    """Make the product's realtime client talk to the engine at `base_url` for this test."""
    settings.REALTIME_BASE_URL = base_url
    settings.REALTIME_API_KEY = api_key
    settings.USES_LOCAL_ENGINE = True


@pytest.fixture
async def local_engine(start_engine: StartEngine, settings: SettingsWrapper) -> RunningEngine:
    """A speech-less engine on loopback; the product's settings point at it."""
    running = await start_engine()
    point_settings_at(settings, base_url=running.base_url, api_key=running.config.api_key)
    return running


@pytest.fixture
async def speech_engine(speech_stack: Any, settings: SettingsWrapper) -> AsyncIterator[ServedEngine]:
    """An engine with the real speech stack (loaded once per session); settings point at it."""
    from tests.engine.fixtures_media import API_KEY as MEDIA_API_KEY

    runtime = EngineRuntime(speech=speech_stack, loopback_candidates=True)
    async with serve_engine(runtime) as served:
        point_settings_at(settings, base_url=served.base_url, api_key=MEDIA_API_KEY)
        yield served


@dataclass
class ThreadedEngine:
    """An engine served by its own event loop in a daemon thread (for sync tests)."""

    base_url: str
    api_key: str
    app: web.Application
    loop: asyncio.AbstractEventLoop

    @property
    def state(self) -> Engine:
        return self.app[ENGINE]

    def call_ids(self) -> set[str]:
        """Ids of the calls the engine holds now (read on the engine's own loop)."""

        async def read() -> set[str]:
            return {call.id for call in self.state.calls.calls()}

        return asyncio.run_coroutine_threadsafe(read(), self.loop).result(timeout=5)


@pytest.fixture
def engine_in_thread(settings: SettingsWrapper) -> Iterator[Callable[..., ThreadedEngine]]:
    """Factory: `engine_in_thread(speech=None, **config)` starts an engine in a thread of its own."""
    stops: list[Callable[[], None]] = []

    def start(*, speech: Any = None, **overrides: Any) -> ThreadedEngine:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "api_key": API_KEY,
            "speech": speech is not None,
            "max_calls": 4,
            "loopback_candidates": True,
        }
        values.update(overrides)
        config = EngineConfig(**values)
        runtime = EngineRuntime(speech=speech, loopback_candidates=config.loopback_candidates)
        loop = asyncio.new_event_loop()
        started: Future[tuple[web.Application, web.AppRunner]] = Future()

        async def serve() -> tuple[web.Application, web.AppRunner]:
            app = create_app(config, runtime=runtime)
            runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            await asyncio.wait_for(app[ENGINE].ready.wait(), 10)
            return app, runner

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                started.set_result(loop.run_until_complete(serve()))
            except BaseException as exc:  # reported to the starting test below
                started.set_exception(exc)
                return
            loop.run_forever()

        thread = threading.Thread(target=run, name="realtime-local-test", daemon=True)
        thread.start()
        app, runner = started.result(timeout=30)
        port = int(runner.addresses[0][1])

        def stop() -> None:
            asyncio.run_coroutine_threadsafe(asyncio.wait_for(runner.cleanup(), 15), loop).result(20)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

        stops.append(stop)
        running = ThreadedEngine(
            base_url=f"http://127.0.0.1:{port}/v1", api_key=config.api_key, app=app, loop=loop
        )
        point_settings_at(settings, base_url=running.base_url, api_key=running.api_key)
        return running

    yield start
    for stop in reversed(stops):
        stop()


# --- web-backend: signed-in async clients and a misbehaving upstream -----------------------------


@dataclass
class SignedIn:
    """A user and an `AsyncClient` with their session."""

    user: User
    client: AsyncClient


@pytest.fixture
def sign_in_async(transactional_db: None) -> Callable[..., Awaitable[SignedIn]]:
    """Factory: `await sign_in_async(staff=True)` makes a user and an `AsyncClient` signed in as them."""

    async def make(*, staff: bool = True) -> SignedIn:
        factory = StaffUserFactory if staff else UserFactory
        user: User = await sync_to_async(factory.create)()
        client = AsyncClient()
        await client.aforce_login(user)
        return SignedIn(user=user, client=client)

    return make


@dataclass
class SeenRequest:
    """What a fake upstream received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeUpstream:
    """A real loopback HTTP server standing in for the Realtime API, answering as told."""

    base_url: str
    seen: list[SeenRequest] = field(default_factory=list)


Respond = Callable[[web.Request], Awaitable[web.StreamResponse]]


@pytest.fixture
async def fake_upstream(
    settings: SettingsWrapper,
) -> AsyncIterator[Callable[[Respond], Awaitable[FakeUpstream]]]:
    """Factory: `await fake_upstream(respond)` serves `respond` for every path on loopback, records
    each request, and points the product's settings at it (REALTIME_HTTP_TIMEOUT 0.5 s)."""
    runners: list[web.AppRunner] = []

    async def start(respond: Respond) -> FakeUpstream:
        upstream = FakeUpstream(base_url="")

        async def handle(request: web.Request) -> web.StreamResponse:
            body = await request.read()
            upstream.seen.append(
                SeenRequest(
                    method=request.method, path=request.path_qs, headers=dict(request.headers), body=body
                )
            )
            return await respond(request)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        upstream.base_url = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
        point_settings_at(settings, base_url=upstream.base_url, api_key="sk-fake")
        settings.REALTIME_HTTP_TIMEOUT = 0.5
        return upstream

    yield start
    for runner in runners:
        await asyncio.wait_for(runner.cleanup(), 10)


@pytest.fixture
def default_agent(transactional_db: None) -> AgentProfile:
    """The default agent profile (a transactional test flushes the one the data migration made)."""
    profile, _ = AgentProfile.objects.get_or_create(
        is_default=True, defaults={"name": "Default agent", "instructions": "Answer briefly."}
    )
    return profile


# --- observer: a fresh channel layer, the observer worker, live calls on the engine ---------------

from calls.models import Call  # noqa: E402  (appended section: shared fixtures grow by appending)
from tests.factories import AgentProfileFactory  # noqa: E402


@pytest.fixture
def channel_layer(settings: SettingsWrapper) -> Any:
    """A fresh in-memory channel layer for this test (its queues belong to this test's loop)."""
    from channels.layers import get_channel_layer

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    return get_channel_layer()


@pytest.fixture
async def observer_worker(channel_layer: Any) -> AsyncIterator[asyncio.Task[None]]:
    """The `call-observer` Channels worker running on the test's loop, as `serve` embeds it."""
    from calls.observer.worker import run_embedded_worker

    task = asyncio.create_task(run_embedded_worker())
    yield task
    task.cancel()
    await asyncio.wait([task], timeout=15)


@dataclass
class LiveCall:
    """A call live on the engine (SIP-style, accepted on `accept()`) and its `Call` row."""

    call: Call
    engine: RunningEngine

    @property
    def provider_call_id(self) -> str:
        assert self.call.provider_call_id is not None
        return self.call.provider_call_id

    async def accept(self) -> None:
        """Answer the call with the session config of its agent (as the telephony service will)."""
        from calls.services.session_config import build_session_config

        session = await sync_to_async(build_session_config)(self.call.agent, mode=self.call.mode)
        response = await self.engine.control(self.provider_call_id, "accept", session)
        assert response.status_code == 200, response.text


@pytest.fixture
def make_live_call(transactional_db: None) -> Callable[..., Awaitable[LiveCall]]:
    """Factory: `await make_live_call(engine, user=…, **call_fields)` creates an incoming call on the
    engine and its connecting `Call` row (web audio call of `user`, a new staff user by default)."""

    async def make(engine: RunningEngine, *, user: User | None = None, **fields: Any) -> LiveCall:
        provider_call_id = await engine.incoming_call()
        owner = user or await sync_to_async(StaffUserFactory.create)()
        agent = fields.pop("agent", None) or await sync_to_async(AgentProfileFactory.create)()
        call = await Call.objects.acreate(
            provider_call_id=provider_call_id,
            user=owner,
            agent=agent,
            status=Call.Status.CONNECTING,
            **fields,
        )
        call.agent = agent
        return LiveCall(call=call, engine=engine)

    return make


@pytest.fixture(autouse=True)
async def close_async_orm_connections() -> AsyncIterator[None]:
    """Close the connections that async ORM calls opened in asgiref's shared worker thread.

    Outside a request nothing closes them, and PostgreSQL then refuses to drop the test database
    ("being accessed by other users") at the end of the session.
    """
    yield
    await sync_to_async(connections.close_all)()


@pytest.fixture
async def observer_inbox() -> Callable[[], Awaitable[dict[str, Any]]]:
    """Reads what was sent to the observer's channel (for tests where no observer worker runs).

    The channel is flushed first, so earlier tests' requests are not seen. Each call returns the next
    message, waiting at most 5 s.
    """
    from channels.layers import get_channel_layer

    from calls.observer.dispatch import OBSERVER_CHANNEL

    layer = get_channel_layer()
    assert layer is not None
    await layer.flush()

    async def receive() -> dict[str, Any]:
        message: dict[str, Any] = await asyncio.wait_for(layer.receive(OBSERVER_CHANNEL), 5)
        return message

    return receive
