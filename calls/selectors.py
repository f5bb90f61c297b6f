"""Reads that several views share. Plain functions with keyword-only arguments; no writes here."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from itertools import groupby
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404

from calls import metrics
from calls.models import AgentProfile, Call, CallRecording, Event, ToolInvocation, TranscriptTurn


def _count_of(model: type[Event] | type[TranscriptTurn] | type[ToolInvocation]) -> Coalesce:
    """A correlated COUNT(*) per call: one query for a whole page, no row multiplication from joins."""
    counts = (
        model.objects.filter(call=OuterRef("pk"))
        .order_by()
        .values("call")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


def calls_with_counts(queryset: QuerySet[Call] | None = None) -> QuerySet[Call]:
    """Calls with their agent and user joined and `event_count`/`turn_count`/`tool_count` annotated."""
    qs = queryset if queryset is not None else Call.objects.all()
    return qs.select_related("agent", "user").annotate(
        event_count=_count_of(Event),
        turn_count=_count_of(TranscriptTurn),
        tool_count=_count_of(ToolInvocation),
    )


def user_calls(*, user: User | AnonymousUser) -> QuerySet[Call]:
    """The calls `user` placed, newest first (none for an anonymous user)."""
    if not user.is_authenticated:
        return Call.objects.none()
    return calls_with_counts(Call.objects.filter(user=user)).order_by("-created_at")


def get_user_call(*, user: User | AnonymousUser, call_id: uuid.UUID) -> Call:
    """One of `user`'s own calls; `Http404` for any other call, so ids of others' calls are not revealed."""
    try:
        return user_calls(user=user).get(pk=call_id)
    except Call.DoesNotExist:
        raise Http404("No such call.") from None


def call_transcript(*, call: Call) -> list[TranscriptTurn]:
    """The call's conversation, in the order it was spoken."""
    return list(TranscriptTurn.objects.filter(call=call).order_by("started_at", "id"))


def call_events(*, call: Call) -> list[Event]:
    """Every event of the call, in arrival order."""
    return list(Event.objects.filter(call=call).order_by("sequence"))


def call_tool_invocations(*, call: Call) -> list[ToolInvocation]:
    """The call's tool calls, oldest first."""
    return list(ToolInvocation.objects.filter(call=call).order_by("created_at", "id"))


def default_agent_profile() -> AgentProfile:
    """The default profile (created by migration 0002); `AgentProfile.DoesNotExist` if an admin removed it."""
    return AgentProfile.objects.get(is_default=True)


# ---- turn latency and the agent comparison (console helper) ---------------------------------------


def call_turn_latencies(*, call: Call) -> list[float]:
    """The call's per-turn round-trip latencies in ms (see `calls.metrics.turn_latencies_ms`); one query."""
    rows = (
        Event.objects.filter(call=call, type__in=metrics.LATENCY_EVENT_TYPES)
        .order_by("sequence")
        .values_list("type", "received_at")
    )
    return metrics.turn_latencies_ms(rows)


@dataclass(frozen=True)
class AgentComparison:
    """One agent profile's figures over a period, for the side-by-side comparison page."""

    agent: AgentProfile
    calls: int
    failures: int
    interruptions: int
    tool_calls: int
    latencies_ms: list[float]

    @property
    def answered_turns(self) -> int:
        return len(self.latencies_ms)

    @property
    def median_latency_ms(self) -> float | None:
        return metrics.median(self.latencies_ms)

    @property
    def p95_latency_ms(self) -> float | None:
        return metrics.percentile(self.latencies_ms, 0.95)


def _count_for_agent(
    model: type[Call] | type[TranscriptTurn] | type[ToolInvocation], call_path: str, **filters: Any
) -> Coalesce:
    """A correlated COUNT(*) of `model` rows whose call belongs to the outer agent profile."""
    counts = (
        model.objects.filter(**{f"{call_path}agent": OuterRef("pk")}, **filters)
        .order_by()
        .values(f"{call_path}agent")
        .annotate(n=Count("pk"))
        .values("n")
    )
    return Coalesce(Subquery(counts, output_field=IntegerField()), Value(0))


def agent_comparison(*, since: dt.datetime | None = None) -> list[AgentComparison]:
    """Every agent profile with its calls, failures, interruptions, tool calls and turn latencies
    over calls created at or after `since` (all time if None). Two queries, whatever the data size:
    the counts as correlated subqueries, then the latency events of those calls in one ordered scan.
    """
    window: dict[str, Any] = {} if since is None else {"created_at__gte": since}
    in_window: dict[str, Any] = {} if since is None else {"call__created_at__gte": since}
    profiles = list(
        AgentProfile.objects.annotate(
            call_count=_count_for_agent(Call, "", **window),
            failure_count=_count_for_agent(Call, "", status=Call.Status.FAILED, **window),
            interruption_count=_count_for_agent(TranscriptTurn, "call__", interrupted=True, **in_window),
            tool_count=_count_for_agent(ToolInvocation, "call__", **in_window),
        ).order_by("-is_default", "name")
    )
    rows = (
        Event.objects.filter(type__in=metrics.LATENCY_EVENT_TYPES, **in_window)
        .order_by("call_id", "sequence")
        .values_list("call__agent_id", "call_id", "type", "received_at")
    )
    latencies: dict[int, list[float]] = {}
    for (agent_id, _call_id), events in groupby(rows.iterator(), key=lambda row: (row[0], row[1])):
        per_call = metrics.turn_latencies_ms((event_type, at) for _, _, event_type, at in events)
        latencies.setdefault(agent_id, []).extend(per_call)
    return [
        AgentComparison(
            agent=profile,
            calls=profile.call_count,
            failures=profile.failure_count,
            interruptions=profile.interruption_count,
            tool_calls=profile.tool_count,
            latencies_ms=latencies.get(profile.pk, []),
        )
        for profile in profiles
    ]


# ---- call recordings -------------------------------------------------------------------------------


def get_recording_call(*, user: User | AnonymousUser, call_id: uuid.UUID, upload: bool) -> Call:
    """The call whose recording `user` may upload (`upload`: its owner only) or play back (its owner,
    or staff who may view calls in the admin); `Http404` otherwise, so others' call ids stay hidden."""
    call = Call.objects.select_related("agent").filter(pk=call_id).first()
    if call is None or not user.is_authenticated:
        raise Http404("No such call.")
    if call.user_id == user.pk:
        return call
    if not upload and user.is_staff and user.has_perm("calls.view_call"):
        return call
    raise Http404("No such call.")


def call_recording(*, call: Call) -> CallRecording | None:
    """The call's recording when anything was uploaded, else None (no player to show)."""
    return CallRecording.objects.filter(call=call, size__gt=0).first()
