"""Memory per local-engine call: the engine's RSS with 0, 10 and 50 idle WebRTC calls, and while
calls are in a speaking turn.

Run: .venv/bin/python -m bench.engine_memory [--calls 10 50] [--speakers 5]

Loopback only. The engine runs as its own process (`python -m realtime_local`, the real speech
stack, loopback ICE candidates) so that its RSS (/proc/<pid>/status VmRSS) is its own; the calls
are aiortc peers in this process (tests/engine/fixtures_media.py's browser-like client: a
microphone track sending silence, the `oai-events` channel), each connected (ICE, DTLS, data
channel open, `session.created`) before the next is made. An idle call still costs the engine its
peer, Opus in and out, the VAD over the silence it receives and 50 outgoing frames a second.

Then `--speakers` of the calls say an espeak-ng question at once; the RSS is sampled every 100 ms
until their answers have played (peak reported), and the calls are hung up (RSS after: what the
engine kept).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@dataclass
class Runtime:
    loopback_candidates: bool = True


@dataclass
class ExternalEngine:
    """What `connected_client` needs of an engine, for one running in another process."""

    base_url: str
    runtime: Runtime

    async def create_call(self, offer_sdp: str, session: dict[str, Any] | None = None) -> tuple[str, str]:
        from tests.engine.fixtures_media import ServedEngine

        return await ServedEngine.create_call(self, offer_sdp, session)  # type: ignore[arg-type]

    async def hangup(self, call_id: str) -> None:
        from tests.engine.fixtures_media import ServedEngine

        await ServedEngine.hangup(self, call_id)  # type: ignore[arg-type]


def start_engine(max_calls: int) -> tuple[subprocess.Popen[bytes], str]:
    from scripts.screenshots import free_port
    from tests.engine.fixtures_media import API_KEY

    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "realtime_local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--no-sip",
            "--max-calls",
            str(max_calls),
            "--loopback-candidates",
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 240
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return process, f"{base}/v1"
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError("the engine did not become ready")
        time.sleep(0.5)


@contextlib.asynccontextmanager
async def connect(engine: ExternalEngine, session: dict[str, Any]) -> AsyncIterator[Any]:
    """`connected_client` with patience for a loaded machine (30 s to open, not 10)."""
    from realtime_local.media import offer_loopback_candidates
    from tests.engine.fixtures_media import RealtimeTestClient

    client = RealtimeTestClient()
    offer_loopback_candidates(True)
    try:
        call_id, answer = await engine.create_call(await client.offer(), session)
        await client.set_answer(answer)
        await client.wait_open(30)
        await client.wait_for("session.created", timeout=30)
        yield client
        await engine.hangup(call_id)
    finally:
        await asyncio.wait_for(client.close(), 10)


async def speak(speakers: list[Any], question: Any, *, pid: int | None = None) -> tuple[float, list[bool]]:
    """Every speaker says `question` at once; the peak RSS of `pid` until all answers have played."""
    marks = [len(client.events) for client in speakers]
    for client in speakers:
        client.mic.say(question)
    peak = 0.0
    deadline = time.monotonic() + 90
    done = [False] * len(speakers)
    while not all(done) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        if pid is not None:
            peak = max(peak, rss_mb(pid))
        for index, client in enumerate(speakers):
            done[index] = "output_audio_buffer.stopped" in client.types()[marks[index] :]
    for index, client in enumerate(speakers):
        if not done[index]:
            print(f"# speaker {index} got {client.types()[marks[index] :][:12]}", file=sys.stderr)
    return peak, done


async def run(options: argparse.Namespace) -> None:
    from tests.engine.fixtures_media import espeak

    process, base = start_engine(max(options.calls) + 5)
    try:
        engine = ExternalEngine(base, Runtime())
        session = {"type": "realtime", "instructions": "Answer briefly."}
        await asyncio.sleep(3)
        base_rss = rss_mb(process.pid)
        print(f"engine.rss_0_calls: {base_rss:.0f} MB")
        async with contextlib.AsyncExitStack() as stack:
            clients: list[Any] = []
            failed = 0
            for target in options.calls:
                while len(clients) < target and failed < 3:
                    try:
                        clients.append(await stack.enter_async_context(connect(engine, session)))
                    except (TimeoutError, AssertionError) as exc:  # a saturated machine: say so, go on
                        failed += 1
                        print(f"# call {len(clients) + 1} did not connect: {exc!r}", file=sys.stderr)
                await asyncio.sleep(3)
                rss = rss_mb(process.pid)
                print(f"engine.rss_{target}_idle_calls: {rss:.0f} MB ({len(clients)} connected)")
                print(f"engine.per_idle_call_at_{target}: {(rss - base_rss) / max(1, len(clients)):.1f} MB")
            question = espeak("What time does the library open on Sunday")
            # One turn first, not counted: the first inference of each model allocates for good.
            warm = await speak(clients[:1], question)
            print(f"engine.rss_after_first_turn: {rss_mb(process.pid):.0f} MB ({sum(warm[1])} of 1 answered)")
            idle = rss_mb(process.pid)
            peak, done = await speak(clients[: options.speakers], question, pid=process.pid)
            print(f"engine.rss_peak_{options.speakers}_speaking: {peak:.0f} MB")
            print(f"engine.per_speaking_call_extra: {(peak - idle) / max(1, options.speakers):.1f} MB")
            print(f"engine.turns_answered: {sum(done)} of {len(done)} turns")
        await asyncio.sleep(3)
        print(f"engine.rss_after_hangup: {rss_mb(process.pid):.0f} MB")
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 50])
    parser.add_argument("--speakers", type=int, default=5)
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    asyncio.run(run(options))
    print(f"machine.load_average_end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
