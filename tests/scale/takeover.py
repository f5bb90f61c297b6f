"""Observer takeover on a real cluster: live calls, a worker stopped or killed, the engine's log
compared with the stored events. Used by tests/scale/test_observer_takeover.py and bench/takeover.py.

How it works: the engine writes every event it emits to its sent-event log (REALTIME_LOCAL_EVENT_LOG,
realtime_local/event_log.py) with the sideband sinks attached at that moment; observers identify
their sideband with the User-Agent ``voiceagent-observer/<lease owner>``. The calls come in as SIP
webhooks through a web process (which accepts them and asks a worker to observe them); a driver
sideband per call keeps each one talking (typed turns: ~15 events per answer). After the victim
worker is stopped, a call is *observed again* when a sideband of another worker attaches to it; an
event is *lost after takeover* when it was emitted while that new sideband was attached and is not
among the call's stored events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from websockets.asyncio.client import connect

from tests.scale.cluster import ENGINE_API_KEY, Cluster, wait_until

OBSERVER_LABEL = "voiceagent-observer/"


def prepare(cluster: Cluster, event_log: Path) -> None:
    """Before `cluster.start()`: the engine keeps its sent-event log at `event_log`."""
    assert cluster.engine_proc is not None
    cluster.engine_proc.env["REALTIME_LOCAL_EVENT_LOG"] = str(event_log)


def route_webhooks(cluster: Cluster) -> None:
    """After start: the engine announces incoming calls to the first web process (engine restart)."""
    assert cluster.engine_proc is not None and cluster.webs
    cluster.engine_proc.command += ["--webhook-url", f"{cluster.webs[0].url}/telephony/webhook"]
    cluster.engine_proc.restart()


def read_log(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line being written
            continue
    return records


def leases(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """provider call id → (lease owner, epoch) of the live calls."""
    rows = cluster.sql(
        "SELECT c.provider_call_id, l.owner, l.epoch FROM calls_call c "
        "JOIN calls_observerlease l ON l.call_id = c.id WHERE c.status IN ('connecting', 'active')"
    )
    return {str(provider): (str(owner), int(epoch)) for provider, owner, epoch in rows}


def worker_of(owner: str) -> str:
    """The cluster's name of the worker (OBSERVER_WORKER_NAME) from a lease owner id."""
    return owner.split("@", 1)[0]


async def open_calls(cluster: Cluster, count: int, *, timeout_s: float = 60.0) -> list[str]:
    """`count` incoming calls (webhook → web accepts → a worker observes); their provider ids, once
    every one is leased and its observer attached."""
    url = f"{cluster.engine_url}/v1/realtime/_local/incoming_calls"
    headers = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
    async with httpx.AsyncClient(timeout=10) as client:
        responses = await asyncio.gather(
            *(client.post(url, json={"from": f"+1555000{i:04d}"}, headers=headers) for i in range(count))
        )
    ids = [str(response.json()["call_id"]) for response in responses if response.status_code == 201]
    assert len(ids) == count, [response.text for response in responses]

    def all_held() -> bool:
        held = leases(cluster)
        return all(provider in held and held[provider][0] for provider in ids)

    await asyncio.to_thread(wait_until, all_held, timeout_s=timeout_s, what=f"{count} calls leased")
    return ids


@dataclass
class Drivers:
    """One driver sideband per call, saying something every `interval_s` until stopped."""

    cluster: Cluster
    provider_ids: list[str]
    interval_s: float = 1.5
    answers: int = 0
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        for index, provider in enumerate(self.provider_ids):
            self._tasks.append(asyncio.create_task(self._drive(provider, index)))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _drive(self, provider: str, index: int) -> None:
        ws_url = self.cluster.engine_url.replace("http://", "ws://") + f"/v1/realtime?call_id={provider}"
        headers = {"Authorization": f"Bearer {ENGINE_API_KEY}"}
        # Spread the turns over the interval, so that the load is even.
        await asyncio.sleep(self.interval_s * index / max(1, len(self.provider_ids)))
        try:
            async with connect(ws_url, additional_headers=headers, open_timeout=10, proxy=None) as ws:
                turn = 0
                while not self._stop.is_set():
                    turn += 1
                    for event in (
                        {
                            "type": "conversation.item.create",
                            "item": {
                                "type": "message",
                                "role": "user",
                                "content": [{"type": "input_text", "text": f"Turn {turn} of {provider}."}],
                            },
                        },
                        {"type": "response.create"},
                    ):
                        await ws.send(json.dumps(event))
                    async with asyncio.timeout(20):
                        while json.loads(await ws.recv()).get("type") != "response.done":
                            pass
                    self.answers += 1
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._stop.wait(), self.interval_s)
        except Exception as exc:  # reported by the caller
            self.errors.append(f"{provider}: {exc!r}")


