"""The live console stream: WebSocket ``/ws/calls/<call uuid>/`` (owner only, session auth).

On connect the consumer joins the call's group ``call.<uuid>`` first, then sends the call's status
and every stored event (ordered by sequence), then the live ones the observer publishes; because the
observer publishes only what it has committed, nothing falls between the two, and an event both read
from the database and received live is sent once (the consumer skips sequences it already sent; the
browser dedupes by ``sequence`` as well).

Messages to the browser (JSON text):
- ``{"type": "event", "sequence": int, "event": {...server event as received...}}``
- ``{"type": "status", "status": "connecting|active|ended|failed|...", "end_reason": str|null,
  "error": str|null}``

Close codes: 4403 for an anonymous user or a call of someone else, 4404 for an unknown call. The
socket is accepted before it is closed, so that the browser sees the code (a refused handshake
would only say 403).
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from calls.models import Call, Event
from calls.observer.publish import call_group, status_message

CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
#: Stored events read per query when a console connects.
EVENTS_PAGE = 500


def _owned_call(user: Any, call_id: uuid.UUID) -> tuple[int, Call | None]:
    """(close code, call): 0 and the call when `user` may watch it."""
    if user is None or not user.is_authenticated or not user.is_active or not user.is_staff:
        return CLOSE_FORBIDDEN, None
    call = Call.objects.filter(pk=call_id).only("id", "user_id", "status", "end_reason", "error").first()
    if call is None:
        return CLOSE_NOT_FOUND, None
    if call.user_id != user.pk:
        return CLOSE_FORBIDDEN, None
    return 0, call


def _stored_events(call_id: uuid.UUID, after: int) -> list[tuple[int, dict[str, Any]]]:
    rows = (
        Event.objects.filter(call_id=call_id, sequence__gt=after)
        .order_by("sequence")
        .values_list("sequence", "payload")[:EVENTS_PAGE]
    )
    return list(rows)


class CallEventsConsumer(AsyncJsonWebsocketConsumer):  # type: ignore[misc]
    """Streams one call's events and status changes to its owner's console."""

    call_id: uuid.UUID
    group: str | None = None
    last_sequence = 0

    async def connect(self) -> None:
        self.call_id = self.scope["url_route"]["kwargs"]["call_id"]
        code, call = await database_sync_to_async(_owned_call)(self.scope.get("user"), self.call_id)
        await self.accept()
        if call is None:
            await self.close(code=code)
            return
        # Join before reading: whatever commits after the read arrives live (and is deduped).
        self.group = call_group(self.call_id)
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.send_json(status_message(call.status, call.end_reason, call.error))
        while True:
            page = await database_sync_to_async(_stored_events)(self.call_id, self.last_sequence)
            for sequence, payload in page:
                await self._send_event(sequence, payload)
            if len(page) < EVENTS_PAGE:
                break

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        """The stream is one-way; whatever the browser sends is ignored."""

    # ---- group messages from the observer ---------------------------------------------------------

    async def call_events(self, message: dict[str, Any]) -> None:
        for item in message.get("events", []):
            await self._send_event(int(item["sequence"]), item["event"])

    async def call_status(self, message: dict[str, Any]) -> None:
        await self.send_json(
            status_message(
                str(message["status"]), message.get("end_reason") or "", message.get("error") or ""
            )
        )

    async def _send_event(self, sequence: int, event: Any) -> None:
        if sequence <= self.last_sequence:
            return
        self.last_sequence = sequence
        await self.send_json({"type": "event", "sequence": sequence, "event": event})
