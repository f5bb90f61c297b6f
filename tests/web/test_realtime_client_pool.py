"""`realtime_client`: a server's loop shares one HTTP session, kept-alive to the API; elsewhere each
client has its own, closed with it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from calls.services import realtime_client
from calls.services.realtime_client import (
    RealtimeClient,
    aclose_shared_http_client,
    share_http_client_on_this_loop,
    shared_http_client,
)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, list[tuple[str, int]]]]:
    """A loopback API that answers every request and records (Authorization, client port)."""
    seen: list[tuple[str, int]] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        seen.append((request.headers.get("Authorization", ""), peer[1] if peer else 0))
        status = 500 if "rtc_failing" in request.path else 200
        return web.Response(status=status, text="{}", content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.5, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/v1", seen
    await aclose_shared_http_client()
    await runner.cleanup()


async def test_clients_on_one_loop_share_one_pool_and_reuse_its_connection(
    upstream: tuple[str, list[tuple[str, int]]],
) -> None:
    base_url, seen = upstream
    session = share_http_client_on_this_loop()
    for key in ("sk-one", "sk-two"):
        async with RealtimeClient(base_url=base_url, api_key=key, timeout=2) as client:
            await client.hangup_call("rtc_abcdef123456")
    assert shared_http_client() is session is share_http_client_on_this_loop()
    assert not session.closed
    # Each request carried its own client's key, over one kept-alive connection (same client port).
    assert [key for key, _ in seen] == ["Bearer sk-one", "Bearer sk-two"]
    assert len({port for _, port in seen}) == 1


async def test_closing_the_shared_session_makes_a_fresh_one_next_time() -> None:
    first = share_http_client_on_this_loop()
    await aclose_shared_http_client()
    assert first.closed and shared_http_client() is None
    second = share_http_client_on_this_loop()
    assert second is not first and not second.closed
    await aclose_shared_http_client()


async def test_without_a_shared_session_a_client_closes_its_own(
    upstream: tuple[str, list[tuple[str, int]]],
) -> None:
    base_url, seen = upstream
    assert shared_http_client() is None
    client = RealtimeClient(base_url=base_url, api_key="sk-x", timeout=2)
    async with client:
        await client.hangup_call("rtc_abcdef123456")
        own = client._own
        assert own is not None and not own.closed
    assert own.closed and len(seen) == 1


def test_each_loop_has_its_own_session() -> None:
    async def grab() -> aiohttp.ClientSession:
        session = share_http_client_on_this_loop()
        await aclose_shared_http_client()
        return session

    assert asyncio.run(grab()) is not asyncio.run(grab())


async def test_a_failed_request_does_not_close_the_pool(upstream: tuple[str, list[tuple[str, int]]]) -> None:
    base_url, _ = upstream
    session = share_http_client_on_this_loop()
    with pytest.raises(realtime_client.RealtimeUnavailable):
        async with RealtimeClient(base_url=base_url, api_key="sk-x", timeout=2) as client:
            await client.hangup_call("rtc_failing")
    assert shared_http_client() is session and not session.closed