@dataclass
class TakeoverResult:
    calls: int
    victim: str
    victim_calls: int
    #: Seconds from the stop of the victim to the first sideband of another worker, per victim call.
    takeover_s: list[float]
    reobserved: int
    events_after_takeover: int
    lost_after_takeover: int
    #: Emitted while the victim's sideband was still attached but not stored (its unflushed buffer).
    lost_with_victim: int
    #: Emitted while no observer sideband was attached at all (the API does not replay them).
    unobserved: int
    duplicates: int
    contiguous: bool
    answers: int
    driver_errors: list[str]
    #: A few of the events lost after the takeover: (call, type, seconds after the stop).
    lost_samples: list[tuple[str, str, float]] = field(default_factory=list)

    def lines(self) -> list[str]:
        ordered = sorted(self.takeover_s)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000 if ordered else float("nan")

        return [
            f"takeover_p50: {pct(0.5):.0f} ms",
            f"takeover_p100: {ordered[-1] * 1000 if ordered else float('nan'):.0f} ms",
            f"calls_reobserved: {self.reobserved}/{self.victim_calls} (of {self.calls} live calls)",
            f"events_after_takeover: {self.events_after_takeover} events",
            f"events_lost_after_takeover: {self.lost_after_takeover} events",
            f"events_lost_with_killed_worker: {self.lost_with_victim} events",
            f"events_emitted_unobserved: {self.unobserved} events",
            f"events_stored_twice: {self.duplicates} events",
            f"sequences_contiguous: {'yes' if self.contiguous else 'no'}",
        ]


def analyse(
    cluster: Cluster, event_log: Path, provider_ids: list[str], *, victim: str, stopped_at: float
) -> TakeoverResult:
    """Compare the engine's log with the stored events of the calls (see the module docstring)."""
    records = [r for r in read_log(event_log) if r.get("call") in set(provider_ids)]
    labels: dict[int, str] = {}
    attached_at: dict[int, float] = {}
    for record in records:
        if record["kind"] == "attach":
            labels[record["sink"]] = str(record.get("label") or "")
            attached_at[record["sink"]] = float(record["t"])

    def observer_worker(sink: int) -> str | None:
        label = labels.get(sink, "")
        return worker_of(label[len(OBSERVER_LABEL) :]) if label.startswith(OBSERVER_LABEL) else None

    rows = cluster.sql(
        "SELECT c.provider_call_id, e.sequence, e.payload->>'event_id' FROM calls_event e "
        "JOIN calls_call c ON c.id = e.call_id WHERE c.provider_call_id = ANY(%s)",
        provider_ids,
    )
    stored: dict[str, list[str]] = defaultdict(list)
    sequences: dict[str, list[int]] = defaultdict(list)
    for provider, sequence, event_id in rows:
        sequences[str(provider)].append(int(sequence))
        if event_id:
            stored[str(provider)].append(str(event_id))
    duplicates = sum(len(ids) - len(set(ids)) for ids in stored.values())
    contiguous = all(sorted(seq) == list(range(1, len(seq) + 1)) for seq in sequences.values())

    # Per call: which sinks belonged to the victim, and the first other observer after the stop.
    victim_calls: set[str] = set()
    new_sink: dict[str, int] = {}
    for record in records:
        if record["kind"] != "attach":
            continue
        worker = observer_worker(record["sink"])
        if worker == victim:
            victim_calls.add(record["call"])
        elif worker is not None and record["t"] >= stopped_at and record["call"] not in new_sink:
            new_sink[record["call"]] = record["sink"]
    takeover = [attached_at[new_sink[call]] - stopped_at for call in victim_calls if call in new_sink]

    after = lost_after = lost_victim = unobserved = 0
    samples: list[tuple[str, str, float]] = []
    stored_sets = {provider: set(ids) for provider, ids in stored.items()}
    for record in records:
        if record["kind"] != "event":
            continue
        call, sinks = record["call"], record.get("sinks") or []
        observers = [sink for sink in sinks if observer_worker(sink) is not None]
        is_stored = record["event_id"] in stored_sets.get(call, set())
        if not observers:
            unobserved += 1
        elif call in new_sink and new_sink[call] in sinks:
            after += 1
            if not is_stored:
                lost_after += 1
                if len(samples) < 10:
                    samples.append((call, str(record.get("type")), round(record["t"] - stopped_at, 3)))
        elif not is_stored and any(observer_worker(sink) == victim for sink in observers):
            lost_victim += 1
    return TakeoverResult(
        calls=len(provider_ids),
        victim=victim,
        victim_calls=len(victim_calls),
        takeover_s=takeover,
        reobserved=len([call for call in victim_calls if call in new_sink]),
        events_after_takeover=after,
        lost_after_takeover=lost_after,
        lost_with_victim=lost_victim,
        unobserved=unobserved,
        duplicates=duplicates,
        contiguous=contiguous,
        answers=0,
        driver_errors=[],
        lost_samples=samples,
    )


