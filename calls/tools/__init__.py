"""Agent tools: the registry (see `calls.tools.base` for the API), the built-ins, and the
process-wide `registry` that agent profiles name tools from and MCP providers plug into."""

from __future__ import annotations

from calls.tools.base import (
    DEFAULT_TIMEOUT_S,
    Tool,
    Toolbox,
    ToolContext,
    ToolError,
    ToolProvider,
    ToolRegistry,
    ToolResult,
    build_toolbox,
    error_output,
    make_tool,
    parse_docstring,
    tool,
)
from calls.tools.builtins import BUILTIN_TOOLS

#: The process-wide registry: the built-ins, plus the providers apps add (e.g. MCP servers).
registry = ToolRegistry(BUILTIN_TOOLS)

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_TIMEOUT_S",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolProvider",
    "ToolRegistry",
    "ToolResult",
    "Toolbox",
    "build_toolbox",
    "error_output",
    "make_tool",
    "parse_docstring",
    "registry",
    "tool",
]
