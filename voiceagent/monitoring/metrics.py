"""Our Prometheus series, and the one-line hooks the product calls to move them (docs/observability.md).

Counters and histograms live in prometheus_client's default registry of the process. When
`PROMETHEUS_MULTIPROC_DIR` is set in the environment *before the process starts*, prometheus_client
writes them to files in that directory instead, and `/metrics` of any web process sums the files of
every process on the host (web and call-observer workers alike); see `exposition`.

Live calls are not counted in memory: a process cannot know the calls other processes set up, and a
crashed process would leave a gauge wrong forever. `LiveCallsCollector` asks the database at scrape
time, so every process answers the same, correct figure.

Hooks never raise into the code they observe and never take a label from user input without a bound
(tool names outside the call's toolbox become "unknown").
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Final, ParamSpec, Protocol, TypeVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    import datetime as dt

    from calls.tools import Toolbox, ToolResult

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")


def _prepare_multiprocess_dir() -> None:
    """Multi-process mode writes a file per process and series into the directory from the first
    series made (below): create it if missing, or say at start which setting is wrong."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        try:
            os.makedirs(directory, exist_ok=True)
        except OSError as exc:
            from django.core.exceptions import ImproperlyConfigured

            message = f"PROMETHEUS_MULTIPROC_DIR={directory!r} cannot be used: {exc}"
            raise ImproperlyConfigured(message) from None


_prepare_multiprocess_dir()

