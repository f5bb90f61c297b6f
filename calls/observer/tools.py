"""The observer's tool loop: runs the model's function calls and answers them over the sideband.

One `ToolRunner` per observed call. `CallObserver` hands it every received server event
(`on_event`, synchronous and quick: it never waits on a tool) and it:

1. prepares the call's `Toolbox` in the background (the profile's built-ins + providers' tools such
   as MCP ones); when providers added tools it sends a `session.update` with the full list and
   updates the observer's expected session, so that the tamper guard expects them too;
2. on `response.function_call_arguments.done` (the source of truth; `response.output_item.done`
   with a `function_call` item is accepted too, deduplicated by `call_id`) starts a task that
   records a pending `ToolInvocation`, runs the tool (`Tool.invoke`: validated, timed out, never
   raising), stores the result, sends `conversation.item.create` with the `function_call_output`,
   and records `voiceagent.tool.started` / `voiceagent.tool.finished` events (stored and published
   live to the console like any event);
3. sends one `response.create` once the response that made the calls is done and all its calls are
   answered (a cancelled response gets its outputs but no new response: the user is speaking);
4. `end_call` asks for a polite hang-up: it happens after the next response has finished playing
   (`output_audio_buffer.stopped`, or `response.done` plus a grace when no playback events come),
   bounded by `HANG_UP_MAX_WAIT_S`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from channels.db import database_sync_to_async
from django.db import transaction
from django.utils import timezone

from calls.models import Call, ToolInvocation
from calls.observer.lease import LeaseToken, fence
from calls.tools import Toolbox, ToolContext, ToolResult, build_toolbox, error_output, registry
from voiceagent.monitoring.metrics import record_tool_call

logger = logging.getLogger(__name__)

TOOL_STARTED_EVENT: Final = "voiceagent.tool.started"
TOOL_FINISHED_EVENT: Final = "voiceagent.tool.finished"
#: Longest a polite hang-up waits for the goodbye to finish playing.
HANG_UP_MAX_WAIT_S: Final = 20.0
#: After the goodbye's `response.done`, the wait when no playback events were seen for it.
NO_PLAYBACK_GRACE_S: Final = 1.0
#: Longest wait for the toolbox (providers connecting) before a function call fails.
TOOLBOX_WAIT_S: Final = 30.0

Send = Callable[[dict[str, Any]], Awaitable[None]]
Record = Callable[[str, dict[str, Any]], None]
HangUp = Callable[[str], None]


@dataclass
class _Response:
    """The function calls one response made, and whether the response is over."""

    pending: set[str] = field(default_factory=set)
    done: bool = False
    status: str = "completed"
    answered: bool = False


def _load_call(call_id: uuid.UUID) -> Call | None:
    return Call.objects.select_related("agent").filter(pk=call_id).first()


def _start_invocation(
    call_id: uuid.UUID, function_call_id: str, name: str, arguments: Any, lease: LeaseToken | None = None
) -> bool:
    """The pending row; False if this function call was recorded already (a replayed event).
    Fenced by the observer's lease (calls.observer.lease): a stale observer records nothing."""
    with transaction.atomic():
        if lease is not None:
            fence(lease)
        _, created = ToolInvocation.objects.get_or_create(
            call_id=call_id,
            function_call_id=function_call_id[:64],
            defaults={"tool_name": name[:100], "arguments": arguments, "created_at": timezone.now()},
        )
    return created


def _finish_invocation(
    call_id: uuid.UUID, function_call_id: str, result: ToolResult, lease: LeaseToken | None = None
) -> None:
    with transaction.atomic():
        if lease is not None:
            fence(lease)
        ToolInvocation.objects.filter(call_id=call_id, function_call_id=function_call_id[:64]).update(
            status=ToolInvocation.Status.COMPLETED if result.ok else ToolInvocation.Status.FAILED,
            output=result.output,
            duration_ms=result.duration_ms,
        )


def _arguments_value(arguments: str) -> Any:
    """What the row stores: the parsed JSON when it parses, else the raw text."""
    try:
        return json.loads(arguments or "{}")
    except ValueError:
        return {"_raw": arguments}


