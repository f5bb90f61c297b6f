"""Stored events keep thumbnails, not frames (calls.observer.images), and the video modes' session
instructions tell the model what it can see (calls.services.session_config)."""

from __future__ import annotations

import base64
import copy
import io
from typing import Any

import pytest
from PIL import Image

from calls.models import AgentProfile, Call
from calls.observer.images import IMAGE_KEY, MAX_THUMBNAIL_BYTES, THUMBNAIL_SIDE, image_parts, strip_images
from calls.services.session_config import VISION_INSTRUCTIONS, build_session_config


def frame(size: tuple[int, int] = (1024, 576), colour: tuple[int, int, int] = (200, 30, 30)) -> str:
    """A noisy JPEG frame as a data URL (noise: a thumbnail of it does not compress to nothing)."""
    import numpy as np

    rng = np.random.default_rng(7)
    pixels = np.clip(rng.normal(0, 60, (size[1], size[0], 3)) + colour, 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def item_event(url: str, event_type: str = "conversation.item.added") -> dict[str, Any]:
    return {
        "type": event_type,
        "event_id": "event_1",
        "previous_item_id": None,
        "item": {
            "id": "item_frame",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_image", "image_url": url, "detail": "low"}],
        },
    }


def test_a_frame_becomes_a_small_thumbnail_with_the_originals_facts() -> None:
    url = frame()
    original_bytes = len(base64.b64decode(url.split(",", 1)[1]))
    event = item_event(url)
    before = copy.deepcopy(event)
    stored = strip_images(event)
    assert event == before  # the observer still reads the original
    part = stored["item"]["content"][0]
    assert part["type"] == "input_image" and part["detail"] == "low"
    assert part[IMAGE_KEY] == {
        "thumbnail": True,
        "width": 1024,
        "height": 576,
        "bytes": original_bytes,
        "media_type": "image/jpeg",
    }
    assert part["image_url"].startswith("data:image/jpeg;base64,")
    thumbnail = base64.b64decode(part["image_url"].split(",", 1)[1])
    assert len(thumbnail) <= MAX_THUMBNAIL_BYTES < original_bytes
    with Image.open(io.BytesIO(thumbnail)) as image:
        assert max(image.size) <= THUMBNAIL_SIDE
        assert image.size == (160, 90)
    # every other field is untouched
    assert {k: v for k, v in stored.items() if k != "item"} == {k: v for k, v in event.items() if k != "item"}


@pytest.mark.parametrize(
    "event_type", ["conversation.item.done", "conversation.item.retrieved", "response.done"]
)
def test_images_anywhere_in_any_event_are_replaced(event_type: str) -> None:
    url = frame((320, 240))
    event = {
        "type": event_type,
        "response": {"output": [item_event(url)["item"]]},
        "item": item_event(url)["item"],
    }
    stored = strip_images(event)
    for part in (stored["item"]["content"][0], stored["response"]["output"][0]["content"][0]):
        assert part[IMAGE_KEY]["thumbnail"] is True and part[IMAGE_KEY]["width"] == 320
        assert part["image_url"] != url


def test_events_without_images_are_returned_as_they_are() -> None:
    event = {
        "type": "conversation.item.added",
        "item": {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
    }
    assert strip_images(event) is event


def test_a_stored_event_replayed_is_not_thumbnailed_twice() -> None:
    stored = strip_images(item_event(frame((320, 240))))
    assert strip_images(stored) is stored


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("data:image/jpeg;base64,!!!", "not base64"),
        ("data:image/jpeg;base64," + base64.b64encode(b"not a picture").decode(), "cannot be decoded"),
        ("javascript:alert(1)", "not a data URL"),
    ],
)
def test_an_unreadable_image_keeps_no_payload(url: str, error: str) -> None:
    part = strip_images(item_event(url))["item"]["content"][0]
    assert part["image_url"] is None
    assert part[IMAGE_KEY]["thumbnail"] is False and error in part[IMAGE_KEY]["error"]


def test_image_parts_of_a_user_message() -> None:
    stored = strip_images(item_event(frame((64, 48))))
    assert [p[IMAGE_KEY]["width"] for p in image_parts(stored)] == [64]
    assert image_parts({"type": "conversation.item.added", "item": {"type": "function_call"}}) == []


# ---- session instructions ----------------------------------------------------------------------------


def profile(instructions: str = "Be brief.") -> AgentProfile:
    return AgentProfile(name="Test", instructions=instructions, voice="marin", model="gpt-realtime")


def test_audio_and_phone_calls_keep_the_profiles_instructions() -> None:
    for mode in (Call.Mode.AUDIO, Call.Mode.PHONE):
        assert build_session_config(profile(), mode=mode)["instructions"] == "Be brief."


@pytest.mark.parametrize(("mode", "sees"), [(Call.Mode.WEBCAM, "camera"), (Call.Mode.SCREEN, "screen")])
def test_video_modes_tell_the_model_what_it_can_see(mode: str, sees: str) -> None:
    instructions = build_session_config(profile(), mode=mode)["instructions"]
    assert instructions.startswith("Be brief.\n\n")
    assert instructions.endswith(VISION_INSTRUCTIONS[mode])
    assert "You can see" in instructions and sees in instructions
    # without instructions of its own, the profile gets just the vision sentence
    assert build_session_config(profile(""), mode=mode)["instructions"] == VISION_INSTRUCTIONS[mode]


@pytest.mark.django_db
def test_the_tamper_guard_expects_the_vision_instructions_of_a_webcam_call() -> None:
    """The observer compares `session.updated` with what `store.load_call` says we configured: the
    webcam call's own instructions are not tampering, the profile's bare ones are."""
    from calls.observer import store
    from calls.observer.events import parse_server_event
    from calls.observer.observer import session_differences
    from tests.factories import CallFactory

    call = CallFactory.create(mode=Call.Mode.WEBCAM, provider_call_id="rtc_0123456789abcdef0123")
    snapshot = store.load_call(call.id)
    assert snapshot is not None
    expected = snapshot.expected_session
    assert expected == build_session_config(call.agent, mode=Call.Mode.WEBCAM)

    def updated(instructions: str) -> Any:
        event = parse_server_event(
            {"type": "session.updated", "session": {"type": "realtime", "instructions": instructions}},
            call_id=call.id,
        )
        assert event is not None
        return event

    assert session_differences(expected, updated(expected["instructions"])) == {}
    assert set(session_differences(expected, updated(call.agent.instructions))) == {"instructions"}
