"""voiceagent/postgresql: the pool's check of the connections it hands out, on a real PostgreSQL.

A healthy idle connection is handed out without a round trip; one whose backend the server ended
(a restart, `pg_terminate_backend`) is found out and replaced, so that no caller gets a dead one.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from voiceagent.postgresql.base import check_pooled_connection

#: The machine's PostgreSQL (python-svc runs it on loopback; CI starts it if it is not running).
CONNINFO = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=5"


@pytest.fixture
def admin() -> Iterator[psycopg.Connection[Any]]:
    try:
        connection = psycopg.connect(CONNINFO, autocommit=True)
    except psycopg.OperationalError as exc:
        pytest.skip(f"no PostgreSQL on 127.0.0.1:5432 ({exc})")
    with connection:
        yield connection


def last_query(admin: psycopg.Connection[Any], pid: int) -> str:
    row = admin.execute("SELECT query FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    assert row is not None, f"backend {pid} is gone"
    return str(row[0])


def terminate(admin: psycopg.Connection[Any], pid: int) -> None:
    admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    deadline = time.monotonic() + 5
    while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} did not end"
        time.sleep(0.02)


def test_a_healthy_idle_connection_is_passed_without_a_round_trip(admin: psycopg.Connection[Any]) -> None:
    with psycopg.connect(CONNINFO, autocommit=True) as connection:
        connection.execute("SELECT 'pool-check-marker'")

        check_pooled_connection(connection)

        # psycopg_pool's own check would have sent an empty query, which the server would show here.
        assert last_query(admin, connection.info.backend_pid) == "SELECT 'pool-check-marker'"
        ConnectionPool.check_connection(connection)
        assert last_query(admin, connection.info.backend_pid) == ""


def test_a_connection_whose_backend_was_ended_fails_the_check(admin: psycopg.Connection[Any]) -> None:
    with psycopg.connect(CONNINFO, autocommit=True) as connection:
        terminate(admin, connection.info.backend_pid)

        with pytest.raises(psycopg.OperationalError):
            check_pooled_connection(connection)


def test_a_connection_left_in_a_transaction_is_not_passed(admin: psycopg.Connection[Any]) -> None:
    """The pool rolls back what it is given back, so this is a connection in a state nobody expects:
    it gets the full check, which refuses it (the pool then discards it and takes another)."""
    with psycopg.connect(CONNINFO) as connection:  # not autocommit: the SELECT opens a transaction
        connection.execute("SELECT 'in-transaction-marker'")

        with pytest.raises(psycopg.Error):
            check_pooled_connection(connection)


def test_the_pool_replaces_connections_the_server_ended(admin: psycopg.Connection[Any]) -> None:
    """What a PostgreSQL restart does to a pool: every idle connection's backend is gone. Each
    caller afterwards still gets a working connection, none an error."""
    with ConnectionPool(
        CONNINFO, min_size=3, max_size=3, check=check_pooled_connection, kwargs={"autocommit": True}
    ) as pool:
        pool.wait(timeout=10)
        before = set()
        for _ in range(3):
            with pool.connection() as connection:
                before.add(connection.info.backend_pid)
        for pid in before:
            terminate(admin, pid)

        after = set()
        for _ in range(6):
            with pool.connection(timeout=10) as connection:
                assert connection.execute("SELECT 1").fetchone() == (1,)
                after.add(connection.info.backend_pid)

        assert before and not before & after
