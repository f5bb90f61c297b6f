"""The Realtime upstream misbehaves: 5xx, no answer, a dropped sideband, malformed events; and a web
process is stopped (SIGTERM) with a call set-up in flight.

A 1-web + 1-worker cluster talks to the real local engine through `FaultProxy` (its
REALTIME_BASE_URL), which injects each fault for real over loopback sockets.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.scale.cluster import Cluster, wait_until
from tests.scale.fault_proxy import FaultProxy
from tests.scale.helpers import exchange, make_offer, phone_call, post_offer, staff_session, wait_stored

pytestmark = [pytest.mark.timeout(300)]


@pytest.fixture
def proxy() -> Iterator[FaultProxy]:
    server = FaultProxy().start()
    yield server
    server.stop()


def proxied_cluster(proxy: FaultProxy, log_dir: Path, *, http_timeout_s: float) -> Cluster:
    env = {
        "REALTIME_HTTP_TIMEOUT": str(http_timeout_s),
        "RTC_RATE_LIMIT": "1000/m",
        "CLIENT_SECRET_RATE_LIMIT": "1000/m",
    }
    running = Cluster(web=1, workers=1, env=env, realtime_base_url=proxy.url + "/v1", log_dir=log_dir)
    assert running.engine_proc is not None
    proxy.target = running.engine_proc.url
    return running


@pytest.fixture
def cluster(proxy: FaultProxy, tmp_path: Path) -> Iterator[Cluster]:
    """REALTIME_HTTP_TIMEOUT 2 s: the hanging upstream is given up on quickly."""
    with proxied_cluster(proxy, tmp_path / "logs", http_timeout_s=2) as running:
        yield running


def client_secret(cluster: Cluster, session: str) -> httpx.Response:
    """POST /api/realtime/client-secret as a signed-in user (with a CSRF token, as the console sends)."""
    token = secrets.token_hex(16)
    return httpx.post(
        f"{cluster.web_urls[0]}/api/realtime/client-secret",
        json={"mode": "audio"},
        headers={"X-CSRFToken": token},
        cookies={"sessionid": session, "csrftoken": token},
        timeout=30,
    )


def latest_call(cluster: Cluster) -> tuple[str, str, str]:
    """(status, end_reason, error) of the most recent call."""
    rows = cluster.sql("SELECT status, end_reason, error FROM calls_call ORDER BY created_at DESC LIMIT 1")
    return rows[0][0], rows[0][1], rows[0][2]


def test_upstream_5xx_gives_users_a_clear_502_and_the_call_fails_with_the_reason(
    proxy: FaultProxy, cluster: Cluster
) -> None:
    session = staff_session(cluster)
    proxy.mode = "error"

    response = post_offer(cluster.web_urls[0], session, make_offer())
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["message"] and "error" in error["message"].lower()
    status, end_reason, call_error = latest_call(cluster)
    assert status == "failed" and end_reason == "failed" and call_error

    secret = client_secret(cluster, session)
    assert secret.status_code == 502, secret.text
    assert secret.json()["error"]["message"]

    proxy.mode = "pass"  # the upstream recovers: so do we, without a restart
    assert post_offer(cluster.web_urls[0], session, make_offer()).status_code == 201
    assert client_secret(cluster, session).status_code == 200
    assert all(proc.alive for proc in cluster.processes)


def test_upstream_timeout_gives_a_504_and_the_call_fails_with_the_reason(
    proxy: FaultProxy, cluster: Cluster
) -> None:
    session = staff_session(cluster)
    proxy.mode = "hang"

    response = post_offer(cluster.web_urls[0], session, make_offer())
    assert response.status_code == 504, response.text
    assert "time" in response.json()["error"]["message"].lower()
    status, end_reason, call_error = latest_call(cluster)
    assert status == "failed" and end_reason == "failed" and call_error

    secret = client_secret(cluster, session)
    assert secret.status_code == 504, secret.text

    proxy.mode = "pass"
    assert post_offer(cluster.web_urls[0], session, make_offer()).status_code == 201
    assert all(proc.alive for proc in cluster.processes)


def test_a_closed_sideband_is_reconnected_and_every_relayed_event_is_stored(
    proxy: FaultProxy, cluster: Cluster
) -> None:
    call = phone_call(cluster)
    first = exchange(cluster, call.provider_call_id, "Before the drop.")
    wait_stored(cluster, call.call_id, [e["event_id"] for e in first])
    assert proxy.sideband_opens[call.provider_call_id] == 1

    assert proxy.close_sidebands(code=1011) == 1
    wait_until(
        lambda: proxy.sideband_opens[call.provider_call_id] == 2,
        timeout_s=30,
        what="the observer reconnected",
    )
    second = exchange(cluster, call.provider_call_id, "After the drop.")
    wait_stored(cluster, call.call_id, [e["event_id"] for e in second])

    # Every event that reached the worker is stored, once.
    stored = wait_stored(cluster, call.call_id, proxy.relayed[call.provider_call_id])
    assert len(stored) == len(set(stored))
    status = cluster.sql("SELECT status FROM calls_call WHERE id = %s", call.call_id)[0][0]
    assert status == "active"
    assert all(proc.alive for proc in cluster.processes)


def test_malformed_events_are_stored_as_such_and_the_observer_goes_on(
    proxy: FaultProxy, cluster: Cluster
) -> None:
    call = phone_call(cluster)
    assert proxy.inject(call.provider_call_id, "{not json") == 1
    assert proxy.inject(call.provider_call_id, '["a list, not an object"]') == 1
    assert proxy.inject(call.provider_call_id, '{"type": "response.done", "response": "not an object"}') == 1

    after = exchange(cluster, call.provider_call_id, "Still there?")
    wait_stored(cluster, call.call_id, [e["event_id"] for e in after])
    malformed = cluster.sql(
        "SELECT payload->>'raw' FROM calls_event WHERE call_id = %s AND type = 'voiceagent.malformed'"
        " ORDER BY sequence",
        call.call_id,
    )
    assert [row[0] for row in malformed] == ["{not json", '["a list, not an object"]']
    odd = cluster.sql(
        "SELECT count(*) FROM calls_event WHERE call_id = %s AND type = 'response.done'", call.call_id
    )
    assert odd[0][0] >= 2  # the odd response.done is kept as received, beside the real one
    assert proxy.sideband_opens[call.provider_call_id] == 1  # no reconnect was needed
    assert all(proc.alive for proc in cluster.processes)


def test_sigterm_lets_a_set_up_in_flight_finish_then_the_web_process_exits(
    proxy: FaultProxy, tmp_path: Path
) -> None:
    with proxied_cluster(proxy, tmp_path / "logs", http_timeout_s=30) as cluster:
        sigterm_during_a_set_up(proxy, cluster)


def sigterm_during_a_set_up(proxy: FaultProxy, cluster: Cluster) -> None:
    session = staff_session(cluster)
    offer = make_offer()
    web = cluster.webs[0]
    proxy.delay_s = 3.0  # the upstream takes 3 s to answer: the request is in flight meanwhile
    results: list[httpx.Response] = []
    request = threading.Thread(target=lambda: results.append(post_offer(web.url, session, offer)))
    request.start()
    wait_until(lambda: "POST /v1/realtime/calls" in proxy.rest_requests, timeout_s=30, what="set-up upstream")

    web.signal(15)  # SIGTERM
    wait_until(lambda: "stopping: no new connections" in web.log_text(), timeout_s=10, what="graceful stop")
    time.sleep(0.3)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{web.url}/healthz", timeout=5)  # no new connections
    request.join(60)
    assert results and results[0].status_code == 201, results and results[0].text
    assert results[0].text.startswith("v=0")
    assert web.wait(30) == 0, web.log_tail()
