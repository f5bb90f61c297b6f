"""A misbehaving Realtime upstream on loopback: a proxy in front of the real local engine.

The cluster's web and worker processes use it as REALTIME_BASE_URL. It forwards every REST request
and the sideband WebSocket to the engine, and on request:

- `mode = "error"`: answers every REST request with a 500 in the API's error shape (an outage upstream);
- `mode = "hang"`: never answers a REST request (an upstream that times out);
- `delay_s`: answers after a delay (a slow upstream: a request is in flight for that long);
- `close_sidebands(code)`: closes every sideband it relays, as the API does when it drops a
  connection (the call goes on upstream);
- `inject(call_id, text)`: sends a raw text frame to the sideband(s) of a call, between real events
  (malformed events).

It records what it relayed from the engine to each sideband (`relayed[call_id]`: the event ids), so a
test can check that every event that reached a worker was stored. Runs its own event loop in a
daemon thread; the tests drive it from synchronous code.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import Any, Literal, TypeVar

import aiohttp
from aiohttp import WSMsgType, web

T = TypeVar("T")
Mode = Literal["pass", "error", "hang"]
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "host", "upgrade"}


class FaultProxy:
    def __init__(self) -> None:
        self.target = ""  # the engine's base URL (no /v1), set before the first request
        self.mode: Mode = "pass"
        self.delay_s = 0.0
        self.relayed: dict[str, list[str]] = {}
        self.sideband_opens: dict[str, int] = {}
        self.rest_requests: list[str] = []
        self._sockets: dict[str, list[web.WebSocketResponse]] = {}
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None
        self.port = 0
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        """Base URL of the proxy (no /v1)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _call(self, coroutine: Coroutine[Any, Any, T], timeout_s: float = 30.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(timeout_s)

    async def _start(self) -> None:
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120))
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=1.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def _stop(self) -> None:
        for sockets in list(self._sockets.values()):
            for ws in list(sockets):
                await ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    # --- faults -----------------------------------------------------------------------------------
    def close_sidebands(self, code: int = 1011) -> int:
        """Close every relayed sideband (the call goes on at the engine); how many were closed."""

        async def close() -> int:
            sockets = [ws for group in self._sockets.values() for ws in group]
            for ws in sockets:
                await ws.close(code=code, message=b"upstream closed the connection")
            return len(sockets)

        return self._call(close())

    def inject(self, call_id: str, text: str) -> int:
        """Send `text` as one frame to the call's sideband(s); how many received it."""

        async def send() -> int:
            sockets = list(self._sockets.get(call_id, []))
            for ws in sockets:
                await ws.send_str(text)
            return len(sockets)

        return self._call(send())

    # --- relaying ---------------------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if request.path.endswith("/realtime") and request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._sideband(request)
        self.rest_requests.append(f"{request.method} {request.path}")
        if self.mode == "error":
            return web.json_response(
                {
                    "error": {
                        "message": "The server had an error while processing your request.",
                        "type": "server_error",
                        "code": None,
                        "param": None,
                    }
                },
                status=500,
            )
        if self.mode == "hang":
            await asyncio.sleep(3600)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        assert self._http is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with self._http.request(
            request.method, self.target + request.path_qs, headers=headers, data=await request.read()
        ) as upstream:
            body = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=upstream.status, body=body, headers=out)

    async def _sideband(self, request: web.Request) -> web.WebSocketResponse:
        call_id = request.query.get("call_id", "")
        assert self._http is not None
        client = web.WebSocketResponse(autoping=True)
        upstream_headers = {"Authorization": request.headers.get("Authorization", "")}
        target = self.target.replace("http://", "ws://") + request.path_qs
        try:
            upstream = await self._http.ws_connect(target, headers=upstream_headers)
        except aiohttp.WSServerHandshakeError as exc:
            return web.Response(status=exc.status, text=exc.message)  # type: ignore[return-value]
        await client.prepare(request)
        self._sockets.setdefault(call_id, []).append(client)
        self.sideband_opens[call_id] = self.sideband_opens.get(call_id, 0) + 1
        relayed = self.relayed.setdefault(call_id, [])

        async def down() -> None:
            async for message in upstream:
                if message.type != WSMsgType.TEXT:
                    break
                try:
                    event_id = json.loads(message.data).get("event_id")
                except ValueError:
                    event_id = None
                if client.closed:
                    break
                await client.send_str(message.data)
                if event_id:
                    relayed.append(str(event_id))

        async def up() -> None:
            async for message in client:
                if message.type != WSMsgType.TEXT:
                    break
                await upstream.send_str(message.data)

        tasks = [asyncio.ensure_future(down()), asyncio.ensure_future(up())]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await upstream.close()
            await client.close()
            self._sockets[call_id].remove(client)
        return client
