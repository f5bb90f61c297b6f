"""Agent profiles side by side: the seed's "swap the voice and model to compare", answered with data."""

from __future__ import annotations

import datetime as dt

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_safe

from calls import selectors
from calls.permissions import staff_required

#: The periods the page offers: (query value, label, days; None = all time). The first is the default.
PERIODS: list[tuple[str, str, int | None]] = [
    ("30", "Last 30 days", 30),
    ("7", "Last 7 days", 7),
    ("90", "Last 90 days", 90),
    ("all", "All time", None),
]


@require_safe
@staff_required
def compare_agents(request: HttpRequest) -> HttpResponse:
    """Calls, turn latency (median, p95), interruptions, tool calls and failures per agent profile.

    `?period=7|30|90|all` (unknown values fall back to the default, 30 days).
    """
    choice = request.GET.get("period", PERIODS[0][0])
    period = next((p for p in PERIODS if p[0] == choice), PERIODS[0])
    days = period[2]
    since = None if days is None else timezone.now() - dt.timedelta(days=days)
    rows = selectors.agent_comparison(since=since)
    return render(
        request,
        "calls/compare.html",
        {
            "rows": rows,
            "periods": PERIODS,
            "period": period,
            "total_calls": sum(row.calls for row in rows),
        },
    )
