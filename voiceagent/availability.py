"""A clear 503 while the database (or Redis) cannot be reached, instead of a 500 page.

When PostgreSQL restarts or the pool has no connection to give within DB_POOL_TIMEOUT, Django raises
`OperationalError`/`InterfaceError` from the view. That is an outage, not a bug: users (and load
balancers, and OpenAI's webhook retries) should be told to come back shortly. The API answers in its
JSON error shape, pages in plain text; both carry `Retry-After`. Other exceptions are left alone.
"""

from __future__ import annotations

import logging
from typing import Final

from django.db import InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.deprecation import MiddlewareMixin
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

logger = logging.getLogger(__name__)

#: Seconds clients are asked to wait before retrying.
RETRY_AFTER_S: Final = 5
MESSAGE: Final = (
    "The service is temporarily unavailable: its database cannot be reached. Try again in a few seconds."
)
#: Redis carries the rate-limit counters (the cache) and the channel layer: while it is down, what needs
#: it is refused the same way (live calls go on: their observers write to PostgreSQL).
REDIS_MESSAGE: Final = (
    "The service is temporarily unavailable: its message broker cannot be reached. "
    "Try again in a few seconds."
)
#: Paths whose clients read JSON errors (the API shape of calls.views.api.json_error).
JSON_PREFIXES: Final = ("/rtc", "/api/", "/telephony/", "/readyz", "/metrics")


class DatabaseUnavailableMiddleware(MiddlewareMixin):
    """Turns a database outage raised by a view into 503 + Retry-After."""

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if isinstance(exception, (OperationalError, InterfaceError)):
            what, message, code = "database", MESSAGE, "database_unavailable"
        elif isinstance(exception, (RedisConnectionError, RedisTimeoutError)):
            what, message, code = "Redis", REDIS_MESSAGE, "redis_unavailable"
        else:
            return None
        logger.warning(
            "%s unavailable during %s %s: %s: %s",
            what,
            request.method,
            request.path,
            type(exception).__name__,
            str(exception).strip().splitlines()[0] if str(exception).strip() else "",
        )
        response: HttpResponse
        wants_json = request.path.startswith(JSON_PREFIXES) or "json" in request.headers.get("Accept", "")
        if wants_json:
            response = JsonResponse({"error": {"message": message, "code": code}}, status=503)
        else:
            response = HttpResponse(message, status=503, content_type="text/plain; charset=utf-8")
        response["Retry-After"] = str(RETRY_AFTER_S)
        response["Cache-Control"] = "no-store"
        return response


async def release_db_connection() -> None:
    """Give this request's database connection back (to the pool) before a slow upstream call.

    Under ASGI each request runs its ORM calls on a thread of its own and keeps its connection until
    the request ends. A call set-up waits seconds for the Realtime API's answer: holding a pooled
    connection meanwhile would let a burst of set-ups exhaust the pool (DB_POOL_MAX per process)
    while the database itself is idle. The next query takes a connection again.
    """
    from asgiref.sync import sync_to_async

    await sync_to_async(release_db_connection_sync)()


def release_db_connection_sync() -> None:
    """`release_db_connection` from sync code, on the thread that owns the request's connection (a
    connection belongs to one thread): a set-up calls it at the end of its own thread hand-off."""
    from django.db import connection

    if not connection.in_atomic_block:  # inside a transaction (a test's, say) it must stay
        connection.close()
