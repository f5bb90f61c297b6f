"""/calls/compare/: agent profiles side by side, from stored events, in a bounded number of queries."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.models import AgentProfile, Call, Event
from calls.selectors import agent_comparison
from tests.factories import (
    AgentProfileFactory,
    CallFactory,
    ToolInvocationFactory,
    TranscriptTurnFactory,
)

pytestmark = pytest.mark.django_db


def add_turns(call: Call, latencies_ms: list[int]) -> None:
    """Store speech_stopped → first transcript delta pairs with the given gaps (one bulk insert)."""
    start = call.created_at
    rows: list[Event] = []
    for n, gap in enumerate(latencies_ms):
        stopped = start + dt.timedelta(seconds=10 * n)
        for offset, kind in (
            (0, "input_audio_buffer.speech_stopped"),
            (gap, "response.output_audio_transcript.delta"),
        ):
            rows.append(
                Event(
                    call=call,
                    sequence=len(rows) + 1,
                    type=kind,
                    payload={"type": kind},
                    received_at=stopped + dt.timedelta(milliseconds=offset),
                )
            )
    Event.objects.bulk_create(rows)


def test_each_profile_gets_its_own_calls_latency_interruptions_tools_and_failures() -> None:
    fast = AgentProfileFactory.create(name="Fast", voice="alloy", model="gpt-realtime-mini")
    slow = AgentProfileFactory.create(name="Slow", voice="cedar", model="gpt-realtime")
    first = CallFactory.create(agent=fast)
    add_turns(first, [400, 600])
    add_turns(CallFactory.create(agent=fast), [500])
    TranscriptTurnFactory.create(call=first, role="assistant", interrupted=True)
    ToolInvocationFactory.create(call=first)
    failed = CallFactory.create(agent=slow, status=Call.Status.FAILED)
    add_turns(failed, [1500])

    rows = {row.agent.name: row for row in agent_comparison()}

    assert rows["Fast"].calls == 2
    assert sorted(rows["Fast"].latencies_ms) == [400.0, 500.0, 600.0]  # calls come in id order
    assert rows["Fast"].median_latency_ms == 500.0
    assert rows["Fast"].p95_latency_ms == pytest.approx(590.0)
    assert (rows["Fast"].interruptions, rows["Fast"].tool_calls, rows["Fast"].failures) == (1, 1, 0)
    assert rows["Slow"].calls == 1 and rows["Slow"].failures == 1
    assert rows["Slow"].median_latency_ms == 1500.0
    assert rows["Default"].calls == 0 and rows["Default"].median_latency_ms is None


def test_calls_before_the_period_are_left_out() -> None:
    agent = AgentProfileFactory.create(name="Periodic")
    old = CallFactory.create(agent=agent, created_at=timezone.now() - dt.timedelta(days=40))
    add_turns(old, [900])
    ToolInvocationFactory.create(call=old)
    recent = CallFactory.create(agent=agent)
    add_turns(recent, [300])

    row = next(r for r in agent_comparison(since=timezone.now() - dt.timedelta(days=30)) if r.agent == agent)

    assert (row.calls, row.latencies_ms, row.tool_calls) == (1, [300.0], 0)


def test_the_page_shows_profiles_side_by_side(staff_client: Client) -> None:
    agent = AgentProfileFactory.create(name="Cedar voice", voice="cedar", model="gpt-realtime")
    add_turns(CallFactory.create(agent=agent), [812, 1200])
    response = staff_client.get("/calls/compare/?period=all")
    assert response.status_code == 200
    body = response.content.decode()
    assert 'data-agent="Cedar voice"' in body and "Cedar" in body and "gpt-realtime" in body
    assert "1006 ms" in body  # the median of 812 and 1200
    assert 'href="/calls/compare/"' in body  # linked in the nav


def test_an_unknown_period_falls_back_to_thirty_days(staff_client: Client) -> None:
    response = staff_client.get("/calls/compare/?period=forever")
    assert response.status_code == 200
    assert response.context["period"][0] == "30"


def test_the_page_is_for_staff_only(plain_client: Client) -> None:
    assert plain_client.get("/calls/compare/").status_code == 403


def test_anonymous_visitors_are_sent_to_the_login_page(client: Client) -> None:
    response = client.get("/calls/compare/")
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_the_query_count_does_not_grow_with_profiles_calls_or_events(
    staff_client: Client, staff_user: User, django_assert_max_num_queries: Any
) -> None:
    for n in range(6):
        agent = AgentProfileFactory.create(name=f"Agent {n}")
        for _ in range(3):
            call = CallFactory.create(agent=agent, user=staff_user)
            add_turns(call, [300 + n, 400 + n])
            TranscriptTurnFactory.create(call=call, interrupted=True)
            ToolInvocationFactory.create(call=call)
    with django_assert_max_num_queries(5):  # session, user, profiles with counts, latency events
        response = staff_client.get("/calls/compare/?period=all")
    assert len(response.context["rows"]) == AgentProfile.objects.count()
