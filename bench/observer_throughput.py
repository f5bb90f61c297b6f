"""Observer throughput: K live calls' sidebands streaming events into one observer worker process.

Run: .venv/bin/python -m bench.observer_throughput [--steps 50 100 200 400 600] [--measure-s 15]
     [--profile DIR] [--redis redis://127.0.0.1:6379/6] [--compare]

Loopback only, a fresh PostgreSQL database (created and dropped here, on DATABASE_HOST/127.0.0.1).

- This process serves a fake sideband (`ws://…/v1/realtime?call_id=…`, REALTIME_BASE_URL points at
  it). Each call loops one conversation turn as the Realtime API sends it over a WebRTC sideband
  (protocol.md §6: no `response.output_audio.delta`, the audio is on the media track): the user
  speaks 2 s (input transcription deltas, 10/s), then the turn-taking events, then the assistant
  speaks 3 s with `response.output_audio_transcript.delta` at 50/s, then the done events with
  usage and 1 s of silence: 186 events per 6.7 s turn (`observer.script`), about 28 events/s per
  call on average and 50/s while the agent speaks. Calls start at random phases. Each `event_id`
  carries its send time.
- The worker is a separate process (`--worker`, started here): Django + the observer pool
  (`calls.observer.worker.pool`) exactly as `runworker call-observer` runs it (its merged writer,
  `tune_gc()`), minus the channel message that asks it to start (it is given the call ids on
  stdin). The fake API runs in this process, so it competes with the worker only for the cores;
  its CPU is printed (`generator_cpu`).
- The benchmark adds calls up to each K, lets them run `--warm-s`, then measures for `--measure-s`:
  the worker's CPU (utime+stime from /proc) and RSS, events stored per second, and event → database
  latency from the send time in `event_id` to the row's insertion time (a `clock_timestamp()`
  default on a column this benchmark adds to its own copy of `calls_event`); events sent in the
  window but not stored 2 s after it count as "late" (their latency is past every percentile).
  Also `received` latency (send → the observer's `received_at`), which splits the loop's lag from
  the write path's.
- Also: worker CPU per event and split by thread (`main`: the event loop, sockets, parsing and the
  observers; `threads`: mostly the database writes), time in the garbage collector and its longest
  pause, merged transactions per second and calls per transaction.
- At the end the fake API ends every call (sockets closed, 404 on reconnect), the observers flush
  and finish, and every event sent is looked for in the database: `lost` must be 0.
- `--compare`: at each K a fresh worker with the code before the merged writer (one transaction
  per call per flush, patched in) and one with the merged writer, the first alternating.

Every observer flushes at turn boundaries and every 0.25 s (`flush_interval`), so the p50 of
events that are not boundaries is about half of that by design; the boundary events (flushed at
once) show the write path alone. `p99_over_250ms_at` is the first K whose all-events p99 passed
250 ms (the first K, by that design), `boundary_p99_over_250ms_at` the first whose boundary p99 did.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiling import py_spy  # noqa: E402

TICK_S = 0.02
TOKEN_ID = '"EVENT_ID"'
TOKEN_TURN = "TURNID"
WORDS = ["sure", "the", "library", "opens", "at", "nine", "on", "sunday", "and", "closes", "at", "five"]
WORDS += ["in", "the", "afternoon"]


def _turn_script() -> tuple[list[tuple[float, str]], float]:
    """(offset in the turn, message template) for one turn, and the turn's length in seconds."""
    events: list[tuple[float, dict[str, Any]]] = []
    user_item, reply_item, response = "item_uTURNID", "item_aTURNID", "resp_TURNID"
    events.append(
        (0.0, {"type": "input_audio_buffer.speech_started", "audio_start_ms": 1000, "item_id": user_item})
    )
    for index in range(20):  # 2 s of user speech, partial transcripts 10/s
        events.append(
            (
                0.1 * (index + 1),
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": user_item,
                    "content_index": 0,
                    "delta": WORDS[index % len(WORDS)] + " ",
                },
            )
        )
    user_text = " ".join(WORDS[i % len(WORDS)] for i in range(20))
    assistant_text = " ".join(WORDS[i % len(WORDS)] for i in range(150))
    assistant_item = {
        "id": reply_item,
        "type": "message",
        "status": "completed",
        "role": "assistant",
        "content": [{"type": "output_audio", "transcript": assistant_text}],
    }
    at = 2.5
    later: list[tuple[float, dict[str, Any]]] = [
        (0.0, {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 3000, "item_id": user_item}),
        (0.01, {"type": "input_audio_buffer.committed", "previous_item_id": None, "item_id": user_item}),
        (
            0.02,
            {
                "type": "conversation.item.added",
                "previous_item_id": None,
                "item": {
                    "id": user_item,
                    "type": "message",
                    "status": "completed",
                    "role": "user",
                    "content": [{"type": "input_audio", "transcript": None}],
                },
            },
        ),
        (
            0.05,
            {
                "type": "response.created",
                "response": {
                    "id": response,
                    "object": "realtime.response",
                    "status": "in_progress",
                    "output": [],
                    "usage": None,
                },
            },
        ),
        (
            0.06,
            {
                "type": "response.output_item.added",
                "response_id": response,
                "output_index": 0,
                "item": {**assistant_item, "status": "in_progress", "content": []},
            },
        ),
        (
            0.07,
            {
                "type": "conversation.item.added",
                "previous_item_id": user_item,
                "item": {**assistant_item, "status": "in_progress", "content": []},
            },
        ),
        (
            0.08,
            {
                "type": "response.content_part.added",
                "response_id": response,
                "item_id": reply_item,
                "output_index": 0,
                "content_index": 0,
                "part": {"type": "audio", "transcript": ""},
            },
        ),
        (0.09, {"type": "output_audio_buffer.started", "response_id": response}),
        (
            0.3,
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": user_item,
                "content_index": 0,
                "transcript": user_text,
                "usage": {"type": "duration", "seconds": 2},
            },
        ),
    ]
    for offset, event in later:
        events.append((at + offset, event))
    at += 0.1
    for index in range(150):  # 3 s of agent speech, transcript deltas 50/s
        events.append(
            (
                at + 0.02 * index,
                {
                    "type": "response.output_audio_transcript.delta",
                    "response_id": response,
                    "item_id": reply_item,
                    "output_index": 0,
                    "content_index": 0,
                    "delta": WORDS[index % len(WORDS)] + " ",
                },
            )
        )
    at += 3.0
    part = {"response_id": response, "item_id": reply_item, "output_index": 0, "content_index": 0}
    usage = {
        "total_tokens": 420,
        "input_tokens": 300,
        "output_tokens": 120,
        "input_token_details": {"text_tokens": 100, "audio_tokens": 200, "cached_tokens": 0},
        "output_token_details": {"text_tokens": 30, "audio_tokens": 90},
    }
    later = [
        (0.0, {"type": "response.output_audio_transcript.done", **part, "transcript": assistant_text}),
        (
            0.0,
            {
                "type": "response.content_part.done",
                **part,
                "part": {"type": "audio", "transcript": assistant_text},
            },
        ),
        (
            0.0,
            {
                "type": "response.output_item.done",
                "response_id": response,
                "output_index": 0,
                "item": assistant_item,
            },
        ),
        (0.0, {"type": "conversation.item.done", "previous_item_id": user_item, "item": assistant_item}),
        (
            0.0,
            {
                "type": "response.done",
                "response": {
                    "id": response,
                    "object": "realtime.response",
                    "status": "completed",
                    "output": [assistant_item],
                    "usage": usage,
                },
            },
        ),
        (0.1, {"type": "output_audio_buffer.stopped", "response_id": response}),
    ]
    for offset, event in later:
        events.append((at + offset, event))
    length = at + 0.1 + 1.0
    templates = [
        (offset, json.dumps({"type": e["type"], "event_id": "EVENT_ID", **e})) for offset, e in events
    ]
    return templates, length


