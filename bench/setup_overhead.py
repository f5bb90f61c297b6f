"""Call set-up overhead of our SDP proxy: offer → answer through `POST /rtc` versus straight to the engine.

Run: .venv/bin/python -m bench.setup_overhead [--rounds-c1 60] [--concurrency 1 10 50] [--profile DIR]
     [--cpu] [--compare stock_whitenoise | --compare-ref GITREF]

Loopback only. Starts the local engine (`python -m realtime_local --no-speech`, its own process) and
the product (`manage.py serve --no-engine`, daphne, production settings but plain-HTTP cookies, a
throw-away PostgreSQL database `h_setup_<pid>`, the call observer embedded as in `make run`), signs
in as the seeded staff user, then at each concurrency runs rounds of `c` simultaneous offers alternately

- *direct*: `POST {engine}/v1/realtime/calls` (multipart `sdp` + `session`, the request our proxy
  makes itself, over a kept-alive connection as a browser would);
- *proxy*: `POST /rtc?mode=audio` (application/sdp), which creates the Call row, builds the session
  config, forwards the offer and stores the provider's call id, then asks the observer to attach,

with the arm that goes first swapped every round (A/B, B/A, …), so both see the same machine. The
clock runs from sending the request to having read the whole SDP answer. Offers are real aiortc
offers made before any timing. After each round its calls are hung up (the proxy's through
`/rtc/<id>/hangup`, the direct ones at the engine), untimed, so neither side fills up, and the next
round waits until the servers are idle again (`Bench.settle`): the observer's work for a round's
calls is not done during another arm's round.

Prints `name: value unit` lines: p50/p95/p99 per arm and concurrency, the proxy's added p50 and
the p50/p95 ratios. `--cpu` also prints the CPU time each process used per call in each arm
(engine, web server, PostgreSQL, this client; from /proc), set-up and hang-up together.
`--profile DIR` records the web server with py-spy during the run (DIR/server.speedscope.json,
DIR/server.txt: the hottest frames; see bench/profiling.py).
`--compare-ref GITREF` serves the product as it was at that commit (exported with `git archive`) as
a third interleaved arm, `proxy_ref`: before and after in one run.
`--floor` adds two arms from a server of their own (`bench.settings_floor`, same stack, no
observer): `floor` forwards the offer through daphne, the product's middleware and its upstream
client and does nothing else, `floor_auth` adds the sign-in check (bench/floor.py). What the
floor adds over *direct* is the fixed stack's (daphne, Django, httpx, one more loopback hop); what
*proxy* adds over the floor is the product's own work.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import httpx

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiling import py_spy  # noqa: E402
from scripts.screenshots import (  # noqa: E402
    DEMO_PASSWORD,
    DEMO_USERNAME,
    DemoServer,
    demo_server,
    free_port,
)

API_KEY = "sk-local"
#: The session our proxy sends for the default agent (same shape, same size), for the direct arm.
SESSION = {
    "type": "realtime",
    "model": "gpt-realtime",
    "instructions": "You are a helpful, concise voice assistant. " * 4,
    "output_modalities": ["audio"],
    "audio": {
        "input": {"transcription": {"model": "whisper-1"}, "turn_detection": {"type": "server_vad"}},
        "output": {"voice": "marin"},
    },
    "tools": [],
}


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN without values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def make_offers(count: int) -> list[str]:
    """Real browser-like offers (one audio sendrecv transceiver), made before anything is timed."""
    from aiortc import RTCPeerConnection

    offers = []
    for _ in range(count):
        peer = RTCPeerConnection()
        peer.addTransceiver("audio", direction="sendrecv")
        await peer.setLocalDescription(await peer.createOffer())
        offers.append(peer.localDescription.sdp)
        await peer.close()
    return offers


@contextlib.contextmanager
def engine_process() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The local engine (no speech: the SDP answer does not depend on it) on a free port."""
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
            "--no-speech",
            "--no-sip",
            "--max-calls",
            "1000",
            "--loopback-candidates",
            "--log-level",
            "WARNING",
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the engine did not start")
            time.sleep(0.2)
        yield f"{base}/v1", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