def wait_for_quiet(cluster: Cluster, provider_ids: list[str], *, timeout_s: float = 20.0) -> None:
    """Until the calls' stored event count stops growing for a second (the observers flush every
    0.25 s; a loaded worker may lag)."""
    last, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = cluster.sql(
            "SELECT count(*) FROM calls_event e JOIN calls_call c ON c.id = e.call_id "
            "WHERE c.provider_call_id = ANY(%s)",
            provider_ids,
        )
        count = int(rows[0][0])
        if count != last:
            last, quiet_since = count, time.monotonic()
        elif time.monotonic() - quiet_since >= 1.0:
            return
        time.sleep(0.2)


async def run_takeover(
    cluster: Cluster,
    event_log: Path,
    *,
    calls: int,
    how: signal.Signals = signal.SIGKILL,
    warm_s: float = 3.0,
    after_s: float = 4.0,
    interval_s: float = 1.5,
    takeover_timeout_s: float = 30.0,
    spare_worker: bool = False,
) -> TakeoverResult:
    """Open `calls` live calls, keep them talking, stop the worker holding most of them (SIGKILL, or
    SIGSTOP then SIGCONT once its calls were taken over), keep talking, then compare.

    `spare_worker`: the cluster starts with one worker, which takes every call; a second worker is
    added once they are all held, so the victim holds all `calls` and the spare takes them all over."""
    provider_ids = await open_calls(cluster, calls)
    if spare_worker:
        await asyncio.to_thread(cluster.add_worker)
    drivers = Drivers(cluster, provider_ids, interval_s=interval_s)
    drivers.start()
    try:
        await asyncio.sleep(warm_s)
        held = leases(cluster)
        counts: dict[str, int] = defaultdict(int)
        for owner, _ in held.values():
            counts[worker_of(owner)] += 1
        victim = max(counts, key=lambda name: counts[name])
        proc = next(p for p in cluster.worker_procs if p.name == victim)
        stopped_at = time.time()
        if how == signal.SIGKILL:
            await asyncio.to_thread(proc.kill)
        else:
            proc.stop_signal(how)

        def taken_over() -> bool:
            now = leases(cluster)
            return all(worker_of(now[p][0]) != victim for p in provider_ids if p in now)

        await asyncio.to_thread(
            wait_until, taken_over, timeout_s=takeover_timeout_s, what=f"calls of {victim} taken over"
        )
        if how == signal.SIGSTOP:
            proc.stop_signal(signal.SIGCONT)  # the stale owner wakes up and must not write
        await asyncio.sleep(after_s)
    finally:
        await drivers.stop()
    await asyncio.to_thread(wait_for_quiet, cluster, provider_ids)
    result = await asyncio.to_thread(
        analyse, cluster, event_log, provider_ids, victim=victim, stopped_at=stopped_at
    )
    result.answers = drivers.answers
    result.driver_errors = drivers.errors
    return result
