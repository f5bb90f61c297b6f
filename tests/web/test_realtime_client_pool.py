"""`realtime_client.loop_clients`: pooled HTTP clients per event loop, kept-alive to the API, a burst
spread over several small pools."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import httpx
import pytest
from aiohttp import web

from calls.services import realtime_client
from calls.services.realtime_client import RealtimeClient, aclose_shared_http_client, shared_http_client
from tests.web.conftest import FakeUpstream, Respond

StartUpstream = Callable[[Respond], Awaitable[FakeUpstream]]


async def hung_up(request: web.Request) -> web.StreamResponse:
    return web.Response(status=200, text="{}", content_type="application/json")


async def test_clients_on_one_loop_share_one_pool_and_reuse_its_connection(
    fake_upstream: StartUpstream,
) -> None:
    upstream = await fake_upstream(hung_up)
    for key in ("sk-one", "sk-two"):
        async with RealtimeClient(base_url=upstream.base_url, api_key=key, timeout=2) as client:
            await client.hangup_call("rtc_abcdef123456")
    assert shared_http_client() is shared_http_client()
    assert not shared_http_client().is_closed
    # Each request carried its own client's key, over one kept-alive connection.
    assert [seen.headers["Authorization"] for seen in upstream.seen] == ["Bearer sk-one", "Bearer sk-two"]
    assert len(pool_connections(shared_http_client())) == 1
    await aclose_shared_http_client()


def pool_connections(client: httpx.AsyncClient) -> list[object]:
    return list(client._transport._pool.connections)  # type: ignore[attr-defined]


async def test_a_burst_is_spread_over_small_pools_and_single_requests_keep_one_connection(
    fake_upstream: StartUpstream,
) -> None:
    """Concurrent requests go to the least busy pool (httpcore's pool costs work quadratic in its
    connections per request), so no pool opens more than its share; one request at a time always
    takes the first pool and reuses its kept-alive connection."""
    release = asyncio.Event()
    ports: list[int] = []  # the client port of each request: one per TCP connection
    burst = 2 * realtime_client.POOL_SHARDS

    async def held(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        ports.append(request.transport.get_extra_info("peername")[1])
        await release.wait()
        return web.Response(status=200, text="{}", content_type="application/json")

    upstream = await fake_upstream(held)

    async def hang_up() -> None:
        async with RealtimeClient(base_url=upstream.base_url, api_key="sk-x", timeout=5) as client:
            await client.hangup_call("rtc_abcdef123456")

    tasks = [asyncio.create_task(hang_up()) for _ in range(burst)]
    async with asyncio.timeout(5):
        while len(ports) < burst:  # noqa: ASYNC110 (the upstream counts what reached it)
            await asyncio.sleep(0.01)
    clients = realtime_client.loop_clients()
    assert clients.in_flight == [2] * realtime_client.POOL_SHARDS
    assert [len(pool_connections(client)) for client in clients.clients] == [2] * realtime_client.POOL_SHARDS
    release.set()
    await asyncio.gather(*tasks)
    assert clients.in_flight == [0] * realtime_client.POOL_SHARDS
    assert len(set(ports)) == burst

    for _ in range(3):
        await hang_up()
    sequential = ports[burst:]
    assert len(set(sequential)) == 1, "one request at a time: one connection"
    assert sequential[0] in ports[:burst], "a kept-alive connection of the burst, not a new one"
    assert all(len(pool_connections(client)) == 2 for client in clients.clients)
    await aclose_shared_http_client()


async def test_closing_the_shared_client_makes_a_fresh_one_next_time() -> None:
    first = shared_http_client()
    await aclose_shared_http_client()
    assert first.is_closed
    second = shared_http_client()
    assert second is not first and not second.is_closed
    await aclose_shared_http_client()


def test_each_loop_has_its_own_client_and_finished_loops_are_forgotten() -> None:
    async def grab() -> int:
        return id(shared_http_client())

    first = asyncio.run(grab())
    second = asyncio.run(grab())
    assert first != second or len(realtime_client._SHARED_CLIENTS) <= 1
    asyncio.run(grab())
    # The loops of the earlier asyncio.run calls are closed: their clients were dropped on the next use.
    assert len(realtime_client._SHARED_CLIENTS) <= 1


@pytest.mark.parametrize("status", [500])
async def test_a_failed_request_does_not_close_the_pool(fake_upstream: StartUpstream, status: int) -> None:
    async def failing(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, text="{}", content_type="application/json")

    upstream = await fake_upstream(failing)
    with pytest.raises(realtime_client.RealtimeUnavailable):
        async with RealtimeClient(base_url=upstream.base_url, api_key="sk-x", timeout=2) as client:
            await client.hangup_call("rtc_abcdef123456")
    assert not shared_http_client().is_closed
    await aclose_shared_http_client()
