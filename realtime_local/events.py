"""Ids, the `error` event, and conversation items: client items validated, items as responder turns.

Ids look like OpenAI's (`event_…`, `item_…`, `resp_…`, `call_…`) so that clients which pattern-match
them (the agents SDK, our observer) treat local ids like real ones.
"""

from __future__ import annotations

import copy
import secrets
import string
from collections.abc import Mapping
from typing import Any

from realtime_local.speech.base import ConversationTurn
from realtime_local.vision import ImageFacts

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


class InvalidClientEvent(Exception):
    """A client event the session refuses; becomes an `error` server event."""

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code


def normalize_item(raw: dict[str, Any]) -> dict[str, Any]:
    """A client-supplied conversation item in the stored GA shape; raises InvalidClientEvent."""
    kind = raw.get("type")
    item_id = raw.get("id") or new_item_id()
    if not isinstance(item_id, str):
        raise InvalidClientEvent("Invalid type for 'item.id'.", param="item.id")
    base = {"id": item_id, "object": "realtime.item", "status": "completed"}
    if kind == "message":
        role = raw.get("role")
        if role not in ("user", "assistant", "system"):
            raise InvalidClientEvent(
                f"Invalid value for 'item.role': {role!r}.", param="item.role", code="invalid_value"
            )
        content = raw.get("content")
        if not isinstance(content, list) or not content:
            raise InvalidClientEvent(
                "Missing required parameter: 'item.content'.",
                param="item.content",
                code="missing_required_parameter",
            )
        allowed = {
            "user": {"input_text", "input_audio", "input_image"},
            "system": {"input_text"},
            "assistant": {"output_text", "output_audio", "text"},
        }[role]
        parts: list[dict[str, Any]] = []
        for index, part in enumerate(content):
            if not isinstance(part, dict) or part.get("type") not in allowed:
                raise InvalidClientEvent(
                    f"Invalid value for 'item.content[{index}].type'.",
                    param=f"item.content[{index}].type",
                    code="invalid_value",
                )
            parts.append(copy.deepcopy(part))
        return {**base, "type": "message", "role": role, "content": parts}
    if kind == "function_call_output":
        call_id, output = raw.get("call_id"), raw.get("output")
        if not isinstance(call_id, str) or not isinstance(output, str):
            raise InvalidClientEvent(
                "function_call_output items need string 'call_id' and 'output'.",
                param="item.call_id" if not isinstance(call_id, str) else "item.output",
                code="invalid_value",
            )
        return {**base, "type": "function_call_output", "call_id": call_id, "output": output}
    if kind == "function_call":
        name, arguments = raw.get("name"), raw.get("arguments", "")
        if not isinstance(name, str) or not isinstance(arguments, str):
            raise InvalidClientEvent(
                "function_call items need 'name' and 'arguments'.",
                param="item.name",
                code="invalid_value",
            )
        call_id = raw.get("call_id") or new_function_call_id()
        return {**base, "type": "function_call", "name": name, "arguments": arguments, "call_id": call_id}
    raise InvalidClientEvent(
        f"Invalid value for 'item.type': {kind!r}.", param="item.type", code="invalid_value"
    )


def conversation_turns(
    items: list[dict[str, Any]], images: Mapping[str, ImageFacts] | None = None
) -> list[ConversationTurn]:
    """What the responder sees of these items, oldest first: text, plus the facts of an item's image
    (`images`, by item id; the session measured them when the item was created)."""
    turns: list[ConversationTurn] = []
    images = images or {}
    for item in items:
        kind = item.get("type")
        if kind == "message":
            text = " ".join(
                str(part.get("text") or part.get("transcript") or "")
                for part in item.get("content", [])
                if isinstance(part, dict)
            ).strip()
            image = images.get(str(item.get("id")))
            turns.append(ConversationTurn(role=item["role"], text=text, image=image))
        elif kind == "function_call":
            turns.append(
                ConversationTurn(
                    role="function_call",
                    name=item.get("name", ""),
                    call_id=item.get("call_id", ""),
                    arguments=item.get("arguments", ""),
                )
            )
        elif kind == "function_call_output":
            turns.append(
                ConversationTurn(
                    role="function_call_output",
                    text=item.get("output", ""),
                    call_id=item.get("call_id", ""),
                )
            )
    return turns
