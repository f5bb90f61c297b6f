"""Ids and small builders for the Realtime API's server events and conversation items.

Ids look like OpenAI's (`event_…`, `item_…`, `resp_…`, `call_…`) so that clients which pattern-match
them (the agents SDK, our observer) treat local ids like real ones.
"""

from __future__ import annotations

import secrets
import string
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def _random(n: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(n))


def new_event_id() -> str:
    """`event_` + 22 random characters."""
    return "event_" + _random(22)


def new_item_id() -> str:
    """`item_` + 22 random characters."""
    return "item_" + _random(22)


def new_response_id() -> str:
    """`resp_` + 22 random characters."""
    return "resp_" + _random(22)


def new_function_call_id() -> str:
    """`call_` + 16 random characters (the `call_id` of a function_call item)."""
    return "call_" + _random(16)


def new_rtc_call_id() -> str:
    """`rtc_` + 24 hex characters: the id of a call (WebRTC and SIP-style alike)."""
    return "rtc_" + secrets.token_hex(12)


def error_event(
    message: str,
    *,
    type: str = "invalid_request_error",
    code: str | None = None,
    param: str | None = None,
    client_event_id: str | None = None,
) -> dict[str, Any]:
    """An `error` server event (the caller's emitter adds `event_id`)."""
    return {
        "type": "error",
        "error": {
            "type": type,
            "code": code,
            "message": message,
            "param": param,
            "event_id": client_event_id,
        },
    }
