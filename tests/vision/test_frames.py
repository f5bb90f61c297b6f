"""Frames in the transcript pages: the call page and the admin show each stored thumbnail where it
was sent, among the turns (read back from the stored events; no table of their own)."""

from __future__ import annotations

import base64
import datetime as dt
import io
import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from PIL import Image

from calls.frames import attach_frames, call_frames
from calls.models import Call, Event, TranscriptTurn
from calls.observer.images import strip_images
from tests.factories import CallFactory, TranscriptTurnFactory

pytestmark = pytest.mark.django_db


def jpeg_url(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480)) -> str:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, "JPEG")
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def store_frame(call: Call, sequence: int, at: dt.datetime, item_id: str, url: str) -> None:
    """What the observer stores for a frame's `conversation.item.added` (thumbnail in place)."""
    payload: dict[str, Any] = {
        "type": "conversation.item.added",
        "item": {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": url}],
        },
    }
    Event.objects.create(
        call=call,
        sequence=sequence,
        type="conversation.item.added",
        payload=strip_images(payload),
        received_at=at,
    )


@pytest.fixture
def call_with_frames(staff_user: User) -> Call:
    call = CallFactory.create(user=staff_user, mode=Call.Mode.WEBCAM)
    t0 = call.answered_at
    assert t0 is not None
    store_frame(call, 1, t0 + dt.timedelta(seconds=1), "item_frame_a", jpeg_url((220, 20, 20)))
    TranscriptTurnFactory.create(
        call=call,
        item_id="item_user",
        role="user",
        text="What do you see?",
        started_at=t0 + dt.timedelta(seconds=2),
    )
    store_frame(call, 2, t0 + dt.timedelta(seconds=3), "item_frame_b", jpeg_url((20, 20, 220), (1280, 720)))
    TranscriptTurnFactory.create(
        call=call,
        item_id="item_reply",
        role="assistant",
        text="I see red.",
        started_at=t0 + dt.timedelta(seconds=4),
    )
    store_frame(call, 3, t0 + dt.timedelta(seconds=9), "item_frame_c", jpeg_url((20, 200, 20)))
    # a text item is not a frame
    Event.objects.create(
        call=call,
        sequence=4,
        type="conversation.item.added",
        payload={
            "type": "conversation.item.added",
            "item": {
                "id": "x",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "hi"}],
            },
        },
        received_at=t0 + dt.timedelta(seconds=10),
    )
    return call


def test_frames_are_read_from_the_events_and_filed_before_the_next_turn(call_with_frames: Call) -> None:
    frames = call_frames(call=call_with_frames)
    assert [(f.item_id, f.width, f.height) for f in frames] == [
        ("item_frame_a", 640, 480),
        ("item_frame_b", 1280, 720),
        ("item_frame_c", 640, 480),
    ]
    assert all(f.thumbnail_url.startswith("data:image/jpeg;base64,") for f in frames)
    turns = list(TranscriptTurn.objects.filter(call=call_with_frames).order_by("started_at"))
    index = attach_frames(turns, frames)
    assert [f.item_id for f in index.before(turns[0])] == ["item_frame_a"]
    assert [f.item_id for f in index.before(turns[1])] == ["item_frame_b"]
    assert [f.item_id for f in index.trailing] == ["item_frame_c"]
    assert len(index) == 3


def _order(body: str) -> list[str]:
    """Frames (by item id) and turns (by their text) in page order."""
    found = re.finditer(r'data-item-id="(item_frame_\w)"|(What do you see\?|I see red\.)', body)
    return [m.group(1) or m.group(2) for m in found]


def test_the_call_page_shows_the_thumbnails_among_the_turns(
    staff_client: Client, call_with_frames: Call
) -> None:
    body = staff_client.get(f"/calls/{call_with_frames.pk}/").content.decode()
    assert _order(body) == ["item_frame_a", "What do you see?", "item_frame_b", "I see red.", "item_frame_c"]
    assert body.count('<img src="data:image/jpeg;base64,') == 3
    assert 'title="1280x720' in body


def test_the_admin_call_page_shows_them_too(admin_client: Client, call_with_frames: Call) -> None:
    body = admin_client.get(f"/admin/calls/call/{call_with_frames.pk}/change/").content.decode()
    transcript = body.split('id="transcript"', 1)[1].split('id="events"', 1)[0]
    assert _order(transcript) == [
        "item_frame_a",
        "What do you see?",
        "item_frame_b",
        "I see red.",
        "item_frame_c",
    ]


def test_a_call_with_frames_but_no_turns_still_shows_them(staff_client: Client, staff_user: User) -> None:
    call = CallFactory.create(user=staff_user, mode=Call.Mode.SCREEN)
    assert call.answered_at is not None
    store_frame(call, 1, call.answered_at, "item_frame_a", jpeg_url((0, 0, 0)))
    body = staff_client.get(f"/calls/{call.pk}/").content.decode()
    assert "No transcript was recorded" in body and 'data-item-id="item_frame_a"' in body
