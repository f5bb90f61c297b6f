"""MCP bridge figures: connect (spawn/handshake + tools/list) and tool-call round trips.

    .venv/bin/python -m bench.mcp_tools               # 5 connects, 50 calls per transport
    .venv/bin/python -m bench.mcp_tools --connects 10 --calls 200

Runs the weather test server (tests/mcp_weather_server.py) over stdio (the bridge spawns it) and
over streamable HTTP (a subprocess on a free loopback port), through `calls.tools.mcp` exactly as a
call does: `connect()` → `Tool.invoke()` of `weather__get_weather` → `close()`. Prints medians and
p95s; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceagent.test_settings")

import django

django.setup()

from calls.models import Call  # noqa: E402
from calls.tools.base import ToolContext  # noqa: E402
from calls.tools.mcp import ServerSpec, connect  # noqa: E402
from tests.tools.mcp_support import SERVER_SCRIPT, free_port, stdio_spec, wait_for_port  # noqa: E402


def summary(label: str, seconds: list[float]) -> str:
    ms = sorted(value * 1000 for value in seconds)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"{label:<34} n={len(ms):<4} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms"


async def measure(spec: ServerSpec, connects: int, calls: int) -> None:
    context = ToolContext(call=Call(id=uuid.uuid4()), function_call_id="bench")
    opened, closed, invoked = [], [], []
    for index in range(connects):
        started = time.perf_counter()
        connection = await connect(spec)
        opened.append(time.perf_counter() - started)
        if index == 0:
            weather = {tool.name: tool for tool in connection.offered_tools()}["weather__get_weather"]
            for _ in range(calls):
                started = time.perf_counter()
                result = await weather.invoke('{"city": "Paris"}', context=context)
                invoked.append(time.perf_counter() - started)
                assert result.ok, result
        started = time.perf_counter()
        await connection.close()
        closed.append(time.perf_counter() - started)
    print(summary(f"{spec.transport}: connect + list", opened))
    print(summary(f"{spec.transport}: get_weather call", invoked))
    print(summary(f"{spec.transport}: close", closed))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connects", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(measure(stdio_spec(), args.connects, args.calls))
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, server)
        spec = ServerSpec(name="weather", transport="streamable-http", url=f"http://127.0.0.1:{port}/mcp")
        asyncio.run(measure(spec, args.connects, args.calls))
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