#: Set-up latency buckets (seconds): 10 ms (a direct registration) to 5 s and beyond (a slow upstream).
SETUP_BUCKETS: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0)
#: Observer lag buckets (seconds): a flush runs every 250 ms, so most events land below 0.5 s.
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Tool duration buckets (seconds): built-ins take milliseconds, MCP servers up to their timeout.
TOOL_BUCKETS: Final = (0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

CALL_SETUPS: Final = Counter(
    "voiceagent_call_setups",
    "Call set-ups by door (proxy: POST /rtc, direct: POST /api/calls, sip: the webhook's accept) and "
    "outcome (ok, refused, rate_limited, conflict, invalid, upstream_error, upstream_timeout, "
    "upstream_rate_limited, cancelled, rejected, missed, error).",
    ["transport", "outcome"],
)
CALL_SETUP_SECONDS: Final = Histogram(
    "voiceagent_call_setup_seconds",
    "Seconds a successful set-up took on our side: offer in to answer out (proxy), registration "
    "(direct), accept decided to accepted upstream (sip).",
    ["transport"],
    buckets=SETUP_BUCKETS,
)
OBSERVER_LAG_SECONDS: Final = Histogram(
    "voiceagent_observer_lag_seconds",
    "Seconds from an event's arrival on the observer's sideband to its row being committed.",
    buckets=LAG_BUCKETS,
)
EVENTS_STORED: Final = Counter(
    "voiceagent_events_stored", "Call events committed to the database by the observers."
)
WEBHOOK_VERIFICATIONS: Final = Counter(
    "voiceagent_webhook_verifications",
    "Webhook deliveries checked, by outcome (ok, bad_signature, stale, missing_header, malformed, "
    "not_configured).",
    ["outcome"],
)
TOOL_CALLS: Final = Counter(
    "voiceagent_tool_calls",
    "Function calls the observers ran, by tool and outcome (completed, failed).",
    ["tool", "outcome"],
)
TOOL_CALL_SECONDS: Final = Histogram(
    "voiceagent_tool_call_seconds", "Seconds a tool took to answer.", ["tool"], buckets=TOOL_BUCKETS
)

#: Call sources always reported by `voiceagent_live_calls` (0 when none is live).
SOURCES: Final = ("web", "sip")


def _never_raises(hook: Callable[P, None]) -> Callable[P, None]:
    """A failing metric (e.g. PROMETHEUS_MULTIPROC_DIR missing or full) is logged, never raised into
    the call set-up, webhook or observer it measures."""

    @functools.wraps(hook)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            hook(*args, **kwargs)
        except Exception:
            logger.exception("metrics: %s failed", hook.__name__)

    return guarded


# --- call set-ups -------------------------------------------------------------------------------------


def setup_outcome(exc: BaseException) -> str:
    """The `outcome` label of a set-up that raised `exc` (typed errors of the call services)."""
    from calls.services.calls import CallAlreadyRegistered, CallSetupError
    from calls.services.ratelimit import RateLimited
    from calls.services.realtime_client import InvalidProviderCallId, RealtimeError, RealtimeTimeout

    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    if isinstance(exc, CallAlreadyRegistered):
        return "conflict"
    if isinstance(exc, CallSetupError):
        return "refused"
    if isinstance(exc, InvalidProviderCallId):
        return "invalid"
    if isinstance(exc, RealtimeTimeout):
        return "upstream_timeout"
    if isinstance(exc, RealtimeError):
        return "upstream_rate_limited" if exc.status == 429 else "upstream_error"
    return "error"


@_never_raises
def record_call_setup(transport: str, outcome: str, *, started: float | None = None) -> None:
    """Count one set-up; a successful one with its `started` (time.monotonic()) is timed too."""
    CALL_SETUPS.labels(transport=transport, outcome=outcome).inc()
    if outcome == "ok" and started is not None:
        CALL_SETUP_SECONDS.labels(transport=transport).observe(time.monotonic() - started)


@contextlib.contextmanager
def counted_call_setup(transport: str, *, started: float) -> Iterator[None]:
    """Count the set-up the block runs by outcome (from the exception it raises, "ok" when it ends)
    and time a successful one from `started` (time.monotonic()), which may lie before the block: a
    web call's set-up begins with its admission, in an earlier thread hand-off."""
    try:
        yield
    except BaseException as exc:
        record_call_setup(transport, setup_outcome(exc))
        raise
    record_call_setup(transport, "ok", started=started)


def instrument_call_setup(
    transport: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Awaitable[R]]]:
    """Decorate an async set-up service: `counted_call_setup` around each call of it."""

    def decorate(service: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
        @functools.wraps(service)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with counted_call_setup(transport, started=time.monotonic()):
                return await service(*args, **kwargs)

        return wrapper

    return decorate


# --- webhooks -----------------------------------------------------------------------------------------


def webhook_outcome(exc: BaseException) -> str:
    """The `outcome` label of a verification that raised `exc` (telephony.services' typed errors)."""
    from telephony.services import SigningSecretMissing, WebhookRefused

    if isinstance(exc, SigningSecretMissing):
        return "not_configured"
    if not isinstance(exc, WebhookRefused):
        return "error"
    reason = exc.reason.lower()
    if reason.startswith("missing "):
        return "missing_header"
    if "timestamp too old" in reason or "timestamp too new" in reason:
        return "stale"
    if reason.startswith("signature verification failed"):
        return "bad_signature"
    return "malformed"


@_never_raises
def record_webhook_verification(outcome: str) -> None:
    """Count one webhook delivery checked."""
    WEBHOOK_VERIFICATIONS.labels(outcome=outcome).inc()


def instrument_webhook_verification(verify: Callable[P, R]) -> Callable[P, R]:
    """Decorate `verify_webhook`: one count per delivery checked, by outcome."""

    @functools.wraps(verify)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            result = verify(*args, **kwargs)
        except Exception as exc:
            record_webhook_verification(webhook_outcome(exc))
            raise
        record_webhook_verification("ok")
        return result

    return wrapper


# --- the observer -------------------------------------------------------------------------------------


class _Received(Protocol):
    @property
    def received_at(self) -> dt.datetime: ...


@_never_raises
def record_stored_events(events: Iterable[_Received]) -> None:
    """Events just committed: count them and observe each one's lag since it was received."""
    from django.utils import timezone

    now = timezone.now()
    count = 0
    for event in events:
        OBSERVER_LAG_SECONDS.observe(max(0.0, (now - event.received_at).total_seconds()))
        count += 1
    if count:
        EVENTS_STORED.inc(count)


@_never_raises
def record_tool_call(toolbox: Toolbox | None, name: str, result: ToolResult) -> None:
    """A finished function call; names the call's toolbox does not know are counted as "unknown"."""
    tool = name if toolbox is not None and toolbox.get(name) is not None else "unknown"
    TOOL_CALLS.labels(tool=tool, outcome=result.status).inc()
    TOOL_CALL_SECONDS.labels(tool=tool).observe(result.duration_ms / 1000)


# --- exposition ---------------------------------------------------------------------------------------


class LiveCallsCollector:
    """`voiceagent_live_calls{source}`: calls connecting or active now, counted by the database at
    scrape time (right whichever process set them up). A database error leaves the series out of
    that scrape (and is logged) rather than failing the whole scrape."""

    def describe(self) -> list[Metric]:
        return []  # no query at registration

    def collect(self) -> Iterator[Metric]:
        from django.db import DatabaseError
        from django.db.models import Count

        from calls.models import Call

        try:
            rows = (
                Call.objects.filter(status__in=[Call.Status.CONNECTING, Call.Status.ACTIVE])
                .values("source")
                .annotate(n=Count("id"))
                .order_by()
            )
            counts = {str(row["source"]): int(row["n"]) for row in rows}
        except DatabaseError:
            logger.exception("metrics: counting live calls failed")
            return
        family = GaugeMetricFamily(
            "voiceagent_live_calls",
            "Calls connecting or active now, by source (web, sip).",
            labels=["source"],
        )
        for source in sorted({*SOURCES, *counts}):
            family.add_metric([source], counts.get(source, 0))
        yield family


class _ProcessRegistry:
    """This process's default registry as one collector (single-process mode)."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def multiprocess_dir() -> str | None:
    """prometheus_client's multi-process directory, when this process was started with one."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


@functools.cache
def _scrape_registry(multiprocess: str | None, live_calls: bool) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess is not None:
        MultiProcessCollector(registry, path=multiprocess)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ProcessRegistry())
    if live_calls:
        registry.register(LiveCallsCollector())
    return registry


