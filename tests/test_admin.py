"""The admin as the review tool: filters, search, a read-only call page, and bounded queries."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from calls.models import AgentProfile, Call, Event, TranscriptTurn
from tests.factories import (
    AgentProfileFactory,
    CallFactory,
    SipCallFactory,
    ToolInvocationFactory,
    TranscriptTurnFactory,
    WebhookDeliveryFactory,
    add_events,
)

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/calls/call/"


def _make_calls(count: int, *, events_each: int, user: User | None = None) -> list[Call]:
    agent = AgentProfileFactory.create()
    calls = []
    for _ in range(count):
        call = CallFactory.create(agent=agent, user=user)
        add_events(call, events_each)
        TranscriptTurnFactory.create(call=call)
        calls.append(call)
    return calls


def _queries_for(client: Client, url: str) -> int:
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url)
    assert response.status_code == 200
    return len(captured.captured_queries)


def test_call_changelist_queries_do_not_grow_with_calls(
    admin_client: Client, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    _make_calls(5, events_each=20)
    few = _queries_for(admin_client, CHANGELIST)
    _make_calls(45, events_each=20)
    with django_assert_max_num_queries(few):
        response = admin_client.get(CHANGELIST)
    assert len(response.context["cl"].result_list) == 50
    assert few <= 12


def test_call_changelist_shows_counts_duration_and_who(admin_client: Client) -> None:
    call = CallFactory.create()
    add_events(call, 20)
    TranscriptTurnFactory.create(call=call)
    SipCallFactory.create(caller_number="+15550123")
    body = admin_client.get(CHANGELIST).content.decode()
    assert "1:23" in body  # duration column
    assert call.user is not None and call.user.username in body
    assert "+15550123" in body
    assert ">20<" in body  # event count column


def test_call_change_page_queries_do_not_grow_with_events(
    admin_client: Client, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    small = CallFactory.create()
    add_events(small, 20)
    big = CallFactory.create()
    add_events(big, 200)
    for call in (small, big):
        TranscriptTurnFactory.create_batch(10, call=call)
        ToolInvocationFactory.create_batch(3, call=call)
    few = _queries_for(admin_client, f"{CHANGELIST}{small.pk}/change/")
    with django_assert_max_num_queries(few):
        admin_client.get(f"{CHANGELIST}{big.pk}/change/")
    assert few <= 20


def test_call_page_shows_the_conversation_and_events_in_order(admin_client: Client) -> None:
    call = CallFactory.create()
    start = timezone.now()
    TranscriptTurnFactory.create(call=call, role="assistant", text="Welcome to the demo.", started_at=start)
    TranscriptTurnFactory.create(
        call=call, role="user", text="Tell me a joke.", started_at=start + dt.timedelta(seconds=2)
    )
    for sequence, type_ in [(2, "response.done"), (1, "session.created"), (3, "custom.unknown")]:
        Event.objects.create(call=call, sequence=sequence, type=type_, payload={"type": type_, "n": sequence})
    body = admin_client.get(f"{CHANGELIST}{call.pk}/change/").content.decode()
    assert body.index("Welcome to the demo.") < body.index("Tell me a joke.")
    assert 'class="bubble bubble-assistant"' in body and 'class="bubble bubble-user"' in body
    events = body[body.index('id="events"') :]
    assert events.index("session.created") < events.index("response.done") < events.index("custom.unknown")
    assert "<details>" in events  # payloads are collapsed
    assert "&quot;n&quot;: 3" in body  # and pretty-printed


def test_calls_and_their_history_are_read_only_in_the_admin(admin_client: Client) -> None:
    call = CallFactory.create(status=Call.Status.ENDED)
    assert admin_client.get(f"{CHANGELIST}add/").status_code == 403
    response = admin_client.post(f"{CHANGELIST}{call.pk}/change/", {"status": "active"})
    assert response.status_code == 403
    call.refresh_from_db()
    assert call.status == Call.Status.ENDED
    for model in ("event", "transcriptturn", "toolinvocation", "webhookdelivery"):
        assert admin_client.get(f"/admin/calls/{model}/add/").status_code == 403, model


def test_event_rows_cannot_be_edited(admin_client: Client) -> None:
    call = CallFactory.create()
    event = Event.objects.create(call=call, sequence=1, type="session.created", payload={"a": 1})
    response = admin_client.post(f"/admin/calls/event/{event.pk}/change/", {"type": "changed"})
    assert response.status_code == 403
    event.refresh_from_db()
    assert event.type == "session.created"
    turn = TranscriptTurnFactory.create(text="original")
    admin_client.post(f"/admin/calls/transcriptturn/{turn.pk}/change/", {"text": "changed"})
    turn.refresh_from_db()
    assert turn.text == "original"


@pytest.mark.parametrize(
    ("query", "field"),
    [("capital of France", "transcript"), ("+15550199", "caller"), ("rtc_findme", "provider id")],
)
def test_search_finds_calls_by_transcript_caller_and_provider_id(
    admin_client: Client, query: str, field: str
) -> None:
    wanted = SipCallFactory.create(caller_number="+15550199", provider_call_id="rtc_findme")
    TranscriptTurnFactory.create(call=wanted, text="What is the capital of France?")
    TranscriptTurnFactory.create(call=wanted, text="Paris is the capital of France.", role="assistant")
    other = CallFactory.create()
    TranscriptTurnFactory.create(call=other, text="Something else.")
    response = admin_client.get(CHANGELIST, {"q": query})
    assert [c.pk for c in response.context["cl"].result_list] == [wanted.pk], field


def test_search_by_exact_call_id(admin_client: Client) -> None:
    wanted = CallFactory.create()
    CallFactory.create()
    response = admin_client.get(CHANGELIST, {"q": str(wanted.pk)})
    assert [c.pk for c in response.context["cl"].result_list] == [wanted.pk]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"source__exact": "sip"}, "sip"),
        ({"status__exact": "failed"}, "failed"),
        ({"mode__exact": "webcam"}, "webcam"),
    ],
)
def test_filters_narrow_the_list(admin_client: Client, params: dict[str, str], expected: str) -> None:
    sip = SipCallFactory.create()
    failed = CallFactory.create(status=Call.Status.FAILED)
    webcam = CallFactory.create(mode=Call.Mode.WEBCAM)
    CallFactory.create()
    by_name = {"sip": sip, "failed": failed, "webcam": webcam}
    response = admin_client.get(CHANGELIST, params)
    assert [c.pk for c in response.context["cl"].result_list] == [by_name[expected].pk]


def test_filter_by_agent_and_by_date(admin_client: Client) -> None:
    special = AgentProfileFactory.create(name="Support")
    mine = CallFactory.create(agent=special)
    old = CallFactory.create(created_at=timezone.now() - dt.timedelta(days=40))
    response = admin_client.get(CHANGELIST, {"agent__id__exact": special.pk})
    assert [c.pk for c in response.context["cl"].result_list] == [mine.pk]
    since = (timezone.now() - dt.timedelta(days=7)).isoformat()
    response = admin_client.get(CHANGELIST, {"created_at__gte": since})
    assert old.pk not in [c.pk for c in response.context["cl"].result_list]


@pytest.mark.parametrize("model", ["event", "transcriptturn", "toolinvocation", "webhookdelivery"])
def test_history_changelists_do_not_grow_with_rows(
    admin_client: Client, model: str, django_assert_max_num_queries: Callable[..., Any]
) -> None:
    def add_rows(n: int) -> None:
        for _ in range(n):
            call = CallFactory.create()
            add_events(call, 2)
            TranscriptTurnFactory.create(call=call)
            ToolInvocationFactory.create(call=call)
            WebhookDeliveryFactory.create(call=call)

    add_rows(2)
    few = _queries_for(admin_client, f"/admin/calls/{model}/")
    add_rows(20)
    with django_assert_max_num_queries(few):
        admin_client.get(f"/admin/calls/{model}/")


def test_agent_profiles_are_editable(admin_client: Client) -> None:
    profile = AgentProfile.objects.get(is_default=True)
    response = admin_client.post(
        f"/admin/calls/agentprofile/{profile.pk}/change/",
        {
            "name": profile.name,
            "is_default": "on",
            "instructions": "Speak like a pirate.",
            "voice": "cedar",
            "model": "gpt-realtime",
            "turn_detection": '{"type": "semantic_vad", "eagerness": "auto"}',
        },
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    profile.refresh_from_db()
    assert profile.instructions == "Speak like a pirate."
    assert profile.voice == "cedar"


def test_the_admin_refuses_a_second_default_profile_with_a_message(admin_client: Client) -> None:
    response = admin_client.post(
        "/admin/calls/agentprofile/add/",
        {
            "name": "Another",
            "is_default": "on",
            "instructions": "Hi.",
            "voice": "marin",
            "model": "gpt-realtime",
            "turn_detection": "null",
        },
    )
    assert response.status_code == 200
    assert "already the default" in response.content.decode()
    assert not AgentProfile.objects.filter(name="Another").exists()


def test_a_transcript_turn_count_is_shown_per_call(admin_client: Client) -> None:
    call = CallFactory.create()
    TranscriptTurnFactory.create_batch(4, call=call)
    response = admin_client.get(CHANGELIST)
    (row,) = response.context["cl"].result_list
    assert row.turn_count == 4 and TranscriptTurn.objects.count() == 4
