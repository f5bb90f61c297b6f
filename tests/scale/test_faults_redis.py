"""Redis restarts (a throwaway server, never the machine's): it is killed (queued messages lost) and
started again empty on the same port.

While it is down: users get a clear 503 for what needs it (call set-ups count against the per-user
rate limit in the Redis cache), /readyz names the channel layer, and a live call keeps being observed
and stored (the observer writes to PostgreSQL; only the console's live feed pauses). After it is back:
the web and worker processes reconnect on their own (none restarts), new calls are set up and
observed through the channel layer again.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.scale.cluster import Cluster, wait_until
from tests.scale.helpers import (
    exchange,
    make_offer,
    observer_connected,
    phone_call,
    post_offer,
    staff_session,
    wait_stored,
)
from tests.scale.servers import ThrowawayRedis

pytestmark = [pytest.mark.timeout(400)]


@pytest.fixture
def redis_server() -> Iterator[ThrowawayRedis]:
    try:
        server = ThrowawayRedis()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.stop()


def readyz(base_url: str) -> httpx.Response:
    return httpx.get(f"{base_url}/readyz", timeout=30)


def test_redis_restart_gives_503s_keeps_calls_observed_and_everyone_reconnects(
    redis_server: ThrowawayRedis, tmp_path: Path
) -> None:
    env = {"REDIS_SOCKET_TIMEOUT": "6"}
    with Cluster(web=2, workers=2, redis_url=redis_server.url, env=env, log_dir=tmp_path / "logs") as cluster:
        session = staff_session(cluster)
        offer = make_offer()
        call = phone_call(cluster)
        before = exchange(cluster, call.provider_call_id, "Before Redis goes away.")
        wait_stored(cluster, call.call_id, [e["event_id"] for e in before])

        redis_server.stop()
        refused = post_offer(cluster.web_urls[0], session, offer)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "redis_unavailable"
        assert refused.headers["Retry-After"].isdigit()
        readiness = readyz(cluster.web_urls[1])
        assert readiness.status_code == 503 and readiness.json()["failing"] == ["channel_layer"]
        # The live call is still observed and stored: PostgreSQL does not depend on Redis.
        during = exchange(cluster, call.provider_call_id, "While Redis is down.")
        wait_stored(cluster, call.call_id, [e["event_id"] for e in during])

        redis_server.start()  # empty: whatever was queued is gone
        wait_until(
            lambda: all(readyz(url).status_code == 200 for url in cluster.web_urls),
            timeout_s=60,
            what="web processes ready again",
        )
        # Set-ups work again on both web processes, and a worker gets their observe.start through Redis.
        created_ids = []
        for url in cluster.web_urls:
            created = post_offer(url, session, offer)
            assert created.status_code == 201, created.text
            created_ids.append(created.headers["Location"].removeprefix("/rtc/"))
        wait_until(
            lambda: all(observer_connected(cluster, call_id) for call_id in created_ids),
            timeout_s=60,
            what="the new calls observed",
        )
        after = exchange(cluster, call.provider_call_id, "After Redis is back.")
        stored = wait_stored(cluster, call.call_id, [e["event_id"] for e in before + during + after])
        assert len(stored) == len(set(stored))

        assert all(proc.alive for proc in cluster.processes), cluster.log_report()
        assert all(proc.starts == 1 for proc in cluster.processes)


def test_an_observe_start_lost_with_redis_is_picked_up_by_the_lease_scanner(
    redis_server: ThrowawayRedis, tmp_path: Path
) -> None:
    """The set-up's `observe.start` waits in Redis for a worker (paused here), then Redis dies with it.
    Nobody will ever receive that message: the worker's lease scanner, which reads live calls from
    PostgreSQL, attaches to the unobserved call once it runs again."""
    env = {"REDIS_SOCKET_TIMEOUT": "6"}
    with Cluster(web=1, workers=1, redis_url=redis_server.url, env=env, log_dir=tmp_path / "logs") as cluster:
        session = staff_session(cluster)
        worker = cluster.worker_procs[0]
        worker.signal(signal.SIGSTOP)
        try:
            created = post_offer(cluster.web_urls[0], session, make_offer())
            assert created.status_code == 201, created.text
            call_id = created.headers["Location"].removeprefix("/rtc/")
            queued = redis.Redis.from_url(redis_server.url).keys(f"{cluster.redis_prefix}*")
            assert queued, "the observe.start message should be waiting in Redis"
            redis_server.stop()  # the message is lost with it
            redis_server.start()
            assert not redis.Redis.from_url(redis_server.url).keys(f"{cluster.redis_prefix}*")
        finally:
            worker.signal(signal.SIGCONT)
        wait_until(lambda: observer_connected(cluster, call_id), timeout_s=60, what="the lost call observed")
        assert "took over the observation" in worker.log_text()
        assert worker.alive and worker.starts == 1
