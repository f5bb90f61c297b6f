"""PostgreSQL restarts under load (a throwaway server, never the machine's).

2 web processes and 1 observer worker run on a private PostgreSQL server; a live phone call is being
observed and users keep setting up calls and opening pages. The server is stopped (fast shutdown:
connections cut), the call goes on, then the server comes back. Users must get a clear 503 with
Retry-After while it is down (never a 500 or a dropped connection), every process must survive, the
web processes must serve again once it is back, and every event the observer received during the
outage must be written after it (none lost, none duplicated).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.scale.cluster import Cluster, wait_until
from tests.scale.helpers import (
    exchange,
    make_offer,
    phone_call,
    post_offer,
    staff_session,
    stored_event_ids,
    wait_stored,
)
from tests.scale.servers import ThrowawayPostgres

pytestmark = [pytest.mark.timeout(400)]


@pytest.fixture
def postgres() -> Iterator[ThrowawayPostgres]:
    try:
        server = ThrowawayPostgres()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    server.start()
    yield server
    server.destroy()


def ready(base_url: str) -> bool:
    return httpx.get(f"{base_url}/readyz", timeout=30).status_code == 200


class Load:
    """Users in a loop: set up a call, open the call history; every answer's status is kept."""

    def __init__(self, cluster: Cluster, session: str, offer: str) -> None:
        self.cluster, self.session, self.offer = cluster, session, offer
        self.statuses: list[tuple[str, int | str]] = []
        self.bodies_503: list[str] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(index,), daemon=True) for index in range(3)]

    def run(self, index: int) -> None:
        cookies = {"sessionid": self.session}
        count = 0
        while not self.stop.is_set():
            base = self.cluster.web_urls[(index + count) % len(self.cluster.web_urls)]
            count += 1
            try:
                if count % 2:
                    response = post_offer(base, self.session, self.offer, timeout_s=60)
                    name = "rtc"
                else:
                    response = httpx.get(f"{base}/calls/", cookies=cookies, timeout=60)
                    name = "history"
                self.statuses.append((name, response.status_code))
                if response.status_code == 503:
                    self.bodies_503.append(response.headers.get("Retry-After", "") + " " + response.text)
            except httpx.HTTPError as exc:
                self.statuses.append(("error", type(exc).__name__))
            self.stop.wait(0.2)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(90)


def test_postgres_restart_gives_503s_then_recovers_and_the_observer_loses_nothing(
    postgres: ThrowawayPostgres, tmp_path: Path
) -> None:
    env = {"DB_POOL_TIMEOUT": "3", "RTC_RATE_LIMIT": "10000/m"}
    with Cluster(
        web=2, workers=1, pg_admin_url=postgres.admin_url, env=env, log_dir=tmp_path / "logs"
    ) as cluster:
        session = staff_session(cluster)
        offer = make_offer()
        call = phone_call(cluster)
        before = exchange(cluster, call.provider_call_id, "Before the outage.")
        wait_stored(cluster, call.call_id, [e["event_id"] for e in before])

        with Load(cluster, session, offer) as load:
            wait_until(lambda: len(load.statuses) >= 6, timeout_s=60, what="load running")
            postgres.stop()
            # Users are told, clearly, to come back.
            refused = post_offer(cluster.web_urls[0], session, offer)
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "database_unavailable"
            assert "database" in refused.json()["error"]["message"]
            assert refused.headers["Retry-After"].isdigit()
            page = httpx.get(f"{cluster.web_urls[1]}/calls/", cookies={"sessionid": session}, timeout=60)
            assert page.status_code == 503 and "temporarily unavailable" in page.text
            readiness = httpx.get(f"{cluster.web_urls[1]}/readyz", timeout=30)
            assert readiness.status_code == 503 and readiness.json()["failing"] == ["database"]
            # The call goes on: the observer receives these while it cannot write.
            during = exchange(cluster, call.provider_call_id, "During the outage.")
            mark = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= mark + 3, timeout_s=120, what="load during the outage")

            postgres.start()
            wait_until(lambda: all(ready(url) for url in cluster.web_urls), timeout_s=60, what="ready again")
            mark = len(load.statuses)
            wait_until(lambda: len(load.statuses) >= mark + 4, timeout_s=120, what="load after the outage")

        after_restart = post_offer(cluster.web_urls[1], session, offer)
        assert after_restart.status_code == 201, after_restart.text

        # Nothing the observer received is lost or written twice.
        wanted = [e["event_id"] for e in before + during]
        stored = wait_stored(cluster, call.call_id, wanted, within_s=60)
        assert len(stored) == len(set(stored)), "an event was stored twice"
        sequences = [
            row[0]
            for row in cluster.sql(
                "SELECT sequence FROM calls_event WHERE call_id = %s ORDER BY sequence", call.call_id
            )
        ]
        assert sequences == list(range(1, len(sequences) + 1))
        assert set(wanted) <= set(stored_event_ids(cluster, call.call_id))

        # Users saw successes or clear 503s, never a 500 or a dropped connection; nothing crashed.
        kinds = {status for _, status in load.statuses}
        assert kinds <= {200, 201, 503}, (load.statuses, cluster.log_report())
        assert 503 in kinds and (201 in kinds or 200 in kinds)
        assert all(body.split(" ", 1)[0].isdigit() for body in load.bodies_503)
        assert all(proc.alive for proc in cluster.processes), cluster.log_report()
        assert all(proc.starts == 1 for proc in cluster.processes)
