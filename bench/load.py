"""Load: many concurrent web call set-ups and SIP webhook deliveries against a multi-process cluster.

Starts `tests/scale/cluster.py`'s cluster (default 2 web + 2 observer worker processes on a fresh
PostgreSQL database and a private Redis prefix, the local engine without speech), then, all at once:

- `--calls` web call set-ups: each a signed-in staff user (one user per call, so per-user rate limits
  are not what is measured) POSTs a real aiortc SDP offer to `/rtc` on the web processes in turn (as
  a round-robin load balancer would) and must get 201 with an SDP answer;
- `--webhooks` SIP deliveries: an incoming call is created on the engine and its
  `realtime.call.incoming` webhook, signed with the cluster's secret (svix scheme), is posted to
  `/telephony/webhook` in turn; it must get 200 `{"outcome": "accepted"}`.

Set-up latency is the time from sending the request to its full response. Afterwards it checks that
every call was observed by a worker (it holds the call's lease or stored an event of it, within
`--observe-limit` s) and that the SIP calls were accepted at the engine, then hangs every call up
(web: `/rtc/<id>/hangup`; SIP: the engine's hang-up) and prints `name: value unit` lines. Last, the
same offers go all at once straight to the engine (`engine-only set-up`): the share of the latency
that is the upstream's own. Bounded: every request has a time limit; loopback only. The aiortc peers
only make the offers (closed before the requests): the set-up path (web → engine → observer) is what
is measured, not 200 ICE/DTLS handshakes on the same two cores.

Run: .venv/bin/python bench/load.py [--calls 200] [--webhooks 50] [--web 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.scale.cluster import ENGINE_API_KEY, Cluster  # noqa: E402
from tests.scale.helpers import signed_webhook  # noqa: E402


@dataclass
class Outcome:
    """One request: its status (None: no response), seconds taken, and what it made."""

    ok: bool
    status: int | None
    seconds: float
    detail: str = ""
    call_id: str = ""  # our Call uuid (web) or the provider call id (SIP)


@dataclass
class Results:
    web: list[Outcome] = field(default_factory=list)
    sip: list[Outcome] = field(default_factory=list)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (not empty)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered) + 0.5) - 1))]


def report(name: str, outcomes: list[Outcome]) -> list[str]:
    """The `name: value unit` lines of one kind of request."""
    if not outcomes:
        return []
    ok = [o for o in outcomes if o.ok]
    lines = [
        f"{name} requests: {len(outcomes)} count",
        f"{name} success rate: {100.0 * len(ok) / len(outcomes):.1f} %",
        f"{name} errors: {len(outcomes) - len(ok)} count",
    ]
    if ok:
        ms = [o.seconds * 1000 for o in ok]
        lines += [
            f"{name} latency p50: {percentile(ms, 0.50):.0f} ms",
            f"{name} latency p95: {percentile(ms, 0.95):.0f} ms",
            f"{name} latency p99: {percentile(ms, 0.99):.0f} ms",
            f"{name} latency max: {max(ms):.0f} ms",
        ]
    failures: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            key = f"{o.status} {o.detail[:120]}"
            failures[key] = failures.get(key, 0) + 1
    for key, count in sorted(failures.items(), key=lambda kv: -kv[1])[:5]:
        lines.append(f"# {name} failure x{count}: {key}")
    return lines


async def make_offers(count: int) -> list[str]:
    """`count` real offers shaped like the browser's (audio + the oai-events data channel)."""
    from aiortc import RTCConfiguration, RTCPeerConnection

    offers = []
    for _ in range(count):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("audio", direction="sendrecv")
        pc.createDataChannel("oai-events")
        await pc.setLocalDescription(await pc.createOffer())
        offers.append(pc.localDescription.sdp)
        await pc.close()
    return offers


