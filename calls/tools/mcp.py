"""The MCP bridge: tools of the MCP servers an agent profile links to, offered on its calls.

At call start the observer's toolbox opens `McpToolProvider` for the call: it connects to every
enabled server of the call's profile at once (official ``mcp`` SDK: ``ClientSession`` over
``stdio_client`` or ``streamable_http_client``), each bounded by the server's ``timeout_s``, lists
their tools and returns them as `Tool`s named ``<server>__<tool>``. A server that is down, slow or
broken is logged and left out (the call goes on with the other tools); the reason is kept as a
notice (`pop_notices`) that the observer stores as an ``mcp.server_unavailable`` event on the call.

Each connection lives in a task of its own ("holder"): the SDK's transports are anyio context
managers that must be entered and left by the same task, and the observer may open and close from
different tasks. Tool calls go through the session from any task, bounded by ``timeout_s``; results
become the text the model reads (text blocks joined; ``isError`` → a failed tool output). `close`
ends the sessions, which stops stdio subprocesses and deletes HTTP sessions.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import httpx2
from asgiref.sync import sync_to_async
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import CallToolResult, PaginatedRequestParams, TextContent
from mcp_types import Tool as McpTool

from calls.tools.base import TOOL_NAME, Tool, ToolError

if TYPE_CHECKING:
    from django.db.models import QuerySet

    from calls.models import Call, McpServer

logger = logging.getLogger(__name__)

#: Separates the server's name from the tool's in the names offered to the model.
SEPARATOR: Final = "__"
#: Longest function name the Realtime API accepts.
MAX_NAME: Final = 64
#: Pages of tools/list read at most (a server that pages forever must not hold the call's start).
MAX_PAGES: Final = 10
#: Tools taken from one server at most (the session's tool list has to stay reasonable).
MAX_TOOLS_PER_SERVER: Final = 64
#: Seconds a closing session may take before its holder task is cancelled.
CLOSE_TIMEOUT_S: Final = 5.0
#: Event type stored on the call when a server's tools could not be offered.
UNAVAILABLE_EVENT: Final = "mcp.server_unavailable"

_INVALID_NAME_CHARS = re.compile(r"[^A-Za-z0-9_-]")


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """What connecting to one server needs: a plain copy of an `McpServer` row (no ORM in tasks)."""

    name: str
    transport: str
    command: str = ""
    args: tuple[str, ...] = ()
    url: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    allowed_tools: tuple[str, ...] = ()
    timeout_s: float = 10.0

    @classmethod
    def from_model(cls, server: McpServer) -> ServerSpec:
        return cls(
            name=server.name,
            transport=server.transport,
            command=server.command,
            args=tuple(str(arg) for arg in server.args or []),
            url=server.url,
            headers=tuple((str(k), str(v)) for k, v in (server.headers or {}).items()),
            allowed_tools=tuple(str(name) for name in server.allowed_tools or []),
            timeout_s=float(server.timeout_s),
        )


def offered_name(server: str, tool: str) -> str:
    """``<server>__<tool>``, made to fit the API's function names (invalid characters → ``_``,
    cut to 64 characters)."""
    return f"{server}{SEPARATOR}{_INVALID_NAME_CHARS.sub('_', tool)}"[:MAX_NAME]


def result_text(result: CallToolResult) -> str:
    """The text the model reads: the text blocks joined; other blocks named by their type;
    structured content as JSON when there is no text."""
    parts: list[str] = []
    for block in result.content:
        if isinstance(block, TextContent):
            parts.append(block.text)
        else:
            parts.append(f"[{getattr(block, 'type', 'content')}]")
    text = "\n".join(part for part in parts if part)
    if not text and result.structured_content is not None:
        text = json.dumps(result.structured_content, ensure_ascii=False, default=str)
    return text


class ServerConnection:
    """One open MCP session, held by a task of its own until `close`."""

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.tools: list[McpTool] = []
        self._session: ClientSession | None = None
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None

    async def open(self, *, background_cleanup: bool = False) -> None:
        """Connect, initialize and list tools within ``timeout_s``; raises on failure.

        A failed open shuts what it started down (a stdio server may take seconds to stop); with
        `background_cleanup` that happens in a task of its own, so a call's start is not held up by
        a hung server: `close` then waits for it.
        """
        self._task = asyncio.create_task(self._hold(), name=f"mcp:{self.spec.name}")
        try:
            await asyncio.wait_for(asyncio.shield(self._ready), self.spec.timeout_s)
        except BaseException:
            self.start_closing()
            if not background_cleanup:
                await self.close()
            raise

    async def _hold(self) -> None:
        try:
            async with contextlib.AsyncExitStack() as stack:
                if self.spec.transport == "stdio":
                    params = StdioServerParameters(command=self.spec.command, args=list(self.spec.args))
                    read, write = await stack.enter_async_context(stdio_client(params))
                else:
                    http = create_mcp_http_client(
                        headers=dict(self.spec.headers) or None,
                        timeout=httpx2.Timeout(self.spec.timeout_s, read=max(self.spec.timeout_s, 300.0)),
                    )
                    await stack.enter_async_context(http)
                    read, write = await stack.enter_async_context(
                        streamable_http_client(self.spec.url, http_client=http)
                    )
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                self.tools = await self._list_tools(session)
                self._session = session
                self._ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            self._session = None
            if not self._ready.done():
                if isinstance(exc, asyncio.CancelledError):
                    self._ready.cancel()
                else:
                    self._ready.set_exception(_unwrap(exc))
            elif not isinstance(exc, asyncio.CancelledError):
                logger.warning(
                    "MCP server %s: session ended with %s", self.spec.name, type(exc).__name__, exc_info=True
                )
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self._session = None

    async def _list_tools(self, session: ClientSession) -> list[McpTool]:
        tools: list[McpTool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or len(tools) >= MAX_TOOLS_PER_SERVER:
                break
        return tools[:MAX_TOOLS_PER_SERVER]

    async def call(self, tool: str, arguments: dict[str, Any]) -> str:
        """Run `tool`; its text, or `ToolError` with the server's words when it reports an error."""
        session = self._session
        if session is None:
            raise ToolError(f"the MCP server {self.spec.name} is not connected")
        result = await session.call_tool(tool, arguments, read_timeout_seconds=self.spec.timeout_s)
        text = result_text(result)
        if result.is_error:
            raise ToolError(text or f"{tool} failed on the MCP server {self.spec.name}")
        return text

    def start_closing(self) -> asyncio.Task[None]:
        """Begin closing without waiting (the task is kept: `close` awaits the same one)."""
        if self._closing is None:
            self._closing = asyncio.create_task(self._shutdown(), name=f"mcp-close:{self.spec.name}")
        return self._closing

    async def close(self) -> None:
        """End the session (and its subprocess or HTTP session); bounded, idempotent."""
        await asyncio.shield(self.start_closing())

    async def _shutdown(self) -> None:
        try:
            await self._stop_holder()
        finally:
            if self._ready.done() and not self._ready.cancelled():
                self._ready.exception()  # mark it retrieved: open() reported it (or gave up waiting)

    async def _stop_holder(self) -> None:
        self._stop.set()
        task, self._task = self._task, None
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), CLOSE_TIMEOUT_S)
        except Exception:
            task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, CLOSE_TIMEOUT_S)

    def offered_tools(self) -> list[Tool]:
        """The listed tools that ``allowed_tools`` lets through, as namespaced `Tool`s."""
        allowed = set(self.spec.allowed_tools)
        offered: list[Tool] = []
        for listed in self.tools:
            if allowed and listed.name not in allowed:
                continue
            name = offered_name(self.spec.name, listed.name)
            if not TOOL_NAME.match(name):
                logger.warning(
                    "MCP server %s: tool %r cannot be offered as %r", self.spec.name, listed.name, name
                )
                continue
            offered.append(
                Tool(
                    name=name,
                    description=listed.description or listed.title or listed.name,
                    parameters=_parameters(listed.input_schema),
                    handler=self._handler(listed.name),
                    arguments_model=None,
                    timeout_s=self.spec.timeout_s,
                )
            )
        return offered

    def _handler(self, tool: str) -> Any:
        async def run(**arguments: Any) -> str:
            return await self.call(tool, arguments)

        run.__name__ = tool
        return run


