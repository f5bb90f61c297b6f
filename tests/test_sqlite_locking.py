"""The embedded default's SQLite (a file, several writing threads): a transaction that reads and then
writes must wait for another writer, not fail at once with "database is locked".

A request's transaction that reads first (a recording's first chunk: `get_or_create`) and wants to
write while the observer's writer thread holds the write lock gets SQLITE_BUSY immediately under
SQLite's default deferred transactions (waiting could deadlock, so SQLite does not), which the user
sees as a 503. With settings.SQLITE_OPTIONS every transaction takes the write lock when it begins.
Two real connections to a file database, as in `manage.py serve`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db.backends.sqlite3.base import DatabaseWrapper
from django.db.utils import ConnectionHandler


def connection_on(path: Path, options: dict[str, Any]) -> DatabaseWrapper:
    """A Django SQLite connection to `path` with `options`, for the calling thread."""
    handler = ConnectionHandler(
        {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(path), "OPTIONS": options}}
    )
    connection = handler["default"]
    assert isinstance(connection, DatabaseWrapper)
    return connection


def begin(connection: DatabaseWrapper) -> None:
    """What `transaction.atomic()` does at its outermost level on SQLite (BEGIN, in the configured mode)."""
    connection.set_autocommit(False, force_begin_transaction_with_broken_autocommit=True)


def end(connection: DatabaseWrapper) -> None:
    connection.commit()
    connection.set_autocommit(True)
    connection.close()


def read_then_write_beside_a_writer(path: Path, options: dict[str, Any]) -> dict[str, BaseException]:
    """The request reads, the writer takes the lock and writes, the request writes: what each raised."""
    setup = connection_on(path, options)
    with setup.cursor() as cursor:
        cursor.execute("CREATE TABLE IF NOT EXISTS item (name TEXT)")
    setup.close()
    request_read, writer_wrote = threading.Event(), threading.Event()
    failures: dict[str, BaseException] = {}

    def request() -> None:
        connection = connection_on(path, options)
        try:
            begin(connection)
            with connection.cursor() as cursor:
                cursor.execute("SELECT count(*) FROM item")
                request_read.set()
                writer_wrote.wait(3)  # with the lock taken at BEGIN, the writer waits for us instead
                cursor.execute("INSERT INTO item VALUES ('request')")
            end(connection)
        except BaseException as exc:
            failures["request"] = exc
            request_read.set()
            connection.close()

    def writer() -> None:
        connection = connection_on(path, options)
        try:
            request_read.wait(10)
            begin(connection)
            with connection.cursor() as cursor:
                cursor.execute("INSERT INTO item VALUES ('writer')")
            writer_wrote.set()
            threading.Event().wait(0.2)  # still holding the write lock while the request writes
            end(connection)
        except BaseException as exc:
            failures["writer"] = exc
            connection.close()

    threads = [threading.Thread(target=request), threading.Thread(target=writer)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return failures


@pytest.fixture(autouse=True)
def _own_databases(django_db_blocker: Any) -> Iterator[None]:
    """These tests open their own file databases, not the suite's test database."""
    with django_db_blocker.unblock():
        yield


def test_a_transaction_that_reads_then_writes_waits_for_the_other_writer(tmp_path: Path) -> None:
    assert read_then_write_beside_a_writer(tmp_path / "db.sqlite3", dict(settings.SQLITE_OPTIONS)) == {}
    check = connection_on(tmp_path / "db.sqlite3", {})
    with check.cursor() as cursor:
        cursor.execute("SELECT name FROM item ORDER BY rowid")
        assert [row[0] for row in cursor.fetchall()] == ["request", "writer"]
    check.close()


def test_without_immediate_transactions_sqlite_refuses_the_request_at_once(tmp_path: Path) -> None:
    """What the setting is for: SQLite's default (deferred) transactions fail the request's write."""
    options = {key: value for key, value in settings.SQLITE_OPTIONS.items() if key != "transaction_mode"}
    failures = read_then_write_beside_a_writer(tmp_path / "db.sqlite3", options)
    assert list(failures) == ["request"] and "database is locked" in str(failures["request"])
