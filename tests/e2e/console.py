"""What the browser e2e tests share: a signed-in console page and read-only queries of the server's DB.

The servers under test are `scripts.screenshots.DemoServer`s on a throw-away SQLite database; the
tests read it with their own read-only connections (never through the server), so a test sees only
what the product committed.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from playwright.sync_api import Browser, ConsoleMessage, Page, Response

from scripts.screenshots import DemoServer, new_page, sign_in


@contextmanager
def open_call_console(server: DemoServer, browser: Browser, *, height: int = 1480) -> Iterator[Page]:
    """A signed-in console with the browser's audio processing off (deterministic input audio: noise
    suppression would also take a steady test tone for noise); fails on leaving if the page logged a
    JavaScript error (media elements log failed loads as errors too) or got a 5xx answer, naming the
    request and quoting the server's log."""
    page = new_page(browser)
    page.set_viewport_size({"width": 1280, "height": height})
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(message.text)

    def on_response(response: Response) -> None:
        if response.status >= 500:
            errors.append(f"HTTP {response.status} from {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("response", on_response)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error}"))
    page.add_init_script("window.voiceagentConsoleOptions = { audioProcessing: false };")
    sign_in(page, server)
    yield page
    page.context.close()
    assert errors == [], f"{errors}\nthe server's log ends with:\n{server.log_tail(3000)}"


def query(server: DemoServer, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the server's SQLite database (read-only, a fresh connection per query)."""
    assert server.db_path is not None
    with sqlite3.connect(f"file:{server.db_path}?mode=ro", uri=True, timeout=10) as connection:
        return connection.execute(sql, params).fetchall()


def wait_for_rows(
    server: DemoServer, sql: str, *params: Any, timeout_s: float = 30.0
) -> list[tuple[Any, ...]]:
    """The first non-empty result of `sql` within `timeout_s` (polled every 0.25 s)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rows = query(server, sql, *params)
        if rows:
            return rows
        time.sleep(0.25)
    raise AssertionError(f"no rows for {sql} {params} within {timeout_s} s\n{server.log_tail()}")
