"""Fixtures of the phone-call tests: the local engine signs real webhooks; we replay them into Django.

`signed_incoming_call(**body)` creates a SIP-style call on the engine (`POST
/v1/realtime/_local/incoming_calls`), lets the engine sign and post its `realtime.call.incoming`
webhook to a loopback receiver, and returns the captured request (raw bytes and headers) with the
provider call id. `post_webhook` sends such bytes and headers to `/telephony/webhook` through
Django's `AsyncClient`: the same bytes the engine signed, so verification is real.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

from realtime_local.webhooks import sign
from tests.engine.conftest import (
    WEBHOOK_SECRET,
    RunningEngine,
    StartEngine,
    WebhookReceiver,
    start_engine,
    webhook_receiver,
)
from tests.web.conftest import (
    channel_layer,
    close_async_orm_connections,
    default_agent,
    fake_upstream,
    observer_inbox,
    observer_worker,
    point_settings_at,
)

__all__ = [
    "channel_layer",
    "close_async_orm_connections",
    "default_agent",
    "fake_upstream",
    "observer_inbox",
    "observer_worker",
    "start_engine",
    "webhook_receiver",
]

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedASGIResponse as Response

WEBHOOK_PATH = "/telephony/webhook"


@dataclass(frozen=True)
class Captured:
    """A webhook request as the engine sent it."""

    body: bytes
    headers: dict[str, str]
    provider_call_id: str

    @property
    def webhook_headers(self) -> dict[str, str]:
        return {k.lower(): v for k, v in self.headers.items() if k.lower().startswith("webhook-")}


def signed_headers(
    body: bytes,
    *,
    webhook_id: str = "evt_test0000000000000000001",
    at: int | None = None,
    secret: str = WEBHOOK_SECRET,
) -> dict[str, str]:
    """Headers signing `body` exactly as the engine (and OpenAI) sign."""
    return sign(
        secret=secret, webhook_id=webhook_id, timestamp=int(time.time()) if at is None else at, body=body
    )


def envelope(event_type: str = "realtime.call.incoming", **data: Any) -> bytes:
    return json.dumps(
        {"object": "event", "id": "evt_x", "type": event_type, "created_at": int(time.time()), "data": data}
    ).encode()


async def post_webhook(
    body: bytes, headers: dict[str, str], *, client: AsyncClient | None = None
) -> Response:
    """POST `body` with `headers` to the webhook view (as application/json)."""
    client = client or AsyncClient()
    response: Response = await client.post(
        WEBHOOK_PATH, data=body, content_type="application/json", headers=headers
    )
    return response


@pytest.fixture
async def phone_engine(
    start_engine: StartEngine, webhook_receiver: WebhookReceiver, settings: SettingsWrapper
) -> RunningEngine:
    """A speech-less engine that signs webhooks with the test secret and posts them to the receiver;
    the product's settings point at it and verify with the same secret."""
    engine = await start_engine(webhook_url=webhook_receiver.url)
    point_settings_at(settings, base_url=engine.base_url, api_key=engine.config.api_key)
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    settings.TELEPHONY_MAX_CONCURRENT_CALLS = None
    settings.TELEPHONY_BUSINESS_HOURS = ""
    return engine


@pytest.fixture
def signed_incoming_call(
    phone_engine: RunningEngine, webhook_receiver: WebhookReceiver
) -> Callable[..., Awaitable[Captured]]:
    async def make(**body: Any) -> Captured:
        call_id = await phone_engine.incoming_call(**body)
        received = await webhook_receiver.next()
        return Captured(body=received.body, headers=received.headers, provider_call_id=call_id)

    return make


@pytest.fixture(autouse=True)
async def background_answers_finish() -> AsyncIterator[None]:
    """Let the accepts/rejects a test's deliveries started finish before the engine stops."""
    yield
    from telephony.services import wait_for_answers

    await wait_for_answers(grace_s=10)
