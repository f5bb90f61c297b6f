"""Helpers for the MCP tests: the weather test server over stdio and over streamable HTTP."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from calls.tools.mcp import ServerSpec

SERVER_SCRIPT = Path(__file__).resolve().parent.parent / "mcp_weather_server.py"
#: Seconds the HTTP test server may take to start listening (a cold interpreter imports starlette).
START_TIMEOUT_S = 30.0


def stdio_spec(**overrides: object) -> ServerSpec:
    """The weather server as a stdio subprocess of the bridge."""
    fields: dict[str, object] = {
        "name": "weather",
        "transport": "stdio",
        "command": sys.executable,
        "args": (str(SERVER_SCRIPT),),
        "timeout_s": 10.0,
    }
    fields.update(overrides)
    return ServerSpec(**fields)  # type: ignore[arg-type]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def child_pids() -> set[int]:
    """Live (not zombie) direct children of this process, from /proc."""
    me = os.getpid()
    found: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid …: comm may hold spaces, so split after the last ')'.
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        if int(ppid) == me and state != "Z":
            found.add(int(entry.name))
    return found


def wait_for_port(port: int, process: subprocess.Popen[bytes], timeout_s: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the MCP test server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"the MCP test server did not listen on {port} within {timeout_s} s")


@pytest.fixture(scope="module")
def http_server_url() -> Iterator[str]:
    """The weather server over streamable HTTP on a free loopback port (a subprocess, stopped after)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVER_SCRIPT), "--http", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