def _parameters(schema: dict[str, Any] | None) -> dict[str, Any]:
    """The server's input schema as a function's ``parameters`` (an object schema, titles dropped:
    they only repeat the names)."""
    parameters = dict(schema or {})
    parameters.pop("title", None)
    properties = parameters.get("properties")
    if isinstance(properties, dict):
        parameters["properties"] = {
            key: {k: v for k, v in value.items() if k != "title"} if isinstance(value, dict) else value
            for key, value in properties.items()
        }
    parameters.setdefault("type", "object")
    parameters.setdefault("properties", {})
    return parameters


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside anyio's exception groups (the reason worth logging)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def describe_failure(exc: BaseException, timeout_s: float) -> str:
    """A short, credential-free reason for the log and the call's event."""
    exc = _unwrap(exc)
    if isinstance(exc, TimeoutError):
        return f"no answer within {timeout_s:g} s"
    message = str(exc).strip()
    return f"{type(exc).__name__}: {message}"[:300] if message else type(exc).__name__


async def connect(spec: ServerSpec) -> ServerConnection:
    """An open connection to `spec` (raises when it cannot be opened within ``timeout_s``)."""
    connection = ServerConnection(spec)
    await connection.open()
    return connection


async def probe(spec: ServerSpec) -> list[str]:
    """The names of the tools `spec` offers (before ``allowed_tools``); for the admin's test action."""
    connection = await connect(spec)
    try:
        return [listed.name for listed in connection.tools]
    finally:
        await connection.close()


