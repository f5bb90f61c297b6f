"""A small MCP server for tests: weather from a fixed table, plus a slow tool and a failing tool.

Run over stdio (the default) or streamable HTTP on loopback::

    python tests/mcp_weather_server.py
    python tests/mcp_weather_server.py --http --port 8765

The table is fixed so that tests (and the browser e2e) can assert on the exact sentence the agent
speaks. It deliberately differs from the built-in ``get_weather`` table, so a test can tell which tool
answered.
"""

from __future__ import annotations

import argparse
import asyncio

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

WEATHER: dict[str, str] = {
    "paris": "light rain and 14 degrees",
    "london": "fog and 9 degrees",
    "tokyo": "clear skies and 22 degrees",
}

server = MCPServer("weather")


@server.tool()
def get_weather(city: str) -> str:
    """Get the current weather for a city."""
    found = WEATHER.get(city.strip().lower())
    if found is None:
        # ToolError keeps its message in the isError result (other exceptions are masked by the SDK).
        raise ToolError(f"no weather for {city}")
    return f"The weather in {city.strip().title()} is {found}."


@server.tool()
async def slow(seconds: float = 30.0) -> str:
    """Sleep for a while, then answer (for timeout tests)."""
    await asyncio.sleep(seconds)
    return "finally done"


@server.tool()
def boom() -> str:
    """Always fails (for error mapping tests)."""
    raise RuntimeError("boom went the tool")


def main() -> None:
    """Parse the transport flags and serve until stdin closes or the process is terminated."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.port, streamable_http_path="/mcp")
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