async def sign_in(http: httpx.AsyncClient, base: str) -> None:
    page = await http.get(f"{base}/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token, "no CSRF token on the login page"
    done = await http.post(
        f"{base}/accounts/login/",
        data={"username": DEMO_USERNAME, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": token.group(1)},
        headers={"Referer": f"{base}/accounts/login/"},
    )
    assert done.status_code == 302, f"sign-in failed: HTTP {done.status_code}"


CLOCK_TICKS: Final = os.sysconf("SC_CLK_TCK")


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds `pid` has used so far (all its threads); 0 once it has exited."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on this machine (backends come and go with connections)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


class CpuMeter:
    """CPU seconds per process group (engine, web servers, PostgreSQL, this client) per arm and
    round, set-up and hang-up together: where a call's work goes, which wall-clock ratios on a
    2-core box cannot show on their own. PostgreSQL counts every server process of the machine
    (the benchmark's backends and whatever else runs), read from /proc at each snapshot."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.used: dict[str, dict[str, float]] = {}
        self.calls: dict[str, int] = {}

    def snapshot(self) -> dict[str, float]:
        pids = {**self.groups, "postgres": postgres_pids(), "client": [os.getpid()]}
        return {name: sum(process_cpu_s(pid) for pid in group) for name, group in pids.items()}

    def servers_cpu_s(self) -> float:
        """CPU seconds used so far by everything but this client (engine, web servers, PostgreSQL)."""
        return sum(seconds for name, seconds in self.snapshot().items() if name != "client")

    def add(self, arm: str, calls: int, before: dict[str, float], after: dict[str, float]) -> None:
        used = self.used.setdefault(arm, {})
        for name, value in after.items():
            used[name] = used.get(name, 0.0) + max(0.0, value - before.get(name, 0.0))
        self.calls[arm] = self.calls.get(arm, 0) + calls

    def report(self) -> None:
        for arm, used in self.used.items():
            for name, seconds in used.items():
                per_call = seconds * 1000 / max(1, self.calls[arm])
                print(f"cpu.{arm}.{name}: {per_call:.2f} ms per call (set-up and hang-up)")


#: Between rounds, the servers are idle again when they used less CPU than this in one window
#: (/proc counts in 10 ms ticks; an idle web process with its embedded observer uses ~2 % of a core).
SETTLE_WINDOW_S: Final = 0.2
SETTLE_CPU_S: Final = 0.03
#: The longest wait for that; a round that had to stop waiting is counted (`unsettled_rounds`).
SETTLE_MAX_S: Final = 5.0

#: The floor arms (`--floor`): the path each posts the offer to on the floor server.
FLOOR_PATHS: Final = {"floor": "/bench/floor", "floor_auth": "/bench/floor-auth"}


class Bench:
    """The arms: `direct` (the engine), one per product server (`proxy`, `proxy_<variant>`) and the
    floor arms (`FLOOR_PATHS`, which hang up at the engine)."""

    def __init__(self, webs: dict[str, str], engine: str, offers: list[str], meter: CpuMeter) -> None:
        self.webs, self.engine, self.offers, self.meter = webs, engine, offers, meter
        self.unsettled = 0
        limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
        self.browsers = {arm: httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) for arm in webs}
        self.api = httpx.AsyncClient(
            timeout=30, limits=limits, trust_env=False, headers={"Authorization": f"Bearer {API_KEY}"}
        )
        self.arms = ["direct", *webs]
        self.next = 0
        self.failures = 0

    def fail(self, arm: str, response: httpx.Response) -> None:
        self.failures += 1
        if self.failures <= 3:
            print(f"# {arm} failed: HTTP {response.status_code} {response.text[:200]!r}", file=sys.stderr)

    def offer(self) -> str:
        self.next += 1
        return self.offers[self.next % len(self.offers)]

    async def proxy(self, arm: str) -> tuple[float, str | None]:
        offer = self.offer()
        path = FLOOR_PATHS.get(arm, "/rtc?mode=audio")
        started = time.perf_counter()
        response = await self.browsers[arm].post(
            f"{self.webs[arm]}{path}", content=offer, headers={"Content-Type": "application/sdp"}
        )
        took = (time.perf_counter() - started) * 1000
        if response.status_code != 201:
            self.fail(arm, response)
            return took, None
        location: str = response.headers["location"]
        return took, location.rstrip("/").rsplit("/", 1)[-1] if arm in FLOOR_PATHS else location

    async def direct(self) -> tuple[float, str | None]:
        offer = self.offer()
        files = {
            "sdp": (None, offer, "application/sdp"),
            "session": (None, json.dumps(SESSION), "application/json"),
        }
        started = time.perf_counter()
        response = await self.api.post(f"{self.engine}/realtime/calls", files=files)
        took = (time.perf_counter() - started) * 1000
        if response.status_code != 201:
            self.fail("direct", response)
            return took, None
        return took, response.headers["location"].rstrip("/").rsplit("/", 1)[-1]

    async def hang_up(self, arm: str, ids: list[str | None]) -> None:
        async def one(call: str) -> None:
            if arm == "direct" or arm in FLOOR_PATHS:
                await self.api.post(f"{self.engine}/realtime/calls/{call}/hangup")
            else:
                web = self.webs[arm]
                await self.browsers[arm].post(f"{web}{call}/hangup", headers={"Origin": web})

        await asyncio.gather(*(one(call) for call in ids if call))

    async def round(self, arm: str, concurrency: int) -> list[float]:
        if arm == "direct":
            results = await asyncio.gather(*(self.direct() for _ in range(concurrency)))
        else:
            results = await asyncio.gather(*(self.proxy(arm) for _ in range(concurrency)))
        await self.hang_up(arm, [call for _, call in results])
        return [took for took, call in results if call]

    async def settle(self) -> None:
        """Wait until the servers are idle again: the work a round leaves behind (its hang-ups, the
        observer detaching from its calls and recording their end) is then counted against that
        round's arm, not against the next round's."""
        deadline = time.monotonic() + SETTLE_MAX_S
        before = self.meter.servers_cpu_s()
        while True:
            await asyncio.sleep(SETTLE_WINDOW_S)
            now = self.meter.servers_cpu_s()
            if now - before < SETTLE_CPU_S:
                return
            if time.monotonic() > deadline:
                self.unsettled += 1
                return
            before = now

    async def run(self, concurrency: int, rounds: int) -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {arm: [] for arm in self.arms}
        for warm in self.arms:  # connections, imports, first queries: not counted
            await self.round(warm, concurrency)
            await self.settle()
        for index in range(rounds):
            shift = index % len(self.arms)  # each arm goes first in turn
            for arm in self.arms[shift:] + self.arms[:shift]:
                before = self.meter.snapshot()
                samples[arm] += await self.round(arm, concurrency)
                await self.settle()
                self.meter.add(f"c{concurrency}.{arm}", concurrency, before, self.meter.snapshot())
        return samples


def report(concurrency: int, samples: dict[str, list[float]]) -> None:
    for arm, values in samples.items():
        for q in (50, 95, 99):
            print(f"setup.c{concurrency}.{arm}.p{q}: {percentile(values, q):.1f} ms")
        print(f"setup.c{concurrency}.{arm}.n: {len(values)} calls")
    direct = samples["direct"]
    for arm, proxy in samples.items():
        if arm == "direct":
            continue
        added = percentile(proxy, 50) - percentile(direct, 50)
        print(f"setup.c{concurrency}.{arm}_added.p50: {added:.1f} ms")
        print(f"setup.c{concurrency}.{arm}_ratio.p50: {percentile(proxy, 50) / percentile(direct, 50):.2f} x")
        print(f"setup.c{concurrency}.{arm}_ratio.p95: {percentile(proxy, 95) / percentile(direct, 95):.2f} x")


async def main_async(webs: dict[str, str], engine: str, options: argparse.Namespace, meter: CpuMeter) -> int:
    offers = await make_offers(8)
    bench = Bench(webs, engine, offers, meter)
    for arm, web in webs.items():
        if arm != "floor":  # the plain floor needs no session (one would only cost it a cookie)
            await sign_in(bench.browsers[arm], web)
    for concurrency in options.concurrency:
        rounds = max(4, options.rounds_c1 // concurrency) if concurrency > 1 else options.rounds_c1
        rounds = max(rounds, -(-options.min_samples // concurrency))
        report(concurrency, await bench.run(concurrency, rounds))
    if options.cpu:
        meter.report()
    print(f"setup.failed_requests: {bench.failures} requests")
    print(f"setup.unsettled_rounds: {bench.unsettled} rounds (servers still busy {SETTLE_MAX_S:g} s after)")
    for browser in bench.browsers.values():
        await browser.aclose()
    await bench.api.aclose()
    return 1 if bench.failures else 0


#: `--compare NAME`: a second web server with an earlier configuration, as one more interleaved arm.
VARIANTS = {
    # WhiteNoise's stock, sync-only middleware (before voiceagent/static_files.py).
    "stock_whitenoise": "bench.settings_stock_whitenoise",
}


@contextlib.contextmanager
def postgres_database(name: str) -> Iterator[str]:
    """A fresh PostgreSQL database on 127.0.0.1 (the product's production database), dropped after."""
    import psycopg

    admin = "postgres://postgres@127.0.0.1:5432/postgres"
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgres://postgres@127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def exported_tree(ref: str) -> Iterator[Path]:
    """The repository's files at `ref` (`git archive`, nothing in .git changes), removed after."""
    directory = Path(tempfile.mkdtemp(prefix="setup-overhead-ref-"))
    try:
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(directory)], input=archive, check=True)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@contextlib.contextmanager
def web_server(
    engine: str, *, settings_module: str, database: str, repo: Path = REPO, serve_args: tuple[str, ...] = ()
) -> Iterator[DemoServer]:
    """`manage.py serve --no-engine` from `repo` (this checkout or an exported ref) with production
    settings, on a fresh PostgreSQL database, pointed at the engine."""
    with (
        postgres_database(database) as database_url,
        demo_server(
            debug=False,
            repo=repo,
            serve_args=serve_args,
            extra_env={
                "SECURE_COOKIES": "false",
                "DATABASE_URL": database_url,
                "DJANGO_SETTINGS_MODULE": settings_module,
                "REALTIME_BASE_URL": engine,
                "REALTIME_API_KEY": API_KEY,
                "RTC_RATE_LIMIT": "1000000/m",  # the benchmark sets up thousands of calls a minute
            },
        ) as server,
    ):
        yield server


def git_describe(ref: str) -> str:
    """The commit `ref` names, short hash and subject."""
    out = subprocess.run(
        ["git", "log", "-1", "--format=%h %s", ref], cwd=REPO, capture_output=True, text=True
    )
    return out.stdout.strip()[:100]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50])
    parser.add_argument("--rounds-c1", type=int, default=60, help="rounds at concurrency 1 (default 60)")
    parser.add_argument("--min-samples", type=int, default=100, help="calls per arm at least (default 100)")
    parser.add_argument("--profile", type=Path, help="record the web server with py-spy into this folder")
    parser.add_argument(
        "--cpu", action="store_true", help="also print each process's CPU per call, by arm (from /proc)"
    )
    parser.add_argument("--compare", choices=sorted(VARIANTS), help="one more arm: an earlier configuration")
    parser.add_argument(
        "--compare-ref",
        metavar="GITREF",
        help="one more arm, `proxy_ref`: the product as it was at this commit (exported with git archive)",
    )
    parser.add_argument(
        "--floor",
        action="store_true",
        help="two more arms, `floor` and `floor_auth`: the offer forwarded by the same stack, nothing else",
    )
    options = parser.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    with contextlib.ExitStack() as stack:
        engine, engine_proc = stack.enter_context(engine_process())
        servers = {
            "proxy": stack.enter_context(
                web_server(engine, settings_module="voiceagent.settings", database=f"h_setup_{os.getpid()}")
            )
        }
        if options.compare:
            servers[f"proxy_{options.compare}"] = stack.enter_context(
                web_server(
                    engine,
                    settings_module=VARIANTS[options.compare],
                    database=f"h_setup_{os.getpid()}_b",
                )
            )
        if options.compare_ref:
            tree = stack.enter_context(exported_tree(options.compare_ref))
            servers["proxy_ref"] = stack.enter_context(
                web_server(
                    engine,
                    settings_module="voiceagent.settings",
                    database=f"h_setup_{os.getpid()}_ref",
                    repo=tree,
                )
            )
            print(f"proxy_ref: {options.compare_ref} ({git_describe(options.compare_ref)})")
        if options.floor:
            floor = stack.enter_context(
                web_server(
                    engine,
                    settings_module="bench.settings_floor",
                    database=f"h_setup_{os.getpid()}_floor",
                    serve_args=("--no-observer",),
                )
            )
            servers.update(floor=floor, floor_auth=floor)
        groups = {"engine": [engine_proc.pid]}
        web_pids = {f"web_{arm}": [server.process.pid] for arm, server in servers.items()}
        web_pids.pop("web_floor_auth", None)  # the floor server's CPU counts as web_floor
        groups.update(web_pids)
        meter = CpuMeter(groups)
        with py_spy(servers["proxy"].process.pid, options.profile, "server"):
            code = asyncio.run(
                main_async({arm: server.base_url for arm, server in servers.items()}, engine, options, meter)
            )
        if code:
            for server in {id(server): server for server in servers.values()}.values():
                print(f"# the server's log ends with:\n{server.log_tail(3000)}", file=sys.stderr)
    print(f"machine.load_average_end: {os.getloadavg()[0]:.2f}")
    return code


if __name__ == "__main__":
    sys.exit(main())
