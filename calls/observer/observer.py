"""`CallObserver`: watches one live call over its sideband WebSocket until the call ends.

What it does with each server event, in arrival order:
1. numbers it (per-call `sequence`, contiguous from 1 across reconnects) and buffers it;
2. parses it leniently (`calls.observer.events`) and feeds the transcript assembler;
3. guards the session: a `session.updated` whose instructions or tools are not ours is answered with a
   `session.update` putting ours back and a `voiceagent.security.session_tampered` event;
4. flushes the buffer (events, turns, usage, status in one transaction, shared with the batches of
   the worker's other calls: calls.observer.writers) at every turn boundary, every `flush_interval`
   seconds, and on close; then publishes the flushed events to `call.<uuid>`. A call with
   `MAX_BUFFERED_EVENTS` unwritten events is not read further until its write is done.

Lifecycle (design principle 12): `run()` is the call's one cancellation scope (its flush timer and
duration guard are cancelled with it); every (re)connection is a numbered attempt, and a reader whose
attempt is no longer current stops acting; `request_stop()` and the end of `run()` are idempotent.
A sideband that closes while the call is live is reconnected with backoff; if the API says the call
is gone (404 on reconnect) the call ended; if `max_attempts` reconnections fail, the call is hung up
and closed with `end_reason` "observer lost the call".

Across processes (calls.observer.lease): an observer started by the worker holds the call's lease
token and every write checks it. When a write (or the worker's heartbeat) finds the lease taken over,
the observer is *fenced*: it drops what it buffered, closes its sideband and stops without another
write; the new owner goes on from the stored numbering and repairs the transcript with
`conversation.item.retrieve` for the items whose events it may have missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import json
import logging
import uuid
from typing import Any, Final

from channels.db import database_sync_to_async
from django.utils import timezone
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from calls.models import Call
from calls.observer import store
from calls.observer.events import TURN_BOUNDARIES, SessionEvent, parse_server_event
from calls.observer.images import strip_images
from calls.observer.lease import LeaseLost, LeaseToken
from calls.observer.publish import publish_events, publish_status
from calls.observer.tools import ToolRunner
from calls.observer.transcript import TranscriptAssembler
from calls.observer.writers import write as write_merged
from voiceagent.monitoring.logs import bind_call_id

logger = logging.getLogger(__name__)

SECURITY_TAMPER_EVENT: Final = "voiceagent.security.session_tampered"
MALFORMED_EVENT: Final = "voiceagent.malformed"
END_REASON_LOST: Final = "observer lost the call"
END_REASON_UPSTREAM: Final = "ended upstream"
END_REASON_MAX_DURATION: Final = "maximum call duration reached"
END_REASON_TAMPERING: Final = "session tampering"
#: Largest sideband message accepted (the engine's own limit; images travel as data URLs).
MAX_MESSAGE_BYTES: Final = 16 * 1024 * 1024
#: Restores of a tampered session before the call is hung up (someone keeps changing it).
MAX_TAMPER_RESTORES: Final = 5
#: Longest text kept of a message that is not a JSON object.
MAX_MALFORMED_CHARS: Final = 10_000
#: Longest wait for a hang-up the observer started before it records the end itself.
HANG_UP_WAIT_S: Final = 15.0
#: Items retrieved at most to repair a transcript after a takeover (the most recent ones).
MAX_REPAIR_ITEMS: Final = 50
#: Unwritten events a call may hold; past it, its sideband is not read until its write is done
#: (back-pressure: a database slower than the calls bounds the worker's memory, not its appetite).
MAX_BUFFERED_EVENTS: Final = 2_000


class Outcome(enum.Enum):
    """Why the observation ended."""

    STOPPED = "stopped"  # we were asked to stop (our hang-up service ended the call)
    GONE = "gone"  # the API no longer knows the call: it ended upstream
    LOST = "lost"  # the sideband could not be re-established
    FENCED = "fenced"  # another worker took the call's lease over: we stopped without writing


def session_differences(expected: dict[str, Any], session: SessionEvent) -> dict[str, dict[str, Any]]:
    """The guarded fields (instructions, tools) of `session` that are not what we configured."""
    got = session.session
    diff: dict[str, dict[str, Any]] = {}
    fields = got.model_fields_set
    if "instructions" in fields and (got.instructions or "") != (expected.get("instructions") or ""):
        diff["instructions"] = {"expected": expected.get("instructions"), "received": got.instructions}
    if "tools" in fields and not _tools_match(expected.get("tools") or [], got.tools or []):
        diff["tools"] = {"expected": expected.get("tools") or [], "received": got.tools}
    return diff


def _tools_match(expected: list[dict[str, Any]], received: list[dict[str, Any]]) -> bool:
    """Same tools in the same order, each with at least the fields we sent (the API fills defaults)."""
    if len(expected) != len(received):
        return False
    return all(
        isinstance(got, dict) and all(got.get(key) == value for key, value in want.items())
        for want, got in zip(expected, received, strict=True)
    )


class CallObserver:
    """Observes the call `call_id` (our uuid). Create it, `await run()`; `request_stop()` to end."""

    def __init__(
        self,
        call_id: uuid.UUID,
        *,
        flush_interval: float = 0.25,
        connect_timeout: float = 10.0,
        max_attempts: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 8.0,
        stop_grace: float = 2.0,
        lease: LeaseToken | None = None,
        user_agent: str | None = None,
    ) -> None:
        self.call_id = call_id
        #: The call's lease (None: unfenced, e.g. a test driving one observer by hand).
        self.lease = lease
        self.user_agent = user_agent
        #: Set once the lease was found taken over: nothing more is written.
        self.fenced = False
        #: Item ids known from stored events/turns or seen since (repair after a resumption).
        self._known_items: set[str] = set()
        self._repairing = False
        self._repair_queue: list[str] = []
        self.flush_interval = flush_interval
        self.connect_timeout = connect_timeout
        self.max_attempts = max_attempts
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.stop_grace = stop_grace
        #: Number of the current connection attempt; a reader of an older attempt stops acting.
        self.attempt = 0
        #: Connections that were established (1 + successful reconnections).
        self.connections = 0
        self.connection: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.finished = asyncio.Event()
        self.outcome: Outcome | None = None
        self._stopping = asyncio.Event()
        self._stop_reason = ""
        self._snapshot: store.CallSnapshot | None = None
        self._next_sequence = 1
        self._buffer: list[store.PendingEvent] = []
        self._assembler = TranscriptAssembler()
        self._activate_at: dt.datetime | None = None
        self._answered_at: dt.datetime | None = None
        self._answered = asyncio.Event()
        #: A tampering seen but not yet recorded on the call row.
        self._tamper_unwritten = False
        self._tamper_restores = 0
        self._flush_lock = asyncio.Lock()
        self._last_error = ""
        self._background: set[asyncio.Task[None]] = set()
        #: Runs the model's function calls (calls.observer.tools); made when the call is loaded.
        self.tools: ToolRunner | None = None

    # ---- control ----------------------------------------------------------------------------------

    def request_stop(self, reason: str = "") -> None:
        """Stop observing: the call was hung up (by us). Idempotent; the first reason is kept."""
        if not self._stopping.is_set():
            self._stop_reason = reason
            self._stopping.set()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # ---- the call's lifecycle -----------------------------------------------------------------------

    async def run(self) -> Outcome | None:
        """Observe until the call ends; returns why (None if the call was unknown or already over)."""
        bind_call_id(self.call_id)  # every log line of this task (and the tool tasks it starts)
        try:
            snapshot = await database_sync_to_async(store.load_call)(self.call_id)
            if snapshot is None or snapshot.status in Call.FINAL_STATUSES or not snapshot.provider_call_id:
                logger.info(
                    "call %s: nothing to observe (unknown, final or without a provider id)", self.call_id
                )
                return None
            self._snapshot = snapshot
            self._next_sequence = snapshot.last_sequence + 1
            self._assembler = TranscriptAssembler(usage=snapshot.usage)
            if snapshot.last_sequence > 0:
                # Resumed (restart or takeover): the previous observer's last events may be lost.
                items = await database_sync_to_async(store.items_state)(self.call_id)
                self._known_items = set(items.known)
                self._repairing = True
                self._repair_queue = items.unfinished[-MAX_REPAIR_ITEMS:]
            if snapshot.answered_at is not None:
                self._answered_at = snapshot.answered_at
                self._answered.set()
            logger.info("call %s: observing provider call %s", self.call_id, snapshot.provider_call_id)
            self.tools = ToolRunner(
                self.call_id,
                send=self._send_current,
                record=self._record,
                hang_up=self._start_hang_up,
                expected_session=snapshot.expected_session,
                lease=self.lease,
                call=snapshot.call,
            )
            self.tools.start()
            helpers = [
                asyncio.create_task(self._flush_forever(), name=f"observer-flush-{self.call_id}"),
                asyncio.create_task(self._guard_duration(), name=f"observer-guard-{self.call_id}"),
            ]
            try:
                outcome = await self._observe(snapshot.provider_call_id)
            finally:
                for task in helpers:
                    task.cancel()
                await asyncio.gather(*helpers, return_exceptions=True)
                await self.tools.aclose()
                if self._background and not self.fenced:  # our hang-up: let it record its reason
                    await asyncio.wait(self._background, timeout=HANG_UP_WAIT_S)
                # A worker shutting down cancels us, but what was received must be stored.
                await self._flush()
            if self.fenced:
                outcome = Outcome.FENCED
            self.outcome = outcome
            if outcome is Outcome.FENCED:
                logger.warning("call %s: lease taken over by another worker; stopped", self.call_id)
                return outcome
            await self._finish(outcome)
            return outcome
        finally:
            self.connection = None
            self.finished.set()

    async def _observe(self, provider_call_id: str) -> Outcome:
        from calls.services.realtime_client import RealtimeClient

        client = RealtimeClient()
        try:
            url, headers = client.sideband_url(provider_call_id), client.sideband_headers()
        finally:
            await client.aclose()
        failures = 0
        while True:
            if self._stopping.is_set():
                return Outcome.STOPPED
            self.attempt += 1
            attempt = self.attempt
            try:
                connection = await connect(
                    url,
                    user_agent_header=self.user_agent or "voiceagent-observer",
                    additional_headers=headers,
                    open_timeout=self.connect_timeout,
                    close_timeout=2.0,
                    max_size=MAX_MESSAGE_BYTES,
                    compression=None,
                    proxy=None,
                )
            except InvalidStatus as exc:
                if exc.response.status_code == 404:
                    logger.info(
                        "call %s: the API no longer knows the call (attempt %d)", self.call_id, attempt
                    )
                    # Our own hang-up ends the call upstream before it records its reason and tells
                    # us: give it a moment, so that the call keeps the reason it was hung up with.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stopping.wait(), self.stop_grace)
                    return Outcome.STOPPED if self._stopping.is_set() else Outcome.GONE
                failures += 1
                self._last_error = f"sideband refused with HTTP {exc.response.status_code}"
            except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
                failures += 1
                self._last_error = f"sideband connection failed: {type(exc).__name__}"
            else:
                if attempt != self.attempt:  # superseded while connecting
                    await connection.close()
                    continue
                self.connections += 1
                # The API let us attach to the call: it is up (a web call's SDP was answered, a phone
                # call accepted). Not "at the first event": a quiet call may send none for a while,
                # and what it sent before we attached (session.created) is not replayed.
                self._mark_answered(timezone.now())
                received = await self._serve_connection(connection, attempt)
                if self._stopping.is_set():
                    return Outcome.STOPPED
                failures = 0 if received else failures + 1
                code = connection.close_code
                self._last_error = f"sideband closed (code {code})"
                logger.info("call %s: sideband closed (code %s), reconnecting", self.call_id, code)
            if failures >= self.max_attempts:
                logger.warning("call %s: %d sideband attempts failed, giving up", self.call_id, failures)
                return Outcome.LOST
            if failures:
                delay = min(self.backoff_initial * 2 ** (failures - 1), self.backoff_max)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)

    async def _serve_connection(self, connection: ClientConnection, attempt: int) -> int:
        """Read events until the socket closes (or, once stopping, until the grace period ends);
        return how many were received."""
        self.connection = connection
        self.connected.set()
        await self._greet_phone_caller(connection)
        if self.tools is not None:
            await self.tools.flush_session_update()
        await self._send_repairs(connection)
        counter = [0]
        reader = asyncio.create_task(self._read(connection, attempt, counter))
        stop = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
            if not reader.done():
                # Hung up by us: the API sends the call's last events and closes; wait a little.
                await asyncio.wait({reader}, timeout=self.stop_grace)
        finally:
            stop.cancel()
            if not reader.done():
                reader.cancel()
            await asyncio.gather(reader, stop, return_exceptions=True)
            await connection.close()
            self.connected.clear()
            if self.connection is connection:
                self.connection = None
        return counter[0]

    async def _read(self, connection: ClientConnection, attempt: int, counter: list[int]) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in connection:
                if attempt != self.attempt:
                    return
                counter[0] += 1
                await self._receive(message, connection)
                if len(self._buffer) >= MAX_BUFFERED_EVENTS:
                    await self._flush()  # waits for the write in flight, then writes ours

    def _mark_answered(self, at: dt.datetime) -> None:
        """The call is up: it becomes active (written with the next flush) and the duration guard
        starts counting. Once per call: a resumed call keeps the time it was answered."""
        if self._activate_at is None and self._answered_at is None:
            self._activate_at = at
            self._answered_at = at
            self._answered.set()

    async def _greet_phone_caller(self, connection: ClientConnection) -> None:
        """A phone caller hears nothing until the agent speaks: on the first connection to a phone
        call not answered before (not a resumed one), ask for the first response (the greeting)."""
        if (
            self.connections == 1
            and self._snapshot is not None
            and self._snapshot.mode == Call.Mode.PHONE
            and self._snapshot.answered_at is None
        ):
            await self._send(connection, {"type": "response.create"})

    # ---- one event --------------------------------------------------------------------------------

    async def _receive(self, message: str | bytes, connection: ClientConnection) -> None:
        at = timezone.now()
        payload, raw = self._decode(message)
        event_type = payload.get("type")
        stored_type = event_type[:100] if isinstance(event_type, str) and event_type else MALFORMED_EVENT
        self._append(stored_type, payload, at, raw=raw)
        self._mark_answered(at)
        if self.tools is not None:
            self.tools.on_event(payload)  # starts tasks for function calls; never waits on a tool
        if self._repairing:
            self._note_items(payload)
            await self._send_repairs(connection)
        event = parse_server_event(payload, call_id=self.call_id)
        flush_now = stored_type in TURN_BOUNDARIES
        if event is not None:
            effects = self._assembler.apply(event, at)
            for client_event in effects.client_events:
                await self._send(connection, client_event)
            if isinstance(event, SessionEvent) and event.type == "session.updated":
                flush_now = await self._guard_session(event, connection, at) or flush_now
        if flush_now:
            await self._flush()

    # ---- repair after a resumption -----------------------------------------------------------------

    def _note_items(self, payload: dict[str, Any]) -> None:
        """Remember the items an event names; one it names as *previous* that we never saw was
        created while no observer of ours listened: queue a retrieve for it."""
        item = payload.get("item")
        if isinstance(item, dict) and isinstance(item.get("id"), str):
            self._known_items.add(item["id"])
        if isinstance(payload.get("item_id"), str):
            self._known_items.add(payload["item_id"])
        previous = payload.get("previous_item_id")
        if isinstance(previous, str) and previous not in self._known_items:
            self._known_items.add(previous)
            self._repair_queue.append(previous)

    async def _send_repairs(self, connection: ClientConnection) -> None:
        """Ask the API for the items whose transcript may be incomplete; the answers
        (`conversation.item.retrieved`) are stored as events and upserted as turns."""
        while self._repair_queue:
            item_id = self._repair_queue.pop(0)
            self._assembler.expect_retrieved(item_id)
            logger.info("call %s: retrieving item %s missed before the resumption", self.call_id, item_id)
            await self._send(connection, {"type": "conversation.item.retrieve", "item_id": item_id})

    # ---- fencing ----------------------------------------------------------------------------------

    def adopt(self, token: LeaseToken) -> None:
        """Go on under a new claim of the same worker (its lease had lapsed, nobody took it)."""
        self.lease = token
        if self.tools is not None:
            self.tools.lease = token

    def fence(self) -> None:
        """The lease is lost: forget what is unwritten, close the sideband, stop. Idempotent."""
        if self.fenced:
            return
        self.fenced = True
        self._buffer.clear()
        self._assembler.take_dirty()
        self._activate_at = None
        self._tamper_unwritten = False
        self.request_stop("lease lost")
        connection = self.connection
        if connection is not None:
            task = asyncio.create_task(connection.close(), name=f"observer-fenced-{self.call_id}")
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    def _decode(self, message: str | bytes) -> tuple[dict[str, Any], str | None]:
        """The event as a dict, and the message's text if that is the event's JSON (None when the
        dict was made here: a message that is not a JSON object is stored as `MALFORMED_EVENT`)."""
        if isinstance(message, bytes):
            logger.warning("call %s: binary sideband message (%d bytes)", self.call_id, len(message))
            return {"type": MALFORMED_EVENT, "reason": "binary message", "size": len(message)}, None
        try:
            payload = json.loads(message)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            logger.warning("call %s: sideband message is not a JSON object", self.call_id)
            return {
                "type": MALFORMED_EVENT,
                "reason": "not a JSON object",
                "raw": message[:MAX_MALFORMED_CHARS],
            }, None
        return payload, message

    def _append(
        self, event_type: str, payload: dict[str, Any], at: dt.datetime, *, raw: str | None = None
    ) -> None:
        """Number and buffer an event; `raw` is its JSON text if it is exactly `payload`."""
        stripped = strip_images(payload)  # an input_image's base64 is stored as a small thumbnail
        self._buffer.append(
            store.PendingEvent(
                sequence=self._next_sequence,
                type=event_type,
                payload=stripped,
                received_at=at,
                raw=raw if stripped is payload else None,
            )
        )
        self._next_sequence += 1

    async def _send_current(self, event: dict[str, Any]) -> None:
        """Send on whichever sideband is open now (tools answer after a reconnection too)."""
        connection = self.connection
        if connection is None:
            raise ConnectionError("no sideband open")
        await self._send(connection, event)

    def _record(self, event_type: str, payload: dict[str, Any]) -> None:
        """Store (and publish live) an event of ours, e.g. a tool invocation's start and end."""
        self._append(event_type, {"type": event_type, **payload}, timezone.now())

    async def _send(self, connection: ClientConnection, event: dict[str, Any]) -> None:
        with contextlib.suppress(ConnectionClosed):
            await connection.send(json.dumps(event))

    # ---- guards -----------------------------------------------------------------------------------

    async def _guard_session(
        self, event: SessionEvent, connection: ClientConnection, at: dt.datetime
    ) -> bool:
        """Put our instructions and tools back if someone else changed them; True if they had."""
        assert self._snapshot is not None
        expected = self._snapshot.expected_session
        diff = session_differences(expected, event)
        if not diff:
            return False
        self._tamper_unwritten = True
        self._tamper_restores += 1
        logger.warning(
            "call %s: session %s changed by someone else; restoring ours (%d)",
            self.call_id,
            "/".join(sorted(diff)),
            self._tamper_restores,
        )
        self._append(
            SECURITY_TAMPER_EVENT,
            {
                "type": SECURITY_TAMPER_EVENT,
                "fields": sorted(diff),
                "diff": diff,
                "session_event_id": event.model_extra.get("event_id") if event.model_extra else None,
                "restored": True,
            },
            at,
        )
        restore = {
            "type": "realtime",
            "instructions": expected.get("instructions") or "",
            "tools": expected.get("tools") or [],
        }
        await self._send(connection, {"type": "session.update", "session": restore})
        if self._tamper_restores > MAX_TAMPER_RESTORES:
            self._start_hang_up(END_REASON_TAMPERING)
        return True

    async def _guard_duration(self) -> None:
        """Hang up when the agent's maximum call duration has passed since the call was answered."""
        assert self._snapshot is not None
        await self._answered.wait()
        assert self._answered_at is not None
        deadline = self._answered_at + dt.timedelta(seconds=self._snapshot.max_call_duration_s)
        remaining = (deadline - timezone.now()).total_seconds()
        if remaining > 0:
            await asyncio.sleep(remaining)
        logger.info("call %s: maximum duration reached, hanging up", self.call_id)
        self._start_hang_up(END_REASON_MAX_DURATION)

    def _start_hang_up(self, reason: str) -> None:
        """Hang the call up through the lifecycle service, on a task of its own so that the end of
        the observation (which the hang-up itself causes) cannot cancel it half-way."""
        if self._stopping.is_set():
            return
        # Stop first, so that the call ends with `reason` whichever of us records the end first.
        self.request_stop(reason)
        task = asyncio.create_task(self._hang_up(reason), name=f"observer-hangup-{self.call_id}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _hang_up(self, reason: str) -> None:
        from calls.services.calls import hang_up_call
        from calls.services.realtime_client import RealtimeError

        call = await database_sync_to_async(store.load_call_model)(self.call_id)
        try:
            if call is not None and not call.is_final:
                await hang_up_call(call=call, reason=reason)
        except RealtimeError as exc:
            logger.warning("call %s: hang-up failed: %r", self.call_id, exc)

    # ---- writing ----------------------------------------------------------------------------------

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            await self._flush()

    async def _flush(self) -> None:
        """Write what is buffered in one transaction, then publish it. A failed write keeps the batch
        for the next flush: a received event is never dropped. Shielded: a flush that has taken the
        buffer finishes (write and publication) even if its caller is cancelled meanwhile."""
        await asyncio.shield(self._flush_now())

    async def _flush_now(self) -> None:
        async with self._flush_lock:
            if self.fenced:
                return
            events, self._buffer = self._buffer, []
            turns = self._assembler.take_dirty()
            usage = dict(self._assembler.usage) if self._assembler.usage_dirty else None
            self._assembler.usage_dirty = False
            activate_at, tampered = self._activate_at, self._tamper_unwritten
            if not (events or turns or usage is not None or activate_at is not None):
                return
            token = self.lease
            try:
                # Merged with the other calls' batches of this worker into one transaction.
                result = await write_merged(
                    store.CallBatch(
                        call_id=self.call_id,
                        events=events,
                        turns=turns,
                        usage=usage,
                        activate_at=activate_at,
                        tampered=tampered,
                        lease=token,
                    )
                )
            except LeaseLost:
                if self.lease is token:
                    self.fence()
                    return
                # Our worker re-claimed the call meanwhile (its lease had lapsed): write again.
                self._buffer[:0] = events
                self._assembler.restore_dirty(turns)
                if usage is not None:
                    self._assembler.usage_dirty = True
                return
            except Exception:
                # Database trouble (e.g. a lost connection): keep everything and retry next time.
                logger.exception("call %s: writing %d events failed; will retry", self.call_id, len(events))
                self._buffer[:0] = events
                self._assembler.restore_dirty(turns)
                if usage is not None:
                    self._assembler.usage_dirty = True
                return
            if activate_at is not None:
                self._activate_at = None
            if tampered:
                self._tamper_unwritten = False
            try:
                if result.activated_at is not None:
                    await publish_status(self.call_id, status=Call.Status.ACTIVE)
                await publish_events(self.call_id, [(event.sequence, event.payload) for event in events])
            except Exception:
                # Stored already: a console that (re)connects reads them from the database.
                logger.exception("call %s: publishing %d events failed", self.call_id, len(events))

    async def _finish(self, outcome: Outcome) -> None:
        if outcome is Outcome.LOST:
            await self._hang_up_quietly()
            status, reason, error = Call.Status.FAILED, END_REASON_LOST, self._last_error
        elif outcome is Outcome.GONE:
            status, reason, error = Call.Status.ENDED, END_REASON_UPSTREAM, ""
        else:
            status, reason, error = Call.Status.ENDED, self._stop_reason or "hung up", ""
        try:
            state = await database_sync_to_async(store.finish_call)(
                call_id=self.call_id,
                status=status,
                end_reason=reason,
                error=error,
                at=timezone.now(),
                lease=self.lease,
            )
        except LeaseLost:
            self.fence()
            self.outcome = Outcome.FENCED
            logger.warning("call %s: lease taken over before the end was recorded", self.call_id)
            return
        logger.info("call %s: observation over (%s), call %s", self.call_id, outcome.value, state.status)
        try:
            await publish_status(
                self.call_id, status=state.status, end_reason=state.end_reason, error=state.error
            )
        except Exception:  # recorded already; a console that reconnects reads the status
            logger.exception("call %s: publishing the final status failed", self.call_id)

    async def _hang_up_quietly(self) -> None:
        """Best effort: a call we can no longer watch or guard should not go on."""
        from calls.services.realtime_client import RealtimeClient, RealtimeError

        assert self._snapshot is not None and self._snapshot.provider_call_id is not None
        try:
            async with RealtimeClient() as client:
                await client.hangup_call(self._snapshot.provider_call_id)
        except RealtimeError as exc:
            logger.info("call %s: hang-up after losing the sideband failed: %r", self.call_id, exc)
