"""/calls/ and /calls/<id>/: a staff member's own calls and transcripts, nobody else's."""

from __future__ import annotations

import datetime as dt

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from calls.views.history import CALLS_PER_PAGE
from tests.factories import CallFactory, StaffUserFactory, ToolInvocationFactory, TranscriptTurnFactory

pytestmark = pytest.mark.django_db


def test_the_list_shows_only_my_calls_newest_first(staff_client: Client, staff_user: User) -> None:
    now = timezone.now()
    older = CallFactory.create(user=staff_user, created_at=now - dt.timedelta(hours=2))
    newer = CallFactory.create(user=staff_user, created_at=now - dt.timedelta(hours=1))
    someone_elses = CallFactory.create(user=StaffUserFactory.create())
    response = staff_client.get("/calls/")
    assert response.status_code == 200
    assert list(response.context["calls"]) == [newer, older]
    body = response.content.decode()
    assert f"/calls/{newer.pk}/" in body and f"/calls/{older.pk}/" in body
    assert str(someone_elses.pk) not in body


def test_the_list_is_paginated(staff_client: Client, staff_user: User) -> None:
    now = timezone.now()
    for i in range(CALLS_PER_PAGE + 3):
        CallFactory.create(user=staff_user, created_at=now - dt.timedelta(minutes=i))
    first = staff_client.get("/calls/")
    second = staff_client.get("/calls/?page=2")
    assert len(first.context["calls"]) == CALLS_PER_PAGE
    assert len(second.context["calls"]) == 3
    assert not set(first.context["calls"]) & set(second.context["calls"])
    assert "Older →" in first.content.decode()


def test_the_list_query_count_does_not_grow_with_calls(
    staff_client: Client, staff_user: User, django_assert_max_num_queries
) -> None:
    for _ in range(CALLS_PER_PAGE):
        call = CallFactory.create(user=staff_user)
        TranscriptTurnFactory.create(call=call)
    with django_assert_max_num_queries(6):  # session, user, count, page
        staff_client.get("/calls/")


def test_an_empty_history_says_so(staff_client: Client) -> None:
    assert "No calls yet." in staff_client.get("/calls/").content.decode()


def test_my_transcript_page_shows_the_conversation_in_order(staff_client: Client, staff_user: User) -> None:
    call = CallFactory.create(user=staff_user)
    start = timezone.now()
    TranscriptTurnFactory.create(call=call, role="assistant", text="Hi! How can I help?", started_at=start)
    TranscriptTurnFactory.create(
        call=call, role="user", text="What time is it?", started_at=start + dt.timedelta(seconds=3)
    )
    TranscriptTurnFactory.create(
        call=call,
        role="assistant",
        text="It is noon.",
        started_at=start + dt.timedelta(seconds=5),
        interrupted=True,
    )
    ToolInvocationFactory.create(call=call, tool_name="get_time")
    response = staff_client.get(f"/calls/{call.pk}/")
    body = response.content.decode()
    assert response.status_code == 200
    assert body.index("Hi! How can I help?") < body.index("What time is it?") < body.index("It is noon.")
    assert "interrupted" in body
    assert "get_time" in body
    assert "1:23" in body  # the factory's 83 s call


def test_another_users_transcript_page_is_a_404(staff_client: Client) -> None:
    other = CallFactory.create(user=StaffUserFactory.create())
    TranscriptTurnFactory.create(call=other, text="secret words")
    response = staff_client.get(f"/calls/{other.pk}/")
    assert response.status_code == 404
    assert "secret words" not in response.content.decode()


def test_a_phone_call_without_user_is_a_404_on_the_history_page(staff_client: Client) -> None:
    call = CallFactory.create(user=None, source="sip", mode="phone", caller_number="+15550100")
    assert staff_client.get(f"/calls/{call.pk}/").status_code == 404


def test_an_unknown_call_id_is_a_404(staff_client: Client) -> None:
    assert staff_client.get("/calls/00000000-0000-0000-0000-000000000000/").status_code == 404