SCRIPT, TURN_S = _turn_script()


@dataclass
class FakeCall:
    index: int
    socket: Any
    cycle_start: float
    position: int = 0
    turn: int = 0
    sent: int = 0


@dataclass
class FakeApi:
    """The fake sideband: one scripted conversation per connection, sent from one 20 ms ticker."""

    open: dict[str, FakeCall] = field(default_factory=dict)
    sent_by_call: dict[str, int] = field(default_factory=dict)
    sent_at: list[tuple[float, int]] = field(default_factory=list)  # (tick time, events sent)
    ended: bool = False
    serial: int = 0

    def process_request(self, connection: Any, request: Any) -> Any:
        if self.ended:
            return connection.respond(404, "call not found\n")
        return None

    async def handler(self, socket: Any) -> None:
        call_id = socket.request.path.split("call_id=", 1)[-1]
        self.serial += 1
        start = time.time() - random.uniform(0, TURN_S)  # a random phase of the turn
        call = FakeCall(self.serial, socket, start)
        while SCRIPT[call.position][0] + start < time.time():
            call.position += 1  # join the turn where the phase puts it (those events were never sent)
            if call.position == len(SCRIPT):
                call.position, call.cycle_start = 0, start + TURN_S
                break
        await socket.send(
            json.dumps({"type": "session.created", "event_id": f"event_{int(time.time() * 1e6)}_0"})
        )
        self.sent_by_call[call_id] = self.sent_by_call.get(call_id, 0) + 1
        self.open[call_id] = call
        try:
            await socket.wait_closed()
        finally:
            self.open.pop(call_id, None)
            self.sent_by_call[call_id] += call.sent

    async def tick_forever(self) -> None:
        from websockets.exceptions import ConnectionClosed

        while True:
            if self.ended:
                await asyncio.sleep(TICK_S)
                continue
            now = time.time()
            stamp = f'"event_{int(now * 1e6)}_'
            count = 0
            for call in list(self.open.values()):
                while SCRIPT[call.position][0] + call.cycle_start <= now:
                    template = SCRIPT[call.position][1]
                    message = template.replace(TOKEN_ID, f'{stamp}{call.sent}"').replace(
                        TOKEN_TURN, f"{call.index}x{call.turn}"
                    )
                    try:
                        await call.socket.send(message)
                    except ConnectionClosed:
                        break
                    call.sent += 1
                    count += 1
                    call.position += 1
                    if call.position == len(SCRIPT):
                        call.position, call.turn = 0, call.turn + 1
                        call.cycle_start += TURN_S
            self.sent_at.append((now, count))
            await asyncio.sleep(max(0.0, TICK_S - (time.time() - now)))

    def sent_between(self, start: float, end: float) -> int:
        return sum(count for at, count in self.sent_at if start <= at < end)

    async def end(self) -> None:
        self.ended = True
        await asyncio.gather(
            *(call.socket.close() for call in list(self.open.values())), return_exceptions=True
        )


