"""/calls/ and /calls/<id>/ after the web-calls work: end reason, transport, tool calls, turn latency."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from calls.models import Call, Event
from tests.factories import CallFactory, ToolInvocationFactory, TranscriptTurnFactory

pytestmark = pytest.mark.django_db


def test_the_detail_page_shows_status_end_reason_duration_transport_and_latency(
    staff_client: Client, staff_user: User
) -> None:
    call = CallFactory.create(
        user=staff_user,
        transport=Call.Transport.DIRECT,
        end_reason="hung up by the user",
        usage={"total_tokens": 321},
    )
    t0 = call.created_at
    for sequence, (kind, ms) in enumerate(
        [("input_audio_buffer.speech_stopped", 0), ("output_audio_buffer.started", 735)], start=1
    ):
        Event.objects.create(
            call=call, sequence=sequence, type=kind, received_at=t0 + dt.timedelta(milliseconds=ms)
        )
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "hung up by the user" in body
    assert "Direct (ephemeral key)" in body
    assert "1:23" in body  # the factory's 83 s of talk
    assert "735 ms" in body
    assert "321" in body
    assert call.provider_call_id is not None and call.provider_call_id in body


def test_the_detail_page_lists_tool_calls_with_arguments_and_output(
    staff_client: Client, staff_user: User
) -> None:
    call = CallFactory.create(user=staff_user)
    ToolInvocationFactory.create(
        call=call, tool_name="get_weather", arguments={"city": "Oslo"}, output="sunny"
    )
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "get_weather" in body and "Oslo" in body and "sunny" in body


def test_an_interrupted_reply_is_marked(staff_client: Client, staff_user: User) -> None:
    call = CallFactory.create(user=staff_user)
    TranscriptTurnFactory.create(
        call=call, role="assistant", text="Let me explain the whole", interrupted=True
    )
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "Let me explain the whole" in body and "interrupted" in body


def test_the_list_shows_end_reasons_and_errors(staff_client: Client, staff_user: User) -> None:
    CallFactory.create(user=staff_user, end_reason="maximum duration reached")
    CallFactory.create(
        user=staff_user, status=Call.Status.FAILED, end_reason="", error="Upstream answered 503"
    )
    body = staff_client.get("/calls/").content.decode()
    assert "maximum duration reached" in body and "Upstream answered 503" in body


def test_the_detail_page_query_count_is_bounded(
    staff_client: Client, staff_user: User, django_assert_max_num_queries: Any
) -> None:
    call = CallFactory.create(user=staff_user)
    for n in range(10):
        TranscriptTurnFactory.create(call=call)
        ToolInvocationFactory.create(call=call)
        Event.objects.create(call=call, sequence=n + 1, type="input_audio_buffer.speech_stopped")
    with django_assert_max_num_queries(8):  # session, user, call, turns, tools, latency events, recording
        staff_client.get(f"/calls/{call.pk}/")
