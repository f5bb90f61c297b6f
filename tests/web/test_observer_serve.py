"""The observer embedded in `manage.py serve`: a call registered over HTTP is observed by the worker
that runs inside the server process (same event loop as daphne, in-memory channel layer).

The server is a real subprocess (the DemoServer harness, throw-away SQLite); the engine runs in a
thread of this test (speech off). What proves the embedding: the only way an event can reach the
server's database is the worker inside that process receiving `observe.start` and its observer
attaching to the sideband.
"""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from scripts.screenshots import DEMO_PASSWORD, DEMO_USERNAME, demo_server
from tests.web.conftest import ThreadedEngine

pytestmark = [pytest.mark.timeout(120)]


def poll(check: Callable[[], Any], *, within_s: float = 15.0) -> Any:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.1)
    raise AssertionError(f"not within {within_s} s")


def signed_in(base_url: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, timeout=10.0, headers={"Origin": base_url})
    page = client.get("/accounts/login/")
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text)
    assert token is not None
    response = client.post(
        "/accounts/login/",
        data={"username": DEMO_USERNAME, "password": DEMO_PASSWORD, "csrfmiddlewaretoken": token.group(1)},
    )
    assert response.status_code == 302, response.text
    return client


def test_a_call_registered_with_serve_is_observed_inside_the_server_process(
    engine_in_thread: Callable[..., ThreadedEngine],
) -> None:
    engine = engine_in_thread()
    auth = {"Authorization": f"Bearer {engine.api_key}"}
    with demo_server(extra_env={"REALTIME_BASE_URL": engine.base_url}) as server:
        created = httpx.post(f"{engine.base_url}/realtime/_local/incoming_calls", json={}, headers=auth)
        provider_call_id = created.json()["call_id"]
        client = signed_in(server.base_url)
        registered = client.post(
            "/api/calls",
            json={"provider_call_id": provider_call_id, "mode": "audio"},
            headers={"X-CSRFToken": client.cookies["csrftoken"]},
        )
        assert registered.status_code == 201, registered.text
        call_id = registered.json()["id"]
        assert server.db_path is not None
        database = sqlite3.connect(server.db_path, timeout=10)

        def observer_attached() -> bool:
            async def sidebands() -> int:  # read on the engine's own loop
                calls = engine.state.calls.calls()
                return sum(len(call._pumps) for call in calls if call.id == provider_call_id)

            return asyncio.run_coroutine_threadsafe(sidebands(), engine.loop).result(5) == 1

        poll(observer_attached)
        accepted = httpx.post(
            f"{engine.base_url}/realtime/calls/{provider_call_id}/accept",
            json={"type": "realtime", "instructions": "Answer briefly."},
            headers=auth,
        )
        assert accepted.status_code == 200, accepted.text

        def stored_types() -> list[str]:
            rows = database.execute(
                "SELECT type FROM calls_event WHERE call_id = ? ORDER BY sequence",
                (call_id.replace("-", ""),),
            )
            return [row[0] for row in rows]

        assert poll(stored_types)[0] == "session.created"
        status = database.execute("SELECT status FROM calls_call WHERE id = ?", (call_id.replace("-", ""),))
        assert status.fetchone()[0] == "active"

        hung_up = client.post(f"/rtc/{call_id}/hangup")
        assert hung_up.status_code in (200, 204), hung_up.text

        def ended() -> tuple[str, str] | None:
            row = database.execute(
                "SELECT status, end_reason FROM calls_call WHERE id = ?", (call_id.replace("-", ""),)
            ).fetchone()
            return (row[0], row[1]) if row and row[0] != "active" else None

        assert poll(ended) == ("ended", "hung up by the user")
        database.close()
        client.close()
        assert "observer not reached" not in server.log_path.read_text()