#: Where a loaded agent may hold its enabled MCP servers, read with it (as the observer's
#: `store.load_call` does): the provider then needs no query of its own.
ENABLED_SERVERS_ATTRIBUTE: Final = "enabled_mcp_servers"


def enabled_server_rows(agent_id: int) -> QuerySet[McpServer]:
    """The enabled MCP servers linked to the agent profile `agent_id`, by name."""
    from calls.models import McpServer

    return McpServer.objects.filter(agents=agent_id, enabled=True).order_by("name")


def _enabled_servers(agent_id: int) -> list[ServerSpec]:
    return [ServerSpec.from_model(server) for server in enabled_server_rows(agent_id)]


async def enabled_servers(call: Call) -> list[ServerSpec]:
    """The MCP servers `call`'s agent offers: those read with the agent, else from the database
    (an agent that is not loaded is not loaded here: that would be a query on the event loop)."""
    from calls.models import Call as CallModel

    agent = call.agent if CallModel.agent.is_cached(call) else None
    prefetched = getattr(agent, ENABLED_SERVERS_ATTRIBUTE, None)
    if prefetched is not None:
        return [ServerSpec.from_model(server) for server in prefetched]
    return await sync_to_async(_enabled_servers)(call.agent_id)


class McpToolProvider:
    """The registry's `ToolProvider` for MCP servers: per call, the tools of the profile's servers."""

    def __init__(self) -> None:
        self._connections: dict[Any, list[ServerConnection]] = {}
        self._notices: dict[Any, list[dict[str, Any]]] = {}

    async def open(self, call: Call) -> Sequence[Tool]:
        """Connect to the call's servers concurrently; the tools of those that answered in time."""
        specs = await enabled_servers(call)
        if not specs:
            return []
        connections = [ServerConnection(spec) for spec in specs]
        # Kept whatever happens: close() also waits for a failed server's clean-up.
        self._connections.setdefault(call.pk, []).extend(connections)
        try:
            results = await asyncio.gather(
                *(connection.open(background_cleanup=True) for connection in connections),
                return_exceptions=True,
            )
        except BaseException:
            # Cancelled (the call ended while its servers were connecting): the toolbox will not
            # close us, so every connection, opened or not, winds down on its own.
            for connection in self._connections.pop(call.pk, []):
                connection.start_closing()
            raise
        tools: list[Tool] = []
        for spec, connection, result in zip(specs, connections, results, strict=True):
            if result is None:
                offered = connection.offered_tools()
                tools.extend(offered)
                logger.info("call %s: MCP server %s offers %d tool(s)", call.pk, spec.name, len(offered))
                continue
            if isinstance(result, asyncio.CancelledError):
                raise result
            reason = describe_failure(result, spec.timeout_s)
            logger.warning(
                "call %s: MCP server %s is unavailable (%s); the call goes on without its tools",
                call.pk,
                spec.name,
                reason,
            )
            self._notices.setdefault(call.pk, []).append(
                {
                    "type": UNAVAILABLE_EVENT,
                    "server": spec.name,
                    "transport": spec.transport,
                    "reason": reason,
                }
            )
        return tools

    def pop_notices(self, call: Call) -> list[dict[str, Any]]:
        """What went wrong while opening `call`'s servers (event payloads with a ``type``), once."""
        return self._notices.pop(call.pk, [])

    def open_calls(self) -> int:
        """How many calls hold connections now (for tests and metrics)."""
        return len(self._connections)

    async def close(self, call: Call) -> None:
        """Close `call`'s sessions (their subprocesses end, HTTP sessions are deleted)."""
        self._notices.pop(call.pk, None)
        connections = self._connections.pop(call.pk, [])
        if connections:
            await asyncio.gather(*(connection.close() for connection in connections))