def scrape_registry(*, live_calls: bool = True) -> CollectorRegistry:
    """What a scrape reads: every process's series in multi-process mode (else this process's), plus
    the live calls counted by the database unless `live_calls` is False (a worker's own metrics port:
    the web processes report them already, and Prometheus would add the copies up)."""
    return _scrape_registry(multiprocess_dir(), live_calls)


def exposition(*, live_calls: bool = True) -> bytes:
    """The text exposition `/metrics` serves (see `scrape_registry`)."""
    return generate_latest(scrape_registry(live_calls=live_calls))


def serve_worker_metrics() -> int | None:
    """When `METRICS_WORKER_PORT` is set, serve this process's series on `METRICS_WORKER_HOST`:that
    port from a daemon thread (call-observer workers have no HTTP server of their own); return the
    port. Not needed when the workers share the web processes' `PROMETHEUS_MULTIPROC_DIR`: the web
    `/metrics` includes them already. prometheus_client's server has no authentication: keep it on
    loopback or a private network."""
    from django.conf import settings
    from prometheus_client import start_http_server

    port: int | None = settings.METRICS_WORKER_PORT
    if port is None:
        return None
    host: str = settings.METRICS_WORKER_HOST
    server, _ = start_http_server(port, addr=host, registry=scrape_registry(live_calls=False))
    bound = int(server.server_address[1])
    logger.info("metrics: this worker's series on http://%s:%d/metrics", host, bound)
    return bound


def labelled_total(text: str, name: str, labels: dict[str, str] | None = None) -> float:
    """The sum of the samples `name` in exposition `text` whose labels include `labels` (0 if none)."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in (labels or {}).items()):
                total += float(sample.value)
    return total
