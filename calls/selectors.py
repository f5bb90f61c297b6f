"""Reads that several views share. Plain functions with keyword-only arguments; no writes here."""

from __future__ import annotations

import uuid

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Count, IntegerField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Coalesce
from django.http import Http404

from calls.models import AgentProfile, Call, Event, ToolInvocation, TranscriptTurn


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