async def set_up_web_call(
    http: aiohttp.ClientSession, base_url: str, session_key: str, offer: str, start: asyncio.Event
) -> Outcome:
    await start.wait()
    began = time.perf_counter()
    try:
        async with http.post(
            f"{base_url}/rtc",
            data=offer.encode(),
            headers={"Content-Type": "application/sdp", "Cookie": f"sessionid={session_key}"},
        ) as response:
            body = await response.text()
            seconds = time.perf_counter() - began
            location = response.headers.get("Location", "")
            ok = response.status == 201 and body.startswith("v=0") and location.startswith("/rtc/")
            return Outcome(
                ok, response.status, seconds, "" if ok else body[:200], location.removeprefix("/rtc/")
            )
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(False, None, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")


async def deliver_webhook(
    http: aiohttp.ClientSession, cluster: Cluster, base_url: str, index: int, start: asyncio.Event
) -> Outcome:
    """Create an incoming call on the engine, then post its signed webhook (timed from the post)."""
    async with http.post(
        f"{cluster.realtime_url}/realtime/_local/incoming_calls",
        json={"from": f"+1555{index:07d}", "to": "+15550000001"},
        headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
    ) as created:
        if created.status != 201:
            return Outcome(
                False, created.status, 0.0, f"engine refused the incoming call: {await created.text()}"
            )
        provider_call_id = str((await created.json())["call_id"])
    # Signed before the burst starts (svix accepts a timestamp up to 5 minutes old).
    body, headers = signed_webhook(cluster, provider_call_id, caller=f"+1555{index:07d}")
    await start.wait()
    began = time.perf_counter()
    try:
        async with http.post(f"{base_url}/telephony/webhook", data=body, headers=headers) as response:
            text = await response.text()
            seconds = time.perf_counter() - began
            ok = response.status == 200 and '"accepted"' in text
            return Outcome(ok, response.status, seconds, "" if ok else text[:200], provider_call_id)
    except (aiohttp.ClientError, TimeoutError) as exc:
        return Outcome(
            False, None, time.perf_counter() - began, f"{type(exc).__name__}: {exc}", provider_call_id
        )


async def engine_baseline(http: aiohttp.ClientSession, cluster: Cluster, offers: list[str]) -> list[Outcome]:
    """The same offers, all at once, straight to the engine (no Django, no database, no Redis): the
    share of the set-up latency that is the upstream's own. Each call is hung up afterwards."""

    async def one(offer: str) -> Outcome:
        began = time.perf_counter()
        try:
            async with http.post(
                f"{cluster.realtime_url}/realtime/calls",
                data=offer.encode(),
                headers={**{"Content-Type": "application/sdp"}, "Authorization": f"Bearer {ENGINE_API_KEY}"},
            ) as response:
                body = await response.text()
                seconds = time.perf_counter() - began
                location = response.headers.get("Location", "")
                ok = response.status == 201 and body.startswith("v=0")
                return Outcome(
                    ok, response.status, seconds, "" if ok else body[:200], location.rsplit("/", 1)[-1]
                )
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Outcome(False, None, time.perf_counter() - began, f"{type(exc).__name__}: {exc}")

    outcomes = list(await asyncio.gather(*(one(offer) for offer in offers)))
    for outcome in outcomes:
        if outcome.call_id:
            async with http.post(
                f"{cluster.realtime_url}/realtime/calls/{outcome.call_id}/hangup",
                headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
            ):
                pass
    return outcomes


async def wait_observed(cluster: Cluster, call_ids: list[str], limit_s: float) -> tuple[int, float]:
    """How many of the web calls a worker attached to (it holds the call's observer lease, or stored an
    event of it), and after how long the last one was."""
    if not call_ids:
        return 0, 0.0
    began = time.monotonic()
    observed = 0
    while time.monotonic() - began < limit_s:
        rows = await asyncio.to_thread(
            cluster.sql,
            "SELECT count(*) FROM (SELECT call_id FROM calls_observerlease WHERE owner <> ''"
            " AND call_id = ANY(%s::uuid[]) UNION SELECT call_id FROM calls_event"
            " WHERE call_id = ANY(%s::uuid[])) AS attached",
            call_ids,
            call_ids,
        )
        observed = int(rows[0][0])
        if observed >= len(call_ids):
            break
        await asyncio.sleep(0.5)
    return observed, time.monotonic() - began


async def wait_accepted(cluster: Cluster, provider_ids: list[str], limit_s: float) -> int:
    """How many SIP calls reached the active state in our database (accepted at the engine)."""
    began = time.monotonic()
    accepted = 0
    while provider_ids and time.monotonic() - began < limit_s:
        rows = await asyncio.to_thread(
            cluster.sql,
            "SELECT count(*) FROM calls_call WHERE provider_call_id = ANY(%s) AND answered_at IS NOT NULL",
            provider_ids,
        )
        accepted = int(rows[0][0])
        if accepted >= len(provider_ids):
            break
        await asyncio.sleep(0.5)
    return accepted


async def hang_up(
    http: aiohttp.ClientSession, cluster: Cluster, results: Results, sessions: list[str]
) -> tuple[int, int]:
    """End every call made; (ended, attempted)."""
    semaphore = asyncio.Semaphore(50)
    urls = cluster.web_urls

    async def web(index: int, outcome: Outcome) -> bool:
        base = urls[index % len(urls)]
        async with semaphore:
            try:
                async with http.post(
                    f"{base}/rtc/{outcome.call_id}/hangup",
                    headers={"Cookie": f"sessionid={sessions[index]}", "Origin": base},
                ) as response:
                    return response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return False

    async def sip(outcome: Outcome) -> bool:
        async with semaphore:
            try:
                async with http.post(
                    f"{cluster.realtime_url}/realtime/calls/{outcome.call_id}/hangup",
                    headers={"Authorization": f"Bearer {ENGINE_API_KEY}"},
                ) as response:
                    return response.status in (200, 404)
            except (aiohttp.ClientError, TimeoutError):
                return False

    jobs = [web(i, o) for i, o in enumerate(results.web) if o.call_id]
    jobs += [sip(o) for o in results.sip if o.call_id]
    done = await asyncio.gather(*jobs)
    return sum(done), len(jobs)


async def run(args: argparse.Namespace, cluster: Cluster) -> list[str]:
    usernames = cluster.create_staff_users(args.calls, prefix="bench")
    by_user = cluster.create_sessions(usernames)
    sessions = [by_user[name] for name in usernames]
    offers = await make_offers(args.calls)
    urls = cluster.web_urls
    timeout = aiohttp.ClientTimeout(total=args.request_limit)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    start = asyncio.Event()
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as http:
        web_jobs = [
            asyncio.ensure_future(set_up_web_call(http, urls[i % len(urls)], sessions[i], offers[i], start))
            for i in range(args.calls)
        ]
        sip_jobs = [
            asyncio.ensure_future(deliver_webhook(http, cluster, urls[i % len(urls)], i, start))
            for i in range(args.webhooks)
        ]
        await asyncio.sleep(0.5)  # let the SIP jobs create their engine calls first
        began = time.perf_counter()
        start.set()
        results = Results(
            web=list(await asyncio.gather(*web_jobs)), sip=list(await asyncio.gather(*sip_jobs))
        )
        wall = time.perf_counter() - began
        web_ids = [o.call_id for o in results.web if o.ok]
        observed, observe_s = await wait_observed(cluster, web_ids, args.observe_limit)
        accepted = await wait_accepted(cluster, [o.call_id for o in results.sip if o.ok], args.observe_limit)
        ended, attempted = await hang_up(http, cluster, results, sessions)
        baseline = await engine_baseline(http, cluster, offers) if args.engine_baseline else []

    lines = [
        f"# {args.calls} web set-ups + {args.webhooks} SIP webhooks at once · {len(urls)} web + "
        f"{len(cluster.worker_procs)} worker processes · {os.cpu_count()} CPUs · PostgreSQL + Redis"
        f" · load average {os.getloadavg()[0]:.1f}" + (f" · {' '.join(args.set)}" if args.set else ""),
        f"burst wall time: {wall:.2f} s",
        *report("web set-up", results.web),
        f"web calls observed: {observed}/{len(web_ids)} count",
        f"web calls all observed after: {observe_s:.1f} s",
        *report("sip webhook", results.sip),
        f"sip calls accepted: {accepted}/{sum(o.ok for o in results.sip)} count",
        f"calls hung up: {ended}/{attempted} count",
        *report("engine-only set-up", baseline),
    ]
    crashed = [p.name for p in cluster.processes if not p.alive]
    lines.append(
        f"processes crashed: {len(crashed)} count{' (' + ', '.join(crashed) + ')' if crashed else ''}"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=200, help="concurrent web call set-ups (default 200)")
    parser.add_argument(
        "--webhooks", type=int, default=50, help="concurrent SIP webhook deliveries (default 50)"
    )
    parser.add_argument("--web", type=int, default=2, help="web processes (default 2)")
    parser.add_argument("--workers", type=int, default=2, help="observer worker processes (default 2)")
    parser.add_argument(
        "--request-limit", type=float, default=120.0, help="seconds per request (default 120)"
    )
    parser.add_argument("--observe-limit", type=float, default=60.0, help="seconds to wait for observers")
    parser.add_argument(
        "--no-engine-baseline",
        dest="engine_baseline",
        action="store_false",
        help="skip the comparison burst of the same offers straight to the engine",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the web and worker processes (repeatable), e.g. DB_POOL_MAX=20",
    )
    parser.add_argument("--keep-logs", action="store_true", help="print where the process logs are kept")
    args = parser.parse_args()
    env = {
        # The engine answers 200 offers on two shared cores: an SDP exchange may wait its turn longer
        # than the 10 s default meant for one call against OpenAI.
        "REALTIME_HTTP_TIMEOUT": "90",
        "TELEPHONY_MAX_CONCURRENT_CALLS": "",
    }
    env.update(dict(item.split("=", 1) for item in args.set))
    cluster = Cluster(
        web=args.web, workers=args.workers, env=env, engine_max_calls=args.calls + args.webhooks + 50
    )
    with cluster:
        lines = asyncio.run(run(args, cluster))
        for line in lines:
            print(line)
        if args.keep_logs:
            print(f"# logs: {cluster.log_dir}")
    if not args.keep_logs:
        cluster.cleanup_logs()
    return (
        0
        if all(
            " errors: 0 count" in line
            for line in lines
            if line.startswith(("web ", "sip ")) and " errors: " in line
        )
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
