"""The conversation state machine of one call: items, responses and the ordered server events."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from realtime_local.pipeline import SpeechStack


class Session:
    """Conversation state and event emission for one call (filled in next commits)."""

    def __init__(
        self,
        *,
        config: dict[str, Any],
        speech: SpeechStack | None,
        emit: Callable[[dict[str, Any]], None],
        touch: Callable[[], None],
        call_id: str,
    ) -> None:
        self.config = copy.deepcopy(config)
        self.speech = speech
        self._emit = emit
        self._touch = touch
        self.call_id = call_id
        self._started = False

    def replace_config(self, config: dict[str, Any]) -> None:
        self.config = copy.deepcopy(config)

    def start(self) -> None:
        """Emit `session.created` (once)."""
        if self._started:
            return
        self._started = True
        self._emit({"type": "session.created", "session": self.config})

    async def handle_client_event(self, event: dict[str, Any]) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        return None