class ToolRunner:
    """Runs one call's function calls; see the module docstring."""

    def __init__(
        self,
        call_id: uuid.UUID,
        *,
        send: Send,
        record: Record,
        hang_up: HangUp,
        expected_session: dict[str, Any],
        lease: LeaseToken | None = None,
        call: Call | None = None,
    ) -> None:
        self.call_id = call_id
        #: The call as its observer loaded it (with its agent), so the toolbox needs no query of its own.
        self._call = call
        self.lease = lease
        self._send = send
        self._record = record
        self._hang_up = hang_up
        self._expected = expected_session
        self.toolbox: Toolbox | None = None
        self._ready = asyncio.Event()
        self._session_update: dict[str, Any] | None = None
        self._seen: set[str] = set()
        self._names: dict[str, str] = {}  # item_id -> function name
        self._responses: dict[str, _Response] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._hang_up_reason: str | None = None
        self._hang_up_task: asyncio.Task[None] | None = None
        self._expect_goodbye = False
        self._goodbye_id: str | None = None
        self._goodbye_playing = False
        self._goodbye_done = asyncio.Event()
        self._goodbye_played = asyncio.Event()
        self._prepare_task: asyncio.Task[None] | None = None

    # ---- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Prepare the toolbox in the background (providers may be slow or down)."""
        self._prepare_task = self._spawn(self._prepare(), "prepare")

    async def _prepare(self) -> None:
        try:
            call = self._call or await database_sync_to_async(_load_call)(self.call_id)
            if call is None:
                self.toolbox = Toolbox()
                return
            self.toolbox = await build_toolbox(call, registry=registry)
            for provider in registry.providers:
                # What a provider could not offer (an MCP server that is down) is stored on the call.
                pop_notices = getattr(provider, "pop_notices", None)
                for notice in pop_notices(call) if pop_notices is not None else []:
                    self._record(str(notice.get("type", "voiceagent.tool.notice")), notice)
            specs = self.toolbox.function_specs()
            if specs != (self._expected.get("tools") or []):
                # Providers added tools: expect them from now on, and offer them to the model.
                self._expected["tools"] = specs
                self._session_update = {
                    "type": "session.update",
                    "session": {"type": "realtime", "tools": specs},
                }
                await self.flush_session_update()
        finally:
            if self.toolbox is None:
                self.toolbox = Toolbox()
            self._ready.set()

    async def flush_session_update(self) -> None:
        """Send the pending `session.update` (once connected)."""
        update, self._session_update = self._session_update, None
        if update is not None:
            try:
                await self._send(update)
            except ConnectionError:
                self._session_update = update

    async def aclose(self) -> None:
        """The call is over: stop running tools (their rows say so) and release providers."""
        tasks = [task for task in self._tasks if task is not self._hang_up_task]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._hang_up_task is not None:
            self._hang_up_task.cancel()
            await asyncio.gather(self._hang_up_task, return_exceptions=True)
        if self.toolbox is not None:
            await self.toolbox.aclose()

    @property
    def running(self) -> int:
        return sum(1 for task in self._tasks if task is not self._prepare_task)

    def _spawn(self, coroutine: Awaitable[None], label: str) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coroutine)
        task.set_name(f"observer-tool-{label}-{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # ---- events -----------------------------------------------------------------------------------

    def on_event(self, payload: dict[str, Any]) -> None:
        """Look at one server event; starts tasks, never waits."""
        kind = payload.get("type")
        if kind in ("response.output_item.added", "response.output_item.done"):
            item = payload.get("item")
            if isinstance(item, dict) and item.get("type") == "function_call":
                if isinstance(item.get("id"), str) and isinstance(item.get("name"), str):
                    self._names[item["id"]] = item["name"]
                if kind == "response.output_item.done" and item.get("status") in (None, "completed"):
                    self._function_call(
                        payload.get("response_id"),
                        item.get("call_id"),
                        item.get("name"),
                        item.get("arguments"),
                    )
        elif kind == "response.function_call_arguments.done":
            name = payload.get("name") or self._names.get(str(payload.get("item_id")))
            self._function_call(
                payload.get("response_id"), payload.get("call_id"), name, payload.get("arguments")
            )
        elif kind == "response.done":
            response = payload.get("response") if isinstance(payload.get("response"), dict) else {}
            assert isinstance(response, dict)
            response_id = response.get("id")
            state = self._responses.get(response_id) if isinstance(response_id, str) else None
            if state is not None:
                state.done = True
                state.status = str(response.get("status") or "completed")
                self._spawn(self._maybe_respond(str(response_id)), "respond")
        if isinstance(kind, str):
            self._goodbye_event(kind, payload)

    def _function_call(self, response_id: Any, call_id: Any, name: Any, arguments: Any) -> None:
        if not isinstance(call_id, str) or not call_id or call_id in self._seen:
            return
        if not isinstance(name, str) or not name:
            return  # the output_item.done fallback will bring the name
        self._seen.add(call_id)
        response_key = response_id if isinstance(response_id, str) else ""
        self._responses.setdefault(response_key, _Response()).pending.add(call_id)
        text = arguments if isinstance(arguments, str) else json.dumps(arguments or {})
        self._spawn(self._run_call(response_key, call_id, name, text), "call")

    # ---- one function call ------------------------------------------------------------------------

    async def _run_call(self, response_id: str, call_id: str, name: str, arguments: str) -> None:
        arguments_value = _arguments_value(arguments)
        self._record(TOOL_STARTED_EVENT, {"call_id": call_id, "name": name, "arguments": arguments_value})
        result: ToolResult | None = None
        try:
            fresh = await database_sync_to_async(_start_invocation)(
                self.call_id, call_id, name, arguments_value, self.lease
            )
            if not fresh:
                return
            result = await self._invoke(call_id, name, arguments)
            await database_sync_to_async(_finish_invocation)(self.call_id, call_id, result, self.lease)
            await self._send(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": result.output},
                }
            )
        except asyncio.CancelledError:
            result = ToolResult("failed", error_output("the call ended before the tool finished"))
            with contextlib.suppress(Exception):
                await asyncio.shield(
                    database_sync_to_async(_finish_invocation)(self.call_id, call_id, result, self.lease)
                )
            raise
        except Exception:
            logger.exception(
                "call %s: function call %s (%s) could not be answered", self.call_id, call_id, name
            )
        finally:
            if result is not None:
                record_tool_call(self.toolbox, name, result)  # voiceagent_tool_calls_total{tool,outcome}
                self._record(
                    TOOL_FINISHED_EVENT,
                    {
                        "call_id": call_id,
                        "name": name,
                        "status": result.status,
                        "output": result.output,
                        "duration_ms": result.duration_ms,
                    },
                )
            state = self._responses.get(response_id)
            if state is not None:
                state.pending.discard(call_id)
        await self._maybe_respond(response_id)

    async def _invoke(self, call_id: str, name: str, arguments: str) -> ToolResult:
        try:
            await asyncio.wait_for(self._ready.wait(), TOOLBOX_WAIT_S)
        except TimeoutError:
            return ToolResult("failed", error_output("tools are not available yet"))
        assert self.toolbox is not None
        found = self.toolbox.get(name)
        if found is None or self.toolbox.call is None:
            return ToolResult("failed", error_output(f"unknown tool {name!r}"))
        context = ToolContext(call=self.toolbox.call, function_call_id=call_id, hang_up=self.request_hang_up)
        return await found.invoke(arguments, context=context)

    async def _maybe_respond(self, response_id: str) -> None:
        """One `response.create` when the response is over and all its calls are answered."""
        state = self._responses.get(response_id)
        if state is None or state.answered or state.pending or not state.done:
            return
        state.answered = True
        self._responses.pop(response_id, None)
        if state.status != "completed":
            return  # interrupted: the user is speaking and a new response will follow
        if self._hang_up_reason is not None and self._goodbye_id is None:
            self._expect_goodbye = True
        try:
            await self._send({"type": "response.create"})
        except ConnectionError:
            logger.warning("call %s: no sideband to ask for the answer to its tool calls", self.call_id)

    # ---- polite hang-up ---------------------------------------------------------------------------

    def request_hang_up(self, reason: str) -> None:
        """`end_call`: hang up once the coming response (the goodbye that answers the tool's output)
        has finished playing."""
        if self._hang_up_reason is not None:
            return
        self._hang_up_reason = reason
        self._hang_up_task = self._spawn(self._hang_up_later(reason), "hangup")

    def _goodbye_event(self, kind: str, payload: dict[str, Any]) -> None:
        if self._hang_up_reason is None:
            return
        if kind == "response.created" and self._expect_goodbye:
            response = payload.get("response")
            if isinstance(response, dict) and isinstance(response.get("id"), str):
                self._goodbye_id, self._expect_goodbye = response["id"], False
            return
        if self._goodbye_id is None:
            return
        if kind == "response.done":
            response = payload.get("response")
            if isinstance(response, dict) and response.get("id") == self._goodbye_id:
                self._goodbye_done.set()
        elif payload.get("response_id") == self._goodbye_id:
            if kind == "output_audio_buffer.started":
                self._goodbye_playing = True
            elif kind in ("output_audio_buffer.stopped", "output_audio_buffer.cleared"):
                self._goodbye_played.set()

    async def _hang_up_later(self, reason: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + HANG_UP_MAX_WAIT_S
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._goodbye_done.wait(), HANG_UP_MAX_WAIT_S)
            # Audio plays on after response.done; without playback events (no media track to
            # follow) a short grace lets the last words out.
            wait = max(0.0, deadline - loop.time()) if self._goodbye_playing else NO_PLAYBACK_GRACE_S
            await asyncio.wait_for(self._goodbye_played.wait(), wait)
        logger.info("call %s: the agent ends the call", self.call_id)
        self._hang_up(reason)
