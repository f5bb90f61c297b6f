"""The observer with frames, against a real local engine: a webcam call's image items are stored as
thumbnails (in item.added and item.done alike), the webcam instructions are not taken for tampering,
and a typed "what do you see" is answered from the frame."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from PIL import Image

from calls.frames import call_frames
from calls.models import Call
from calls.observer.images import IMAGE_KEY, MAX_THUMBNAIL_BYTES, image_parts
from calls.observer.observer import SECURITY_TAMPER_EVENT
from tests.engine.conftest import RunningEngine
from tests.web.conftest import LiveCall
from tests.web.test_observer_calls import driver, eventually, next_event, observing, say, stored

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

MakeLiveCall = Callable[..., Awaitable[LiveCall]]


def blue_frame() -> str:
    out = io.BytesIO()
    Image.new("RGB", (1024, 576), (30, 60, 220)).save(out, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


async def test_frames_are_stored_as_thumbnails_and_described(
    local_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall
) -> None:
    live = await make_live_call(local_engine, mode=Call.Mode.WEBCAM)
    await observing(live)
    await live.accept()
    url = blue_frame()
    seen: list[dict[str, Any]] = []
    async with driver(local_engine, live) as ws:
        item = {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": url}]}
        await ws.send(json.dumps({"type": "conversation.item.create", "item": item}))
        done = await next_event(ws, "conversation.item.done", seen)
        assert done["item"]["content"][0]["image_url"] == url  # the engine echoes the frame itself
        await say(ws, "What do you see?")
        response = await next_event(ws, "response.done", seen)
    reply = response["response"]["output"][0]["content"][0]
    assert "1024 by 576" in reply.get("text", reply.get("transcript", ""))

    async def both_stored() -> list[dict[str, Any]]:
        frames = [
            event.payload
            for event in await stored(live.call)
            if event.type in ("conversation.item.added", "conversation.item.done")
            and image_parts(event.payload)
        ]
        return frames if len(frames) == 2 else []

    for payload in await eventually(both_stored):
        part = payload["item"]["content"][0]
        assert part[IMAGE_KEY]["thumbnail"] is True
        assert (part[IMAGE_KEY]["width"], part[IMAGE_KEY]["height"]) == (1024, 576)
        assert part[IMAGE_KEY]["bytes"] == len(base64.b64decode(url.split(",", 1)[1]))
        assert len(base64.b64decode(part["image_url"].split(",", 1)[1])) <= MAX_THUMBNAIL_BYTES
        assert part["image_url"] != url
    events = await stored(live.call)
    assert not [event for event in events if event.type == SECURITY_TAMPER_EVENT]
    created = next(
        event for event in events if event.type == "session.updated" or event.type == "session.created"
    )
    assert "You can see the user through their camera" in created.payload["session"]["instructions"]
    frames = await eventually(lambda: _frames(live.call))
    assert [(frame.width, frame.height) for frame in frames] == [(1024, 576)]


async def _frames(call: Call) -> list[Any]:
    from asgiref.sync import sync_to_async

    return await sync_to_async(call_frames)(call=call)
