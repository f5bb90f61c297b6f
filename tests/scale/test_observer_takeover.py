"""A worker holding live calls dies (SIGKILL) or freezes (SIGSTOP): another worker takes its calls
over, every event that reaches the new observer is stored, and the frozen one, once it wakes up,
writes nothing. Real processes: engine, 2 web, 2 workers on a fresh PostgreSQL database and a Redis
key prefix (tests/scale/cluster.py); the figures of the same scenario with 20 calls are printed by
bench/takeover.py. Nothing here is timed: the takeover only has to happen (within the harness's
generous wait), the 5 s bound is the bench's to report.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from tests.scale.cluster import DEFAULT_PG_ADMIN_URL, DEFAULT_REDIS_URL, Cluster
from tests.scale.takeover import prepare, route_webhooks, run_takeover

pytestmark = pytest.mark.timeout(300)


def _services_up() -> bool:
    try:
        psycopg.connect(DEFAULT_PG_ADMIN_URL, connect_timeout=3).close()
        redis.Redis.from_url(DEFAULT_REDIS_URL, socket_connect_timeout=3).ping()
    except (psycopg.Error, redis.RedisError):
        return False
    return True


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Cluster, Path]]:
    if not _services_up():
        pytest.skip("the machine's PostgreSQL and Redis are needed")
    event_log = tmp_path / "engine-events.jsonl"
    cluster = Cluster(web=2, workers=2, log_dir=tmp_path / "logs")
    prepare(cluster, event_log)
    with cluster:
        route_webhooks(cluster)
        yield cluster, event_log


def test_a_killed_workers_calls_are_observed_again_and_no_event_after_takeover_is_lost(
    cluster: tuple[Cluster, Path],
) -> None:
    running, event_log = cluster
    result = asyncio.run(run_takeover(running, event_log, calls=6, how=signal.SIGKILL))
    report = "\n".join(result.lines()) + "\n" + running.log_report()
    assert not result.driver_errors, result.driver_errors
    assert result.victim_calls > 0 and result.reobserved == result.victim_calls, report
    assert result.events_after_takeover > 0, report
    assert result.lost_after_takeover == 0, report
    assert result.duplicates == 0 and result.contiguous, report


def test_a_frozen_worker_that_wakes_up_after_the_takeover_writes_nothing(
    cluster: tuple[Cluster, Path],
) -> None:
    running, event_log = cluster
    result = asyncio.run(run_takeover(running, event_log, calls=4, how=signal.SIGSTOP))
    report = "\n".join(result.lines()) + "\n" + running.log_report()
    victim = next(p for p in running.worker_procs if p.name == result.victim)
    assert victim.alive, report  # it woke up and goes on with other calls
    assert result.reobserved == result.victim_calls > 0, report
    assert result.lost_after_takeover == 0, report
    # Both observers received the events after the wake-up; only the new owner stored them.
    assert result.duplicates == 0 and result.contiguous, report
    assert "lease taken over" in victim.log_since_start() or "lease lost" in victim.log_since_start(), report


def test_sigterm_releases_the_workers_leases_and_the_other_worker_takes_the_calls(
    cluster: tuple[Cluster, Path],
) -> None:
    from tests.scale.cluster import wait_until
    from tests.scale.takeover import leases, open_calls, worker_of

    running, _ = cluster
    provider_ids = asyncio.run(open_calls(running, 4))
    counts = Counter(worker_of(owner) for owner, _ in leases(running).values())
    name, _ = counts.most_common(1)[0]
    proc = next(p for p in running.worker_procs if p.name == name)
    assert proc.terminate(grace_s=20) == 0, proc.log_tail()  # a graceful exit
    log = proc.log_since_start()
    assert "released" in log and "observer lease" in log, log[-3000:]
    # Nobody observes them now, or the other worker does; the calls were not ended by the shutdown.
    rows = running.sql(
        "SELECT c.status, l.owner, l.expires_at <= now() FROM calls_call c "
        "JOIN calls_observerlease l ON l.call_id = c.id WHERE c.provider_call_id = ANY(%s)",
        provider_ids,
    )
    assert all(status in ("connecting", "active") for status, _, _ in rows), rows
    assert all(worker_of(owner) != name or released for _, owner, released in rows), rows
    wait_until(
        lambda: all(worker_of(owner) != name for owner, _ in leases(running).values()),
        timeout_s=30,
        what="the calls taken over by the other worker",
    )
