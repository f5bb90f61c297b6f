"""The sideband: WebSocket `GET /v1/realtime?call_id=…` attached to a live call (protocol.md §3).

Every server event of the call is mirrored to each attached socket; client events received on it act
on the call (`LocalCall.handle_client_event`). Several observers may attach. Closing a sideband never
ends the call, and the call ending closes its sidebands (code 1000).

Back-pressure: each socket has its own bounded queue drained by a writer task. `send_event` (called
from the call's fan-out) never blocks; when an observer falls `queue_size` events behind, the socket
is closed with 1008 and detached, and the call goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from aiohttp import WSMsgType, web

from realtime_local.auth import KEY_SUBPROTOCOL_PREFIX
from realtime_local.call import LocalCall, ServerEvent
from realtime_local.events import error_event, new_event_id

logger = logging.getLogger(__name__)

#: Largest client event accepted on a sideband socket (images go in as data URLs: keep it generous).
MAX_MESSAGE_BYTES = 16 * 1024 * 1024
WS_CLOSE_SLOW_OBSERVER = 1008
#: Seconds to wait for a socket to take the close frame before the connection is aborted.
CLOSE_TIMEOUT = 2.0


class SidebandObserver:
    """One attached socket: an `EventSink` with a bounded queue and a writer task."""

    def __init__(self, ws: web.WebSocketResponse, *, queue_size: int, send_timeout: float) -> None:
        self._ws = ws
        self._queue: asyncio.Queue[ServerEvent] = asyncio.Queue(queue_size)
        self._send_timeout = send_timeout
        self.dropped = False
        self.gone = asyncio.Event()
        """Set when the observer can no longer be served (dropped as slow, or its socket failed)."""

    async def send_event(self, event: ServerEvent) -> None:
        """Queue one event without waiting; never raises (the `EventSink` contract)."""
        if self.gone.is_set():
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("sideband observer too slow: dropping it")
            self.dropped = True
            self.gone.set()

    async def write_forever(self) -> None:
        """Writer task: send queued events in order until cancelled or the socket fails."""
        try:
            while True:
                event = await self._queue.get()
                await asyncio.wait_for(self._ws.send_str(json.dumps(event)), self._send_timeout)
                self._queue.task_done()
        except (ConnectionError, TimeoutError, RuntimeError) as exc:
            # RuntimeError: aiohttp's "cannot write to closing transport"
            logger.info("sideband socket write failed: %r", exc)
            self.dropped = True
            self.gone.set()

    async def drain(self) -> None:
        """Wait until every queued event has been written."""
        await self._queue.join()

    async def send_now(self, event: ServerEvent) -> None:
        """Queue an event addressed to this observer only (e.g. an error about its own message)."""
        await self.send_event({"event_id": new_event_id(), **event})


async def serve_sideband(
    request: web.Request, call: LocalCall, *, queue_size: int, send_timeout: float
) -> web.WebSocketResponse:
    """Upgrade `request`, attach to `call` and pump both directions until either side is done."""
    # The key-bearing subprotocol is listed as known so that aiohttp never logs the client's offer
    # (which holds the key) as "not overlapping"; `realtime` wins whenever the client offers it.
    offered = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",")]
    known = ("realtime", *(p for p in offered if p.startswith(KEY_SUBPROTOCOL_PREFIX)))
    ws = web.WebSocketResponse(protocols=known, heartbeat=30.0, max_msg_size=MAX_MESSAGE_BYTES)
    await ws.prepare(request)
    observer = SidebandObserver(ws, queue_size=queue_size, send_timeout=send_timeout)
    detach = call.attach(observer, label=request.headers.get("User-Agent", "")[:200])
    writer = asyncio.create_task(observer.write_forever(), name=f"sideband-writer-{call.id}")
    reader = asyncio.create_task(_read_client_events(ws, call, observer), name=f"sideband-reader-{call.id}")
    call_ended = asyncio.create_task(call.ended.wait())
    observer_gone = asyncio.create_task(observer.gone.wait())
    try:
        await asyncio.wait({reader, call_ended, observer_gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        detach()
        if call_ended.done() and not observer.gone.is_set():
            # Let the last events (e.g. the call's final ones) reach the observer before closing.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(observer.drain(), 1.0)
        for task in (reader, writer, call_ended, observer_gone):
            task.cancel()
        await asyncio.gather(reader, writer, call_ended, observer_gone, return_exceptions=True)
        if not ws.closed:
            if observer.dropped:
                code, reason = WS_CLOSE_SLOW_OBSERVER, b"observer too slow"
            else:
                code, reason = 1000, b"call ended" if call.ended.is_set() else b""
            try:
                # A peer that stopped reading cannot take even the close frame: don't wait for it.
                await asyncio.wait_for(ws.close(code=code, message=reason), CLOSE_TIMEOUT)
            except (TimeoutError, ConnectionError, RuntimeError):
                if request.transport is not None:
                    request.transport.abort()
    return ws


async def _read_client_events(ws: web.WebSocketResponse, call: LocalCall, observer: SidebandObserver) -> None:
    """Forward each JSON client event to the call; malformed messages get an `error` on this socket."""
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            event = _parse_event(message.data)
            if event is None:
                await observer.send_now(error_event("The message is not a JSON object.", code="invalid_json"))
                continue
            await call.handle_client_event(event)
        elif message.type == WSMsgType.BINARY:
            await observer.send_now(
                error_event("Binary messages are not supported; send JSON text.", code="invalid_json")
            )
        elif message.type == WSMsgType.ERROR:
            logger.info("sideband socket error: %r", ws.exception())
            return


def _parse_event(text: str) -> dict[str, Any] | None:
    try:
        event = json.loads(text)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None
