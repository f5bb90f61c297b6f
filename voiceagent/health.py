"""Health endpoints for process managers and load balancers: JSON, no authentication.

`/healthz` answers while the process serves HTTP. `/readyz` also proves the process can do its work:
the database answers a query and a message makes a real round trip through the channel layer (the
path live call events take). A failing check gives 503 and names the check and the error.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

#: Seconds each readiness check may take before it counts as failed.
CHECK_TIMEOUT_S = 3.0


@never_cache
@require_GET
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving HTTP."""
    return JsonResponse({"status": "ok"})


def _check_database() -> None:
    """Run a trivial query on the default database (connecting first if needed)."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        row = cursor.fetchone()
    if row is None or row[0] != 1:
        raise RuntimeError(f"SELECT 1 returned {row!r}")


async def _check_channel_layer() -> None:
    """Send a message to a fresh channel and receive it back."""
    layer = get_channel_layer()
    if layer is None:
        raise RuntimeError("no channel layer is configured (CHANNEL_LAYERS is empty)")
    channel = await layer.new_channel("readyz.")
    sent = {"type": "readyz.ping", "nonce": time.monotonic_ns()}
    await layer.send(channel, sent)
    received = await layer.receive(channel)
    if received.get("nonce") != sent["nonce"]:
        raise RuntimeError(f"received a different message than sent: {received!r}")


async def _run(check: Callable[[], Awaitable[None]]) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(check(), timeout=CHECK_TIMEOUT_S)
    except TimeoutError:
        result: dict[str, Any] = {"ok": False, "error": f"timed out after {CHECK_TIMEOUT_S:g} s"}
    except Exception as exc:  # every failure is reported, whatever the backend raises
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}".strip()}
    else:
        result = {"ok": True}
    result["ms"] = round((time.perf_counter() - started) * 1000, 1)
    return result


@never_cache
@require_GET
async def readyz(request: HttpRequest) -> JsonResponse:
    """200 when the database and the channel layer work; 503 naming the failing check otherwise."""
    checks = {
        "database": await _run(sync_to_async(_check_database)),
        "channel_layer": await _run(_check_channel_layer),
    }
    failing = [name for name, result in checks.items() if not result["ok"]]
    body: dict[str, Any] = {"status": "fail" if failing else "ok", "checks": checks}
    if failing:
        body["failing"] = failing
        body["error"] = "; ".join(f"{name}: {checks[name]['error']}" for name in failing)
    return JsonResponse(body, status=503 if failing else 200)
