"""Channels routes: the live console WebSocket, and the observer worker's channel."""

from typing import Any

from django.urls import path

from calls.consumers import CallEventsConsumer
from calls.observer.dispatch import OBSERVER_CHANNEL
from calls.observer.worker import ObserverWorkerConsumer

websocket_urlpatterns: list[Any] = [
    path("ws/calls/<uuid:call_id>/", CallEventsConsumer.as_asgi()),
]

#: Channel name → consumer, for `runworker` (and the worker embedded in `serve`).
channel_routes: dict[str, Any] = {
    OBSERVER_CHANNEL: ObserverWorkerConsumer.as_asgi(),
}
