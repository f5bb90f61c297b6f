"""The tool registry: typed Python functions the agent may call, described to the model by a JSON
schema derived from their signature and docstring (pydantic), and run by the call's observer.

Public API (stable; the MCP bridge builds on it):

- ``@tool`` / ``make_tool(fn, name=..., timeout_s=...)`` turn a typed function (sync or async) into
  a `Tool`. Parameters become the JSON schema (pydantic ``create_model``); the docstring's summary
  is the description and its Google-style ``Args:`` section gives each parameter's description. A
  parameter annotated `ToolContext` is not offered to the model: the call's context is passed in.
  Raise `ToolError("…")` for an error the model should hear (e.g. an unknown time zone).
- `Tool`: ``name``, ``description``, ``parameters`` (JSON schema), ``function_spec()`` (the session's
  ``{"type": "function", …}`` entry) and ``await invoke(arguments_json, context=...)`` which never
  raises: invalid arguments, an exception, or a timeout give ``ToolResult(status="failed")`` whose
  ``output`` is a JSON ``{"error": …}`` the model can read. Sync functions run in a thread.
  A `Tool` can also be built directly from a JSON schema with ``arguments_model=None`` (MCP tools:
  any JSON object is passed through and the server validates).
- `ToolRegistry`: the process-wide built-ins by name (``register``, ``get``, ``names``,
  ``function_specs(names)``) plus `ToolProvider`s (``add_provider``) that supply per-call dynamic
  tools (MCP servers), namespaced by the provider (e.g. ``weather__get_weather``).
- `Toolbox`: the tools of one call (the profile's built-ins + what providers gave for this call);
  ``await build_toolbox(call)`` makes it, ``toolbox.function_specs()`` goes into the session,
  ``await toolbox.aclose()`` lets providers release their connections when the call ends.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, get_type_hints, overload, runtime_checkable

from pydantic import BaseModel, ConfigDict, ValidationError, create_model
from pydantic.fields import FieldInfo
from pydantic_core import to_jsonable_python

if TYPE_CHECKING:
    from calls.models import Call

logger = logging.getLogger(__name__)

#: Seconds a tool may run before its call fails with "timed out" (the conversation must go on).
DEFAULT_TIMEOUT_S: Final = 10.0
#: Function names the Realtime API accepts.
TOOL_NAME: Final = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
#: Longest output sent back to the model (a runaway tool must not flood the conversation).
MAX_OUTPUT_CHARS: Final = 20_000

#: Threads running sync tools, for all calls of the process together.
TOOL_THREADS: Final = 64

ToolStatus = Literal["completed", "failed"]


@functools.cache
def _executor() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=TOOL_THREADS, thread_name_prefix="tool")


class ToolError(Exception):
    """Raised by a tool for a failure the model should be told about in plain words."""


@dataclasses.dataclass
class ToolContext:
    """What a running tool may know about and do to its call.

    `hang_up(reason)` asks the observer to hang up politely, once the response being spoken has
    finished playing (``end_call``); None outside an observer (the tool then hangs up itself).
    """

    call: Call
    function_call_id: str = ""
    hang_up: Callable[[str], None] | None = None


@dataclasses.dataclass(frozen=True)
class ToolResult:
    """What a tool answered: ``output`` is the text sent as the function_call_output."""

    status: ToolStatus
    output: str
    duration_ms: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "completed"


def error_output(message: str, **details: Any) -> str:
    """The JSON a failed tool call returns to the model."""
    return json.dumps({"error": message, **details}, default=str)


def _output_text(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(to_jsonable_python(value), ensure_ascii=False)
    return text if len(text) <= MAX_OUTPUT_CHARS else text[:MAX_OUTPUT_CHARS] + "…"


@dataclasses.dataclass(frozen=True)
class Tool:
    """A function the model may call. ``handler(**arguments)`` (plus ``context=`` when
    ``context_parameter`` is set) returns any JSON-able value or a string."""

    name: str
    description: str
    parameters: dict[str, Any]
    handler: Callable[..., Any]
    arguments_model: type[BaseModel] | None = None
    context_parameter: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    def __post_init__(self) -> None:
        if not TOOL_NAME.match(self.name):
            raise ValueError(f"Tool name {self.name!r} must match {TOOL_NAME.pattern}.")

    def function_spec(self) -> dict[str, Any]:
        """The session's ``tools`` entry for this tool (protocol.md §5)."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }

    def parse_arguments(self, arguments_json: str) -> dict[str, Any]:
        """The handler's keyword arguments; raises `ToolError` with a message for the model."""
        try:
            raw = json.loads(arguments_json or "{}")
        except ValueError as exc:
            raise ToolError(f"arguments are not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ToolError("arguments must be a JSON object")
        if self.arguments_model is None:
            return raw
        try:
            validated = self.arguments_model.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or '(arguments)'}: {error['msg']}"
                for error in exc.errors(include_url=False)
            )
            raise ToolError(f"invalid arguments: {problems}") from None
        return {field: getattr(validated, field) for field in type(validated).model_fields}

    async def invoke(self, arguments_json: str, *, context: ToolContext) -> ToolResult:
        """Validate and run; never raises (except cancellation): every failure is a failed result."""
        started = time.monotonic()

        def done(status: ToolStatus, output: str) -> ToolResult:
            return ToolResult(status, output, int((time.monotonic() - started) * 1000))

        try:
            arguments = self.parse_arguments(arguments_json)
        except ToolError as exc:
            return done("failed", error_output(str(exc)))
        if self.context_parameter is not None:
            arguments[self.context_parameter] = context
        try:
            value = await asyncio.wait_for(self._run(arguments), self.timeout_s)
        except TimeoutError:
            logger.warning(
                "call %s: tool %s (%s) timed out after %ss",
                context.call.pk,
                self.name,
                context.function_call_id,
                self.timeout_s,
            )
            return done("failed", error_output(f"{self.name} timed out after {self.timeout_s:g} s"))
        except ToolError as exc:
            return done("failed", error_output(str(exc)))
        except Exception as exc:
            # Ids only in the log: arguments and output may hold what the caller said.
            logger.warning(
                "call %s: tool %s (%s) raised %s",
                context.call.pk,
                self.name,
                context.function_call_id,
                type(exc).__name__,
                exc_info=True,
            )
            return done("failed", error_output(f"{type(exc).__name__}: {exc}"))
        return done("completed", _output_text(value))

    async def _run(self, arguments: dict[str, Any]) -> Any:
        if inspect.iscoroutinefunction(self.handler):
            return await self.handler(**arguments)
        # A thread: a slow sync tool must not hold the observer's event loop (it cannot be killed
        # on timeout; the call goes on without its answer and the thread ends on its own). Our own
        # pool: the loop's default one has cpu+4 threads, so 20 calls' slow tools would queue.
        loop = asyncio.get_running_loop()
        result = await loop.run_in_executor(_executor(), functools.partial(self.handler, **arguments))
        if inspect.isawaitable(result):
            return await result
        return result


