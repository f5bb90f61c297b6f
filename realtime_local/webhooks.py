"""Signed webhooks, as OpenAI sends them (Standard Webhooks; protocol.md §7).

`sign` produces the three headers (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64>`)
with HMAC-SHA256 over `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the
`whsec_` secret — verifiable by the openai SDK's `webhooks.unwrap` and by svix's `Webhook.verify`.

`WebhookSender` delivers in the background with httpx: a per-attempt timeout, a bounded number of
attempts with exponential backoff, the *same* `webhook-id` on every retry (receivers deduplicate on
it) and a fresh timestamp and signature each time (receivers refuse stale timestamps).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import secrets
import string
import time
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

logger = logging.getLogger(__name__)

_ALPHABET = string.ascii_letters + string.digits


def new_webhook_event_id() -> str:
    """`evt_` + 24 random characters; used as both the envelope `id` and the `webhook-id` header."""
    return "evt_" + "".join(secrets.choice(_ALPHABET) for _ in range(24))


def sign(*, secret: str, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers for `body` (the exact bytes that will be sent)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode("ascii")
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{signature}",
    }


def event_envelope(*, event_id: str, event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    """The event object OpenAI posts (`{"object": "event", "id", "type", "created_at", "data"}`)."""
    return {
        "object": "event",
        "id": event_id,
        "type": event_type,
        "created_at": int(time.time()),
        "data": data,
    }


@dataclass
class Delivery:
    """The outcome of one webhook event, for logs, tests and the health endpoint."""

    event_id: str
    event_type: str
    status: Literal["pending", "delivered", "failed"] = "pending"
    attempts: int = 0
    last_status_code: int | None = None
    last_error: str | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class WebhookSender:
    """Background, retried delivery of signed events to one URL. Create inside the running loop."""

    def __init__(
        self,
        *,
        url: str | None,
        secret: str,
        timeout: float = 5.0,
        max_attempts: int = 5,
        backoff: float = 0.5,
        max_remembered: int = 100,
    ) -> None:
        self.url = url
        self._secret = secret
        self._max_attempts = max_attempts
        self._backoff = backoff
        self._client = httpx.AsyncClient(timeout=httpx.Timeout(timeout), follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self._max_remembered = max_remembered
        #: Recent deliveries by event id (oldest dropped first), so callers can await or inspect them.
        self.deliveries: dict[str, Delivery] = {}

    def send(self, event_type: str, data: dict[str, Any]) -> Delivery:
        """Queue one event for delivery and return its `Delivery` (already `failed` without a URL)."""
        event_id = new_webhook_event_id()
        delivery = Delivery(event_id=event_id, event_type=event_type)
        self.deliveries[event_id] = delivery
        while len(self.deliveries) > self._max_remembered:
            del self.deliveries[next(iter(self.deliveries))]
        if self.url is None:
            delivery.status = "failed"
            delivery.last_error = "no webhook URL configured"
            delivery.done.set()
            logger.info("webhook %s (%s) not sent: no webhook URL configured", event_id, event_type)
            return delivery
        body = json.dumps(event_envelope(event_id=event_id, event_type=event_type, data=data)).encode()
        task = asyncio.get_running_loop().create_task(self._deliver(self.url, delivery, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return delivery

    async def _deliver(self, url: str, delivery: Delivery, body: bytes) -> None:
        try:
            for attempt in range(1, self._max_attempts + 1):
                delivery.attempts = attempt
                headers = sign(
                    secret=self._secret, webhook_id=delivery.event_id, timestamp=int(time.time()), body=body
                )
                headers["content-type"] = "application/json"
                try:
                    response = await self._client.post(url, content=body, headers=headers)
                except httpx.HTTPError as exc:
                    delivery.last_error = f"{type(exc).__name__}: {exc}"
                else:
                    delivery.last_status_code = response.status_code
                    if response.is_success:
                        delivery.status = "delivered"
                        logger.info("webhook %s delivered (attempt %d)", delivery.event_id, attempt)
                        return
                    delivery.last_error = f"HTTP {response.status_code}"
                if attempt < self._max_attempts:
                    await asyncio.sleep(self._backoff * 2 ** (attempt - 1))
            delivery.status = "failed"
            logger.warning(
                "webhook %s failed after %d attempts: %s",
                delivery.event_id,
                delivery.attempts,
                delivery.last_error,
            )
        finally:
            delivery.done.set()

    async def close(self) -> None:
        """Stop pending deliveries and close the HTTP client (engine shutdown)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._client.aclose()