# ---- the worker process ---------------------------------------------------------------------------


async def worker_main() -> None:
    """Observe the calls named on stdin (`add N`): N new active calls with provider ids; `drain`: wait
    until every observer has finished, then exit."""
    import django

    django.setup()
    from django.utils import timezone

    from calls.models import AgentProfile, Call
    from calls.observer.worker import pool, tune_gc
    from calls.observer.writers import merged_writer

    if os.environ.get("BENCH_PER_CALL_WRITES"):
        _write_per_call()
    if not os.environ.get("BENCH_NO_GC_TUNING"):
        tune_gc()  # as `run_embedded_worker` does
    gc_time = [0.0, 0.0, 0.0]  # seconds in the collector, longest pause, start of the current one

    def gc_clock(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            gc_time[2] = time.perf_counter()
        elif gc_time[2]:
            pause = time.perf_counter() - gc_time[2]
            gc_time[0] += pause
            gc_time[1] = max(gc_time[1], pause)

    gc.callbacks.append(gc_clock)
    tag = os.environ.get("BENCH_TAG", "bench")
    agent = await AgentProfile.objects.filter(is_default=True).afirst()
    assert agent is not None
    agent.max_call_duration = 24 * 3600
    await agent.asave(update_fields=["max_call_duration"])
    made = 0
    while True:
        line = await asyncio.to_thread(sys.stdin.readline)
        command, *args = line.split() or ["drain"]
        if command == "add":
            count = int(args[0])
            calls = [
                Call(
                    id=uuid.uuid4(),
                    provider_call_id=f"rtc_{tag}{made + index:06d}",
                    mode=Call.Mode.AUDIO,
                    agent=agent,
                    status=Call.Status.ACTIVE,
                    answered_at=timezone.now(),
                )
                for index in range(count)
            ]
            await Call.objects.abulk_create(calls)
            made += count
            for call in calls:
                pool.start(call.id, max_attempts=2, backoff_initial=0.2)
            print("ok", flush=True)
        elif command == "stats":
            writer = merged_writer()
            stats = {"transactions": writer.transactions, "batches": writer.batches}
            print(json.dumps({**stats, "gc_s": gc_time[0], "gc_max_s": gc_time[1]}), flush=True)
            gc_time[1] = 0.0
        elif command == "drain":
            deadline = time.monotonic() + 60
            while len(pool) and time.monotonic() < deadline:  # noqa: ASYNC110 (polls another module's pool)
                await asyncio.sleep(0.2)
            print(f"drained {len(pool)}", flush=True)
            return


def _write_per_call() -> None:
    """The code before the merged writer, patched in for `--compare`: every flush of every call is its
    own transaction (fence, `bulk_create` of the events, one `update_or_create` per turn, call fields)
    on the `OBSERVER_DB_WRITERS` threads (calls/observer/writers.py as of commit 18eed31)."""
    from django.db import transaction

    from calls.models import Call, Event, TranscriptTurn
    from calls.observer import observer, store
    from calls.observer.lease import fence
    from calls.observer.writers import batch_writer

    def write_batch(batch: store.CallBatch) -> store.BatchResult:
        activated = None
        with transaction.atomic():
            if batch.lease is not None:
                fence(batch.lease)
            if batch.events:
                Event.objects.bulk_create(
                    [
                        Event(
                            call_id=batch.call_id,
                            sequence=event.sequence,
                            type=event.type,
                            payload=event.payload,
                            received_at=event.received_at,
                        )
                        for event in batch.events
                    ]
                )
            for turn in batch.turns:
                TranscriptTurn.objects.update_or_create(
                    call_id=batch.call_id,
                    item_id=turn.item_id,
                    defaults={
                        "role": turn.role,
                        "text": turn.text,
                        "started_at": turn.started_at,
                        "ended_at": turn.ended_at,
                        "interrupted": turn.interrupted,
                    },
                )
            if batch.usage is not None:
                Call.objects.filter(pk=batch.call_id).update(usage=batch.usage)
            if batch.activate_at is not None:
                changed = Call.objects.filter(pk=batch.call_id, status=Call.Status.CONNECTING).update(
                    status=Call.Status.ACTIVE, answered_at=batch.activate_at
                )
                activated = batch.activate_at if changed else None
        return store.BatchResult(activated_at=activated)

    async def write(batch: store.CallBatch) -> store.BatchResult:
        result: store.BatchResult = await batch_writer(write_batch)(batch)
        return result

    observer.write_merged = write  # type: ignore[attr-defined]


# ---- the benchmark ---------------------------------------------------------------------------------


async def worker_stats(worker: Any) -> dict[str, float]:
    """The merged writer's counters in the worker (0 in the per-call arm, which bypasses it)."""
    worker.stdin.write(b"stats\n")
    await worker.stdin.drain()
    stats: dict[str, float] = json.loads(await worker.stdout.readline())
    return stats


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def thread_cpu_s(pid: int) -> dict[str, float]:
    """CPU seconds of the event loop's thread (`main`: sockets, parsing, observers) and of the others
    (`threads`: mostly the database writes; Python does not name OS threads, so no finer split)."""
    tick = os.sysconf("SC_CLK_TCK")
    totals: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended
        kind = "main" if task.name == str(pid) else "threads"
        totals[kind] = totals.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return totals


def proc_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


LATENCY_SQL = """
SELECT count(*),
       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY stored - sent),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY received - sent),
       count(*) FILTER (WHERE boundary),
       percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP (ORDER BY stored - sent) FILTER (WHERE boundary)
FROM (
  SELECT split_part(payload->>'event_id', '_', 2)::bigint / 1e6 AS sent,
         extract(epoch FROM bench_stored_at) AS stored,
         extract(epoch FROM received_at) AS received,
         type IN ('response.done', 'conversation.item.input_audio_transcription.completed',
                  'input_audio_buffer.speech_stopped') AS boundary
  FROM calls_event WHERE payload->>'event_id' LIKE 'event\\_%%'
) e
WHERE sent >= %s AND sent < %s
"""


async def run(options: argparse.Namespace) -> int:
    import psycopg
    from websockets.asyncio.server import serve

    db_name = f"{options.db_prefix}{os.getpid()}"
    admin_url = f"postgres://postgres@{options.pg_host}:5432/postgres"
    db_url = f"postgres://postgres@{options.pg_host}:5432/{db_name}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db_name}"')
    api = FakeApi()
    code = 0
    try:
        env = {
            **{k: v for k, v in os.environ.items() if k not in {"REDIS_URL", "OPENAI_API_KEY"}},
            "DATABASE_URL": db_url,
            "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
            "DEBUG": "false",
            "SECRET_KEY": "bench-only-" + "x" * 50,
            "LOG_LEVEL": "ERROR",
        }
        if options.redis:
            env["REDIS_URL"] = options.redis
        migrate = await asyncio.create_subprocess_exec(
            sys.executable,
            str(REPO / "manage.py"),
            "migrate",
            "--noinput",
            env=env,
            cwd=REPO,
            stdout=asyncio.subprocess.DEVNULL,
        )
        assert await migrate.wait() == 0, "migrate failed"
        db = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        await db.execute(
            "ALTER TABLE calls_event ADD COLUMN bench_stored_at timestamptz "
            "NOT NULL DEFAULT clock_timestamp()"
        )
        server = await serve(
            api.handler, "127.0.0.1", 0, process_request=api.process_request, compression=None
        )
        port = server.sockets[0].getsockname()[1]
        env["REALTIME_BASE_URL"] = f"http://127.0.0.1:{port}/v1"
        env["REALTIME_API_KEY"] = "sk-bench"
        ticker = asyncio.create_task(api.tick_forever())
        if options.compare:
            # Interleaved A/B: at each K a fresh worker per variant, the variant that goes first
            # alternating: "percall" (one transaction per call per flush, the code before the merged
            # writer, patched in) and "merged" (this code).
            variants = [("percall", True), ("merged", False)]
            for index, k in enumerate(options.steps):
                for label, per_call in variants if index % 2 == 0 else variants[::-1]:
                    code |= await session(
                        api,
                        db,
                        {**env, "BENCH_PER_CALL_WRITES": "1"} if per_call else env,
                        [k],
                        label=f"{label}.",
                        writers=options.writers,
                        options=options,
                    )
        else:
            code = await session(
                api, db, env, options.steps, label="", writers=options.writers, options=options
            )
        ticker.cancel()
        server.close()
        await db.close()
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{db_name}" WITH (FORCE)')
    return code


async def session(
    api: FakeApi,
    db: Any,
    env: dict[str, str],
    steps: list[int],
    *,
    label: str,
    writers: int,
    options: argparse.Namespace,
) -> int:
    """One worker process through `steps` (calls added up to each K), then every call ended upstream,
    the worker drained, and its calls' events counted. Lines are prefixed `observer.<label>`."""
    tag = f"b{random.randrange(10**6):06d}"
    env = {**env, "BENCH_TAG": tag}
    if writers:
        # OBSERVER_DB_WRITERS: merged transactions in flight at once (per-call arm: threads writing
        # different calls' batches side by side; 1 = one at a time).
        env["OBSERVER_DB_WRITERS"] = str(writers)
        env["DB_POOL_MAX"] = str(writers + 4)
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.observer_throughput",
        "--worker",
        env=env,
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert worker.stdin is not None and worker.stdout is not None
    name = f"observer.{label}"
    try:
        await asyncio.sleep(3)
        rss_idle = proc_rss_mb(worker.pid)
        print(f"{name}worker_rss_0_calls: {rss_idle:.1f} MB")
        current = 0
        crossed: int | None = None
        boundary_crossed: int | None = None
        for k in steps:
            worker.stdin.write(f"add {k - current}\n".encode())
            await worker.stdin.drain()
            assert (await worker.stdout.readline()).strip() == b"ok"
            current = k
            deadline = time.monotonic() + 60
            while len(api.open) < k and time.monotonic() < deadline:  # noqa: ASYNC110 (a bounded poll)
                await asyncio.sleep(0.1)
            await asyncio.sleep(options.warm_s)
            profile_this = options.profile is not None and k == steps[-1]
            stats0 = await worker_stats(worker)
            with py_spy(worker.pid, options.profile if profile_this else None, f"observer_{label}k{k}"):
                cpu0, t0, threads0 = proc_cpu_s(worker.pid), time.time(), thread_cpu_s(worker.pid)
                gen0 = proc_cpu_s(os.getpid())
                await asyncio.sleep(options.measure_s)
                cpu1, t1, threads1 = proc_cpu_s(worker.pid), time.time(), thread_cpu_s(worker.pid)
                gen1 = proc_cpu_s(os.getpid())
            stats1 = await worker_stats(worker)
            rss = proc_rss_mb(worker.pid)
            sent = api.sent_between(t0, t1)
            await asyncio.sleep(2.0)
            row = await (await db.execute(LATENCY_SQL, (t0, t1))).fetchone()
            assert row is not None
            stored = row[0]
            p50, p95, p99 = row[1] or (math.inf,) * 3
            r50, r99 = row[2] or (math.inf,) * 2
            b50, b99 = row[4] or (math.inf,) * 2
            stored_rate = await (
                await db.execute(
                    "SELECT count(*) FROM calls_event WHERE bench_stored_at >= to_timestamp(%s) "
                    "AND bench_stored_at < to_timestamp(%s)",
                    (t0, t1),
                )
            ).fetchone()
            assert stored_rate is not None
            late = sent - stored
            if late > 0.01 * sent:  # more than 1% not stored after 2 s: the tail is beyond that
                p99 = math.inf
            cpu = (cpu1 - cpu0) / (t1 - t0)
            at = f"{name}k{k}."
            print(f"{at}calls_connected: {len(api.open)} calls")
            print(f"{at}events_sent_per_s: {sent / (t1 - t0):.0f} events/s")
            print(f"{at}events_stored_per_s: {stored_rate[0] / (t1 - t0):.0f} events/s")
            print(f"{at}latency_p50: {p50 * 1000:.0f} ms")
            print(f"{at}latency_p95: {p95 * 1000:.0f} ms")
            print(f"{at}latency_p99: {p99 * 1000:.0f} ms")
            print(f"{at}boundary_latency_p50: {b50 * 1000:.0f} ms")
            print(f"{at}boundary_latency_p99: {b99 * 1000:.0f} ms")
            print(f"{at}received_latency_p50: {r50 * 1000:.0f} ms")
            print(f"{at}received_latency_p99: {r99 * 1000:.0f} ms")
            print(f"{at}late_after_2s: {max(0, late)} events")
            print(f"{at}worker_cpu: {cpu * 100:.0f} %")
            print(f"{at}worker_cpu_per_call: {cpu * 1000 / k:.2f} ms/s")
            print(f"{at}worker_cpu_per_event: {cpu * 1e6 / max(1, stored_rate[0] / (t1 - t0)):.0f} us")
            split = {kind: (threads1.get(kind, 0) - threads0.get(kind, 0)) / (t1 - t0) for kind in threads1}
            print(
                f"{at}worker_cpu_split: "
                + " / ".join(f"{kind} {share * 100:.0f}" for kind, share in sorted(split.items()))
                + " %"
            )
            print(f"{at}generator_cpu: {(gen1 - gen0) / (t1 - t0) * 100:.0f} % (the fake API, this process)")
            gc_share = (stats1["gc_s"] - stats0["gc_s"]) / (t1 - t0)
            print(
                f"{at}worker_gc: {gc_share * 100:.1f} % of the time, "
                f"longest pause {stats1['gc_max_s'] * 1000:.0f} ms"
            )
            transactions = stats1["transactions"] - stats0["transactions"]
            if transactions:
                print(f"{at}transactions_per_s: {transactions / (t1 - t0):.1f} /s (merged writer)")
                batches = stats1["batches"] - stats0["batches"]
                print(f"{at}calls_per_transaction: {batches / transactions:.1f} batches")
            print(f"{at}worker_rss: {rss:.0f} MB")
            print(f"{at}rss_per_call: {(rss - rss_idle) / k * 1024:.0f} KB")
            print(f"machine.{label}k{k}.load_average: {os.getloadavg()[0]:.2f}", flush=True)
            if crossed is None and p99 * 1000 > 250:
                crossed = k
            if boundary_crossed is None and (b99 * 1000 > 250 or late > 0.01 * sent):
                boundary_crossed = k
            if late > 0.1 * sent:  # the worker is past what it can store: larger K says nothing more
                print(f"{name}stopped_after: {k} calls (over 10% of the events late)")
                break
        if len(steps) > 1:
            print(f"{name}p99_over_250ms_at: {crossed if crossed is not None else 'none'} calls")
            print(
                f"{name}boundary_p99_over_250ms_at: "
                f"{boundary_crossed if boundary_crossed is not None else 'none'} calls"
            )
        await api.end()
        worker.stdin.write(b"drain\n")
        await worker.stdin.drain()
        drained = (await asyncio.wait_for(worker.stdout.readline(), 180)).decode().strip()
        total_sent = sum(count for call, count in api.sent_by_call.items() if call.startswith(f"rtc_{tag}"))
        row = await (
            await db.execute(
                "SELECT count(*) FROM calls_event e JOIN calls_call c ON c.id = e.call_id "
                "WHERE c.provider_call_id LIKE %s AND e.payload->>'event_id' LIKE 'event\\_%%'",
                (f"rtc_{tag}%",),
            )
        ).fetchone()
        assert row is not None
        print(f"{name}events_sent_total: {total_sent} events")
        print(f"{name}events_stored_total: {row[0]} events")
        if drained == "drained 0":
            print(f"{name}lost: {total_sent - row[0]} events", flush=True)
        else:  # observers still writing their backlog 60 s after the calls ended
            print(
                f"{name}unstored_at_stop: {total_sent - row[0]} events ({drained} observers busy)", flush=True
            )
        await worker.wait()
        api.ended = False
        if drained != "drained 0" or total_sent != row[0]:
            print(f"# worker: {drained}", file=sys.stderr)
            return 1
        return 0
    finally:
        if worker.returncode is None:
            worker.kill()
            await worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[50, 100, 200, 400, 600])
    parser.add_argument("--warm-s", type=float, default=3.0)
    parser.add_argument("--measure-s", type=float, default=12.0)
    parser.add_argument("--profile", type=Path, help="py-spy the worker at the largest K into this folder")
    parser.add_argument("--redis", help="channels_redis layer URL for the worker (default: in-memory)")
    parser.add_argument(
        "--writers",
        type=int,
        default=0,
        help="OBSERVER_DB_WRITERS for the worker: merged transactions in flight at once (per-call "
        "arm: writer threads); default: the setting's default",
    )
    parser.add_argument(
        "--compare",
        action="store_true",
        help="A/B at each K: a fresh worker with one transaction per call per flush (the code before "
        "the merged writer, patched in) and one with the merged writer",
    )
    parser.add_argument(
        "--db-prefix", default="va_bench_obs_", help="name of the throwaway database, before the pid"
    )
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.worker:
        asyncio.run(worker_main())
        return 0
    random.seed(9)
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    print(f"observer.script: {len(SCRIPT)} events per {TURN_S:.1f} s turn per call")
    started = time.monotonic()
    code = asyncio.run(run(options))
    print(f"observer.bench_wall: {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