# ---- deriving tools from functions --------------------------------------------------------------

_SECTION = re.compile(r"^\s*(Args|Arguments|Parameters|Returns|Return|Raises|Yields|Examples?|Notes?):\s*$")
_ARG_LINE = re.compile(r"^\s*(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """(description, {parameter: description}) from a Google-style docstring.

    The description is the text before the first section; ``Args:`` lines are ``name: text`` or
    ``name (type): text``, continued by more-indented lines.
    """
    lines = inspect.cleandoc(doc or "").splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent: int | None = None
    for line in lines:
        header = _SECTION.match(line)
        if header:
            section, current, arg_indent = header.group(1), None, None
            continue
        if section is None:
            summary.append(line)
            continue
        if section not in ("Args", "Arguments", "Parameters") or not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        match = _ARG_LINE.match(line)
        if match and (arg_indent is None or indent <= arg_indent):
            arg_indent = indent
            current = match.group(1).lstrip("*")
            params[current] = match.group(2).strip()
        elif current is not None:
            params[current] = f"{params[current]} {line.strip()}".strip()
    description = " ".join(" ".join(summary).split())
    return description, params


def _is_context(annotation: Any) -> bool:
    return annotation is ToolContext or (isinstance(annotation, str) and annotation == "ToolContext")


def make_tool(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool:
    """A `Tool` from a typed function: every parameter must be annotated (the model needs types)."""
    doc_description, doc_params = parse_docstring(function.__doc__)
    signature = inspect.signature(function)
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    context_parameter: str | None = None
    for parameter in signature.parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD, parameter.POSITIONAL_ONLY):
            raise TypeError(f"{function.__qualname__}: tool parameters must be named ({parameter.name}).")
        if parameter.name not in hints:
            raise TypeError(f"{function.__qualname__}: parameter {parameter.name!r} needs a type hint.")
        annotation = hints[parameter.name]
        if _is_context(annotation):
            context_parameter = parameter.name
            continue
        default = ... if parameter.default is parameter.empty else parameter.default
        info = default if isinstance(default, FieldInfo) else None
        if info is None:
            from pydantic import Field

            documented = doc_params.get(parameter.name)
            info = Field(default, description=documented) if documented else Field(default)
        elif info.description is None and parameter.name in doc_params:
            info.description = doc_params[parameter.name]
        fields[parameter.name] = (annotation, info)
    tool_name = name or function.__name__
    model = create_model(
        f"{tool_name}_arguments",
        __config__=ConfigDict(extra="forbid"),
        **fields,
    )
    schema = model.model_json_schema()
    schema.pop("title", None)
    for prop in schema.get("properties", {}).values():
        if isinstance(prop, dict):
            prop.pop("title", None)
    schema.setdefault("properties", {})
    return Tool(
        name=tool_name,
        description=description or doc_description or tool_name.replace("_", " "),
        parameters=schema,
        handler=function,
        arguments_model=model,
        context_parameter=context_parameter,
        timeout_s=timeout_s,
    )


@overload
def tool(
    function: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool: ...


@overload
def tool(
    function: None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    function: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Decorator form of `make_tool`: ``@tool`` or ``@tool(name=..., timeout_s=...)``; the decorated
    name becomes the `Tool` (call ``.handler`` for the plain function)."""
    if function is not None:
        return make_tool(function, name=name, description=description, timeout_s=timeout_s)

    def decorate(fn: Callable[..., Any]) -> Tool:
        return make_tool(fn, name=name, description=description, timeout_s=timeout_s)

    return decorate


# ---- registry, providers, per-call toolbox ------------------------------------------------------


@runtime_checkable
class ToolProvider(Protocol):
    """Supplies dynamic tools for one call (the MCP bridge). The observer calls `open` when it starts
    observing the call and `close` when the call ends. `open` should catch its own failures (a
    server that is down: log why, return what it has); an exception is logged and the call goes on
    without this provider's tools. Names must be namespaced (``<server>__<tool>``)."""

    async def open(self, call: Call) -> Sequence[Tool]: ...

    async def close(self, call: Call) -> None: ...


class ToolRegistry:
    """Built-in tools by name, and the providers of per-call tools."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        self.providers: list[ToolProvider] = []
        for item in tools:
            self.register(item)

    def register(self, item: Tool) -> Tool:
        if item.name in self._tools and self._tools[item.name] is not item:
            raise ValueError(f"A tool named {item.name!r} is registered already.")
        self._tools[item.name] = item
        return item

    def unregister(self, name: str) -> None:
        self._tools.pop(name, None)

    def add_provider(self, provider: ToolProvider) -> None:
        if provider not in self.providers:
            self.providers.append(provider)

    def remove_provider(self, provider: ToolProvider) -> None:
        if provider in self.providers:
            self.providers.remove(provider)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return sorted(self._tools)

    def choices(self) -> list[tuple[str, str]]:
        """(name, label) pairs for a form's multiple choice."""
        return [(name, f"{name} — {self._tools[name].description}") for name in self.names()]

    def tools(self, names: Iterable[str]) -> list[Tool]:
        """The registered tools among `names`, in the given order (unknown names are skipped with a
        warning: a profile may name a tool that was removed since)."""
        found: list[Tool] = []
        for name in dict.fromkeys(names):
            item = self._tools.get(name)
            if item is None:
                logger.warning("unknown tool %r in an agent profile; skipped", name)
                continue
            found.append(item)
        return found

    def function_specs(self, names: Iterable[str]) -> list[dict[str, Any]]:
        return [item.function_spec() for item in self.tools(names)]


class Toolbox:
    """The tools one call offers, by name (built-ins first, then providers' tools in order)."""

    def __init__(self, tools: Iterable[Tool] = (), *, call: Call | None = None) -> None:
        self._tools: dict[str, Tool] = {}
        self._opened: list[ToolProvider] = []
        self.call = call
        for item in tools:
            self.add(item)

    def add(self, item: Tool) -> bool:
        """Add `item`; False (and a warning) if its name is taken."""
        if item.name in self._tools:
            logger.warning("tool name %r offered twice; the first one is kept", item.name)
            return False
        self._tools[item.name] = item
        return True

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __len__(self) -> int:
        return len(self._tools)

    def function_specs(self) -> list[dict[str, Any]]:
        return [item.function_spec() for item in self._tools.values()]

    async def open_provider(self, provider: ToolProvider) -> int:
        """Add `provider`'s tools for this call; how many were added (0 if it failed)."""
        assert self.call is not None, "a toolbox without a call cannot open providers"
        try:
            offered = await provider.open(self.call)
        except Exception as exc:
            logger.warning(
                "call %s: tool provider %s failed (%s); the call goes on without its tools",
                self.call.pk,
                type(provider).__name__,
                type(exc).__name__,
                exc_info=True,
            )
            offered = ()
        self._opened.append(provider)
        return sum(1 for item in offered if self.add(item))

    async def aclose(self) -> None:
        """Let the providers release what they opened for this call (errors are logged)."""
        opened, self._opened = self._opened, []
        for provider in opened:
            assert self.call is not None
            try:
                await provider.close(self.call)
            except Exception:
                logger.warning(
                    "call %s: closing tool provider %s failed", self.call.pk, provider, exc_info=True
                )


async def build_toolbox(call: Call, *, registry: ToolRegistry, providers: bool = True) -> Toolbox:
    """The toolbox of `call` (its agent must be loaded): the profile's built-ins, then, when
    `providers`, the tools every registered provider offers for this call."""
    toolbox = Toolbox(registry.tools(call.agent.tools or []), call=call)
    if providers:
        for provider in list(registry.providers):
            await toolbox.open_provider(provider)
    return toolbox


HangUp = Callable[[str], None]
AsyncHandler = Callable[..., Awaitable[Any]]
