"""Django's PostgreSQL backend, with a cheaper check of the connections its pool hands out.

With a pool and CONN_HEALTH_CHECKS, Django gives psycopg_pool its `check_connection`, which sends an
empty query every time a connection is taken from the pool. Under ASGI every thread hand-off that
touches the database takes one, so a call set-up paid three extra round trips, each a wake-up of a
PostgreSQL backend on the same two cores as everything else (bench/setup_overhead.py --cpu).

An idle connection in good health has nothing to read: the server sends nothing unprompted to a
connection that is not LISTENing. When the server goes away (restart, `pg_terminate_backend`, an
idle timeout) it sends its FATAL message and closes the socket, which makes the socket readable.
`check_pooled_connection` polls the socket without waiting and only when there is something to read
(or the connection is not idle, or already known to be closed) runs psycopg_pool's full check, which
raises for a dead connection so that the pool throws it away and hands out another: a PostgreSQL
restart still costs only the requests in flight while it is down (tests/scale/test_faults_postgres.py).
What the socket cannot tell (a peer that vanished without closing, a host gone off the network) the
round trip could not tell either: it would wait for the same TCP timeout.

The pool is built as Django 5.2 builds it (`django.db.backends.postgresql.base.DatabaseWrapper.pool`),
with this check instead of Django's: Django passes its own `check` argument, so a `check` in
OPTIONS["pool"] would be a duplicate argument. settings.py selects this engine with a pool.
"""

from __future__ import annotations

import select
from typing import Any

import psycopg
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql import base
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool

#: The alias Django uses for its maintenance connection (django.db.backends.base.base), never pooled.
NO_DB_ALIAS = "__no_db__"


def _has_input(fileno: int) -> bool:
    """True when the socket has something to read (data, end of file or an error), without waiting."""
    poller = select.poll()
    poller.register(fileno, select.POLLIN | select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


def check_pooled_connection(conn: psycopg.Connection[Any]) -> None:
    """psycopg_pool's `check` callback: return quietly for a healthy connection, raise otherwise."""
    if (
        conn.closed
        or conn.broken
        or conn.info.transaction_status != TransactionStatus.IDLE
        or _has_input(conn.fileno())
    ):
        ConnectionPool.check_connection(conn)


class DatabaseWrapper(base.DatabaseWrapper):
    """`django.db.backends.postgresql`'s wrapper; only its pool's check differs."""

    @property
    def pool(self) -> ConnectionPool[Any] | None:
        pool_options = self.settings_dict["OPTIONS"].get("pool")
        if self.alias == NO_DB_ALIAS or not pool_options:
            return None
        pools: dict[str, ConnectionPool[Any]] = self._connection_pools  # type: ignore[attr-defined]
        if self.alias not in pools:
            if self.settings_dict.get("CONN_MAX_AGE", 0) != 0:
                raise ImproperlyConfigured("Pooling doesn't support persistent connections.")
            options: dict[str, Any] = {} if pool_options is True else dict(pool_options)
            options.setdefault("check", check_pooled_connection)
            connect_kwargs = self.get_connection_params()
            connect_kwargs["autocommit"] = True  # as Django: it sets the mode itself later on
            pool: ConnectionPool[Any] = ConnectionPool(
                kwargs=connect_kwargs,
                open=False,
                configure=self._configure_connection,  # type: ignore[attr-defined]
                **options,
            )
            # setdefault: threads racing at start-up all build a pool, the first one set wins (as Django)
            pools.setdefault(self.alias, pool)
        return pools[self.alias]
