"""How the rest of the product asks the observer to watch or stop watching a call.

The observer runs in a Channels worker (``manage.py runworker call-observer``, or embedded inside
``manage.py serve``); any web process reaches it through the channel layer, so these functions work
the same with the in-memory layer (one process) and with channels_redis (many processes).
Callers send these after their database transaction committed, so the worker sees the call row.
"""

from __future__ import annotations

import uuid
from typing import Final, Literal, TypedDict

from channels.layers import get_channel_layer

#: The channel the observer worker consumes (``runworker call-observer``).
OBSERVER_CHANNEL = "call-observer"

#: Channels message types (dots become underscores in consumer handler names).
START_MESSAGE: Final = "observe.start"
STOP_MESSAGE: Final = "observe.stop"


class ObserverMessage(TypedDict):
    """The wire shape of a request to the observer worker."""

    type: Literal["observe.start", "observe.stop"]
    call_id: str
    reason: str


class ObserverUnavailableError(RuntimeError):
    """No channel layer is configured, so no observer can ever receive the request."""


async def _send(message: ObserverMessage) -> None:
    layer = get_channel_layer()
    if layer is None:
        raise ObserverUnavailableError("CHANNEL_LAYERS is not configured; the observer cannot be reached")
    await layer.send(OBSERVER_CHANNEL, dict(message))


async def request_observation(call_id: uuid.UUID) -> None:
    """Ask the observer to attach to the call's sideband and record it until the call ends.

    Idempotent: a second request for a call already observed is ignored by the worker.
    """
    await _send({"type": START_MESSAGE, "call_id": str(call_id), "reason": ""})


async def request_stop(call_id: uuid.UUID, *, reason: str) -> None:
    """Ask the observer to flush what it holds, record ``reason`` if the call has none, and detach.

    Sent after the call was hung up; unknown or already finished calls are ignored by the worker.
    """
    await _send({"type": STOP_MESSAGE, "call_id": str(call_id), "reason": reason})
