"""A user's own call history and transcripts (admins see everyone's in the admin)."""

from __future__ import annotations

import uuid

from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from calls import metrics, selectors
from calls.permissions import staff_required

CALLS_PER_PAGE = 20


@require_safe
@staff_required
def call_list(request: HttpRequest) -> HttpResponse:
    """The signed-in user's calls, newest first, paginated (`?page=N`; out-of-range pages show the last)."""
    paginator = Paginator(selectors.user_calls(user=request.user), CALLS_PER_PAGE)
    page = paginator.get_page(request.GET.get("page"))
    return render(request, "calls/call_list.html", {"page": page, "calls": page.object_list})


@require_safe
@staff_required
def call_detail(request: HttpRequest, call_id: uuid.UUID) -> HttpResponse:
    """One of the user's own calls: facts, turn latency, transcript and tool calls; 404 for others'."""
    call = selectors.get_user_call(user=request.user, call_id=call_id)
    latencies = selectors.call_turn_latencies(call=call)
    return render(
        request,
        "calls/call_detail.html",
        {
            "call": call,
            "turns": selectors.call_transcript(call=call),
            "tool_invocations": selectors.call_tool_invocations(call=call),
            "recording": selectors.call_recording(call=call),
            "latency": {
                "turns": len(latencies),
                "median_ms": metrics.median(latencies),
                "p95_ms": metrics.percentile(latencies, 0.95),
            },
        },
    )
