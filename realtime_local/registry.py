"""CallRegistry: the engine's live calls by id, with the limits that keep a small machine usable.

- At most `max_calls` calls exist at once (any state); creating one more is the API's 429. A slot is
  reserved *before* the slow part of call creation (SDP answer) so concurrent requests cannot overshoot.
- A sweeper ends calls nobody uses: active calls with no media/event activity for `idle_timeout`,
  incoming calls not accepted or rejected within `accept_timeout`.
- A call leaves the registry when its `ended` event is set, whatever ended it (API, peer, sweeper), so
  the registry never holds a finished call and call control answers 404 for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass

from realtime_local.call import LocalCall
from realtime_local.errors import call_not_found, too_many_calls

logger = logging.getLogger(__name__)


@dataclass
class _Entry:
    call: LocalCall
    created: float  # time.monotonic()
    watcher: asyncio.Task[None]


class CallRegistry:
    """Live calls of one engine. Create inside the running loop; `start()` then `close()`."""

    def __init__(
        self, *, max_calls: int, idle_timeout: float, accept_timeout: float, sweep_interval: float = 1.0
    ) -> None:
        self.max_calls = max_calls
        self.idle_timeout = idle_timeout
        self.accept_timeout = accept_timeout
        self._sweep_interval = sweep_interval
        self._entries: dict[str, _Entry] = {}
        self._reserved = 0
        self._sweeper: asyncio.Task[None] | None = None
        self._closing = False

    # ---- lookup -----------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._entries

    def calls(self) -> list[LocalCall]:
        return [entry.call for entry in self._entries.values()]

    def get(self, call_id: str) -> LocalCall:
        """The live call `call_id`, or the API's 404 (unknown or already ended)."""
        entry = self._entries.get(call_id)
        if entry is None or entry.call.state == "ended":
            raise call_not_found(call_id)
        return entry.call

    # ---- creation ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def reserve(self) -> Iterator[None]:
        """Hold one call slot while a call is being created; raises the API's 429 when none is free.

        Register the call with `add` inside the block; the slot is released when the block exits.
        """
        if self._closing or len(self._entries) + self._reserved >= self.max_calls:
            raise too_many_calls(self.max_calls)
        self._reserved += 1
        try:
            yield
        finally:
            self._reserved -= 1

    def add(self, call: LocalCall) -> None:
        """Register a new call (inside `reserve()`); it is removed when it ends."""
        if call.id in self._entries:
            raise ValueError(f"duplicate call id {call.id}")
        watcher = asyncio.get_running_loop().create_task(self._watch(call), name=f"watch-{call.id}")
        self._entries[call.id] = _Entry(call=call, created=time.monotonic(), watcher=watcher)

    async def _watch(self, call: LocalCall) -> None:
        await call.ended.wait()
        self._entries.pop(call.id, None)
        logger.info("call %s ended (%s); %d live", call.id, call.end_reason, len(self._entries))

    # ---- housekeeping -----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the sweeper that ends idle and unanswered calls."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever(), name="call-sweeper")

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            await self.sweep()

    async def sweep(self) -> None:
        """End incoming calls past `accept_timeout` and active calls idle past `idle_timeout`."""
        now = time.monotonic()
        for entry in list(self._entries.values()):
            call = entry.call
            reason: str | None = None
            if call.state == "incoming" and now - entry.created > self.accept_timeout:
                reason = "accept_timeout"
            elif call.state == "active" and now - call.last_activity > self.idle_timeout:
                reason = "idle_timeout"
            if reason is not None:
                logger.info("ending call %s: %s", call.id, reason)
                try:
                    await call.hangup(reason)
                except Exception:  # one broken call must not stop the sweeper for the others
                    logger.exception("hangup of call %s failed", call.id)

    async def close(self) -> None:
        """Refuse new calls, hang up every call and wait for their teardown (engine shutdown)."""
        self._closing = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        entries = list(self._entries.values())
        results = await asyncio.gather(
            *(entry.call.hangup("engine_shutdown") for entry in entries), return_exceptions=True
        )
        for entry, result in zip(entries, results, strict=True):
            if isinstance(result, BaseException):
                logger.error("hangup of call %s failed at shutdown: %r", entry.call.id, result)
                entry.watcher.cancel()
        await asyncio.gather(*(entry.watcher for entry in entries), return_exceptions=True)
        self._entries.clear()
