"""Model invariants and the data the migrations provide."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from calls.models import AgentProfile, Call, Event
from calls.selectors import default_agent_profile
from tests.factories import AgentProfileFactory, CallFactory, EventFactory, TranscriptTurnFactory

pytestmark = pytest.mark.django_db


def test_the_data_migration_created_the_default_agent_profile() -> None:
    profile = default_agent_profile()
    assert profile.instructions == "Greet the user in English. Keep replies brief and conversational."
    assert profile.voice == "marin"
    assert profile.model == "gpt-realtime"
    assert profile.tools == []
    assert profile.turn_detection is not None and profile.turn_detection["type"] == "server_vad"


def test_only_one_agent_profile_can_be_the_default() -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        AgentProfileFactory.create(is_default=True)
    AgentProfileFactory.create(is_default=False)
    AgentProfileFactory.create(is_default=False)
    assert AgentProfile.objects.filter(is_default=True).count() == 1


def test_a_second_default_fails_validation_with_a_readable_message() -> None:
    with pytest.raises(ValidationError, match="already the default"):
        AgentProfile(name="Second", is_default=True).full_clean()


def test_event_sequence_is_unique_per_call() -> None:
    call = CallFactory.create()
    EventFactory.create(call=call, sequence=1)
    EventFactory.create(call=CallFactory.create(), sequence=1)  # another call may reuse the number
    with pytest.raises(IntegrityError), transaction.atomic():
        EventFactory.create(call=call, sequence=1)


def test_events_come_back_in_sequence_order() -> None:
    call = CallFactory.create()
    for sequence in (3, 1, 2):
        EventFactory.create(call=call, sequence=sequence)
    assert [e.sequence for e in Event.objects.filter(call=call)] == [1, 2, 3]


def test_transcript_item_ids_are_unique_per_call() -> None:
    call = CallFactory.create()
    TranscriptTurnFactory.create(call=call, item_id="item_1")
    with pytest.raises(IntegrityError), transaction.atomic():
        TranscriptTurnFactory.create(call=call, item_id="item_1")


def test_provider_call_id_is_unique_but_may_be_unknown() -> None:
    CallFactory.create(provider_call_id=None)
    CallFactory.create(provider_call_id=None)
    CallFactory.create(provider_call_id="rtc_same")
    with pytest.raises(IntegrityError), transaction.atomic():
        CallFactory.create(provider_call_id="rtc_same")


def test_duration_runs_from_answer_to_end() -> None:
    answered = timezone.now() - dt.timedelta(minutes=3)
    call = CallFactory.build(answered_at=answered, ended_at=answered + dt.timedelta(seconds=95))
    assert call.duration == dt.timedelta(seconds=95)


def test_duration_of_a_live_call_grows_and_of_an_unanswered_call_is_none() -> None:
    live = CallFactory.build(
        status=Call.Status.ACTIVE, answered_at=timezone.now() - dt.timedelta(seconds=10), ended_at=None
    )
    assert live.duration is not None and live.duration >= dt.timedelta(seconds=10)
    unanswered = CallFactory.build(status=Call.Status.REJECTED, answered_at=None, ended_at=None)
    assert unanswered.duration is None


def test_an_agent_profile_in_use_cannot_be_deleted() -> None:
    from django.db.models import ProtectedError

    call = CallFactory.create()
    with pytest.raises(ProtectedError):
        call.agent.delete()
