"""WebSocket routes (live console streams arrive with the web-calls work)."""

from typing import Any

websocket_urlpatterns: list[Any] = []
