"""What the observer tells live consoles, through the channel layer group `call.<call uuid>`.

Messages (Channels `type`s are handled by `calls.consumers.CallEventsConsumer`):
- `{"type": "call.events", "events": [{"sequence": int, "event": {...}}, ...]}` — stored events, in
  order, sent only after the batch that holds them committed;
- `{"type": "call.status", "status": str, "end_reason": str | None, "error": str | None}`.
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.layers import get_channel_layer

#: Events per group message: keeps each message small (channels_redis) and few (capacity).
EVENTS_PER_MESSAGE = 50


def call_group(call_id: uuid.UUID | str) -> str:
    """The channel layer group of a call's live listeners."""
    return f"call.{call_id}"


async def publish_events(call_id: uuid.UUID, events: list[tuple[int, dict[str, Any]]]) -> None:
    layer = get_channel_layer()
    if layer is None or not events:
        return
    for start in range(0, len(events), EVENTS_PER_MESSAGE):
        chunk = events[start : start + EVENTS_PER_MESSAGE]
        await layer.group_send(
            call_group(call_id),
            {"type": "call.events", "events": [{"sequence": seq, "event": event} for seq, event in chunk]},
        )


def status_message(status: str, end_reason: str, error: str) -> dict[str, Any]:
    """The console's status message (empty strings become null)."""
    return {"type": "status", "status": status, "end_reason": end_reason or None, "error": error or None}


async def publish_status(call_id: uuid.UUID, *, status: str, end_reason: str = "", error: str = "") -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    message = status_message(status, end_reason, error)
    await layer.group_send(call_group(call_id), {**message, "type": "call.status"})
