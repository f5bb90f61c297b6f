# factory_boy's declarations (Sequence, SubFactory, …) carry no annotations.
# mypy: disallow-untyped-calls=False
"""factory_boy factories for the Django models (real rows in the test database)."""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import factory
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.utils import timezone
from factory.declarations import LazyAttribute, LazyFunction, Sequence, SubFactory

from calls.models import AgentProfile, Call, Event, ToolInvocation, TranscriptTurn, WebhookDelivery

PASSWORD = "correct-horse-battery-staple"


@functools.cache
def _password_hash(raw: str) -> str:
    """Hash once per password: the real hasher is deliberately slow, and tests make many users."""
    return make_password(raw)


class UserFactory(factory.django.DjangoModelFactory[User]):
    class Meta:
        model = User
        django_get_or_create = ("username",)

    username = Sequence(lambda n: f"user{n}")
    email = LazyAttribute(lambda u: f"{u.username}@example.test")
    is_staff = False
    password = LazyFunction(lambda: _password_hash(PASSWORD))


class StaffUserFactory(UserFactory):
    username = Sequence(lambda n: f"staff{n}")
    is_staff = True


class AgentProfileFactory(factory.django.DjangoModelFactory[AgentProfile]):
    class Meta:
        model = AgentProfile

    name = Sequence(lambda n: f"Agent {n}")
    instructions = "Answer briefly."
    voice = "marin"
    model = "gpt-realtime"


class CallFactory(factory.django.DjangoModelFactory[Call]):
    class Meta:
        model = Call

    provider_call_id = Sequence(lambda n: f"rtc_test{n:06d}")
    source = Call.Source.WEB
    mode = Call.Mode.AUDIO
    transport = Call.Transport.PROXY
    user: Any = SubFactory(StaffUserFactory)
    agent = SubFactory(AgentProfileFactory)
    status = Call.Status.ENDED
    created_at = LazyFunction(lambda: timezone.now() - dt.timedelta(minutes=5))
    answered_at = LazyAttribute(lambda c: c.created_at + dt.timedelta(seconds=1))
    ended_at = LazyAttribute(lambda c: c.answered_at + dt.timedelta(seconds=83))
    end_reason = "hangup"


class SipCallFactory(CallFactory):
    source = Call.Source.SIP
    mode = Call.Mode.PHONE
    transport = Call.Transport.SIP
    user = None
    caller_number = Sequence(lambda n: f"+1555010{n:04d}")


class EventFactory(factory.django.DjangoModelFactory[Event]):
    class Meta:
        model = Event

    call = SubFactory(CallFactory)
    sequence = Sequence(lambda n: n + 1)
    type = "session.updated"
    payload = LazyAttribute(lambda e: {"type": e.type, "event_id": f"event_{e.sequence}"})


class TranscriptTurnFactory(factory.django.DjangoModelFactory[TranscriptTurn]):
    class Meta:
        model = TranscriptTurn

    call = SubFactory(CallFactory)
    item_id = Sequence(lambda n: f"item_{n:06d}")
    role = TranscriptTurn.Role.USER
    text = "Hello there."


class ToolInvocationFactory(factory.django.DjangoModelFactory[ToolInvocation]):
    class Meta:
        model = ToolInvocation

    call = SubFactory(CallFactory)
    function_call_id = Sequence(lambda n: f"call_{n:06d}")
    tool_name = "get_time"
    arguments = LazyFunction(lambda: {"timezone": "UTC"})
    output = '{"time": "12:00"}'
    status = ToolInvocation.Status.COMPLETED
    duration_ms = 12


class WebhookDeliveryFactory(factory.django.DjangoModelFactory[WebhookDelivery]):
    class Meta:
        model = WebhookDelivery

    webhook_id = Sequence(lambda n: f"wh_{n:06d}")
    type = "realtime.call.incoming"
    outcome = WebhookDelivery.Outcome.ACCEPTED


def add_events(call: Call, count: int, *, start: int = 1) -> list[Event]:
    """Bulk-insert `count` events on `call` (one query), numbered from `start`."""
    now = timezone.now()
    return Event.objects.bulk_create(
        Event(
            call=call,
            sequence=start + i,
            type="response.output_audio_transcript.delta" if i % 2 else "input_audio_buffer.speech_started",
            payload={"type": "response.output_audio_transcript.delta", "delta": f"word {i}"},
            received_at=now + dt.timedelta(milliseconds=i),
        )
        for i in range(count)
    )
