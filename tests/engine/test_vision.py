"""Images in the local engine: the facts it measures, the rule responder's answer, and the event flow
of an `input_image` item over a real WebRTC data channel (every event checked with the SDK's models).
"""

from __future__ import annotations

import base64
import io
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from PIL import Image

from realtime_local.call import EngineRuntime
from realtime_local.session import MAX_IMAGE_PAYLOADS
from realtime_local.speech.base import ConversationTurn, TextReply
from realtime_local.speech.responder import NO_IMAGE, RuleResponder, asks_what_you_see, chat_messages
from realtime_local.vision import (
    MAX_IMAGE_BYTES,
    ImageError,
    ImageFacts,
    decode_data_url,
    dominant_colour,
    image_facts,
)
from tests.engine.fixtures_media import RealtimeTestClient, connected_client, serve_engine
from tests.engine.test_session_text import assert_sdk_valid

pytestmark = pytest.mark.timeout(60)


def picture(colour: tuple[int, int, int], size: tuple[int, int] = (640, 480), fmt: str = "JPEG") -> bytes:
    """A solid picture with a small white square in a corner (so it is not a single colour)."""
    image = Image.new("RGB", size, colour)
    image.paste((255, 255, 255), (0, 0, size[0] // 10, size[1] // 10))
    out = io.BytesIO()
    image.save(out, fmt, quality=85)
    return out.getvalue()


def data_url(data: bytes, media_type: str = "image/jpeg") -> str:
    return f"data:{media_type};base64,{base64.b64encode(data).decode()}"


# ---- facts -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rgb", "colour", "brightness"),
    [
        ((220, 20, 20), "red", "medium"),
        ((20, 200, 40), "green", "medium"),
        ((30, 60, 220), "blue", "dark"),
        ((250, 230, 20), "yellow", "bright"),
        ((250, 250, 250), "white", "bright"),
        ((10, 10, 10), "black", "dark"),
        ((128, 128, 128), "grey", "medium"),
    ],
)
def test_facts_of_a_solid_picture(rgb: tuple[int, int, int], colour: str, brightness: str) -> None:
    facts = image_facts(picture(rgb))
    assert (facts.width, facts.height) == (640, 480)
    assert facts.colour == colour
    assert facts.brightness == brightness
    assert facts.media_type == "image/jpeg" and facts.size_bytes > 0


def test_png_is_measured_too_and_its_size_is_the_original() -> None:
    facts = image_facts(picture((20, 200, 40), size=(1920, 1080), fmt="PNG"), media_type="image/png")
    assert (facts.width, facts.height, facts.colour, facts.media_type) == (1920, 1080, "green", "image/png")


def test_dominant_colour_is_the_most_common_one_not_the_mean() -> None:
    import numpy as np

    # 60 % red, 40 % blue: the mean would be purple.
    rgb = np.array([[1.0, 0.0, 0.0]] * 6 + [[0.0, 0.0, 1.0]] * 4, dtype=np.float32)
    assert dominant_colour(rgb) == "red"


def test_describe_names_size_brightness_and_colour() -> None:
    facts = ImageFacts(width=640, height=480, luma=0.8, colour="red")
    assert facts.describe() == "I see a 640 by 480 image. It is bright, and the main colour is red."


@pytest.mark.parametrize(
    "url",
    [
        None,
        "",
        "https://example.com/cat.jpg",
        "data:image/gif;base64,R0lGODlhAQABAAAAACw=",
        "data:image/jpeg;base64,not base64!",
        "data:image/jpeg;base64,",
    ],
)
def test_bad_data_urls_are_refused(url: object) -> None:
    with pytest.raises(ImageError):
        decode_data_url(url)


def test_oversized_and_undecodable_images_are_refused() -> None:
    with pytest.raises(ImageError, match="larger than"):
        decode_data_url("data:image/jpeg;base64," + "A" * (MAX_IMAGE_BYTES * 4 // 3 + 100))
    media_type, data = decode_data_url(data_url(b"\xff\xd8 this is not really a jpeg"))
    with pytest.raises(ImageError, match="cannot be decoded"):
        image_facts(data, media_type=media_type)


# ---- responder ---------------------------------------------------------------------------------

RED = ImageFacts(width=640, height=480, luma=0.35, colour="red")
BLUE = ImageFacts(width=1280, height=720, luma=0.2, colour="blue")


@pytest.mark.parametrize(
    "question",
    [
        "What do you see?",
        "what can you see",
        "Can you see me?",
        "Describe the image.",
        "What's on my screen?",
    ],
)
def test_vision_questions_are_recognised(question: str) -> None:
    assert asks_what_you_see(question)


@pytest.mark.parametrize("other", ["What is the weather in Paris?", "hello there", "tell me a long story"])
def test_other_utterances_are_not_vision_questions(other: str) -> None:
    assert not asks_what_you_see(other)


def reply_text(conversation: list[ConversationTurn]) -> str:
    replies = list(RuleResponder().reply(instructions="", conversation=conversation, tools=[]))
    assert all(isinstance(r, TextReply) for r in replies)
    return " ".join(r.text for r in replies if isinstance(r, TextReply))


def test_what_do_you_see_describes_the_latest_image_even_with_frames_after_the_question() -> None:
    conversation = [
        ConversationTurn(role="user", image=BLUE),
        ConversationTurn(role="user", image=RED),
        ConversationTurn(role="user", text="What do you see?"),
        ConversationTurn(role="user", image=RED),  # a frame that arrived while the reply was asked for
    ]
    assert reply_text(conversation) == RED.describe()


def test_without_any_image_the_answer_says_so() -> None:
    assert reply_text([ConversationTurn(role="user", text="What do you see?")]) == NO_IMAGE


def test_frames_do_not_hide_what_the_user_said() -> None:
    conversation = [
        ConversationTurn(role="user", text="hello there, I am testing"),
        ConversationTurn(role="user", image=RED),
    ]
    assert "hello there, I am testing" in reply_text(conversation)


def test_chat_models_get_the_latest_frame_as_text() -> None:
    messages = chat_messages(
        "Be brief.",
        [
            ConversationTurn(role="user", image=BLUE),
            ConversationTurn(role="user", image=RED),
            ConversationTurn(role="user", text="What do you see?"),
        ],
    )
    assert [m["role"] for m in messages] == ["system", "user", "user"]
    assert "red" in messages[1]["content"] and "blue" not in messages[1]["content"]


# ---- the event flow over a data channel ---------------------------------------------------------


@pytest.fixture
async def client() -> AsyncIterator[RealtimeTestClient]:
    async with (
        serve_engine(EngineRuntime(speech=None, loopback_candidates=True)) as engine,
        connected_client(engine, {"type": "realtime"}) as (client, _, _),
    ):
        yield client


def image_item(url: str, item_id: str | None = None, **part: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "type": "message",
        "role": "user",
        "content": [{"type": "input_image", "image_url": url, **part}],
    }
    if item_id:
        item["id"] = item_id
    return {"type": "conversation.item.create", "event_id": "evt_image", "item": item}


async def test_an_image_item_is_acknowledged_and_described(client: RealtimeTestClient) -> None:
    start = len(client.events)
    url = data_url(picture((220, 20, 20)))
    client.send(image_item(url, "item_camera_frame_1", detail="low"))
    added = await client.wait_for("conversation.item.added", after=start)
    done = await client.wait_for("conversation.item.done", after=start)
    for event in (added, done):
        assert event["item"]["id"] == "item_camera_frame_1"
        assert event["item"]["role"] == "user" and event["item"]["status"] == "completed"
        assert event["item"]["content"] == [{"type": "input_image", "image_url": url, "detail": "low"}]
    client.send(
        {
            "type": "conversation.item.create",
            "item": {
                "type": "message",
                "role": "user",
                "content": [{"type": "input_text", "text": "What do you see?"}],
            },
        }
    )
    client.send({"type": "response.create"})
    response = await client.wait_for("response.done", after=start)
    text = response["response"]["output"][0]["content"][0]["text"]
    assert text == "I see a 640 by 480 image. It is of medium brightness, and the main colour is red."
    assert "error" not in client.types()[start:]
    assert_sdk_valid(client.events)


async def test_a_bad_image_is_refused_naming_the_part(client: RealtimeTestClient) -> None:
    start = len(client.events)
    client.send(image_item("data:image/gif;base64,R0lGODlhAQABAAAAACw="))
    error = await client.wait_for("error", after=start)
    assert error["error"]["param"] == "item.content[0].image_url"
    assert error["error"]["code"] == "invalid_image"
    assert error["error"]["event_id"] == "evt_image"
    client.send(image_item(data_url(picture((0, 0, 255))), detail="huge"))
    error = await client.wait_for("error", lambda e: e["error"]["param"].endswith("detail"), after=start)
    assert error["error"]["param"] == "item.content[0].detail"
    assert "conversation.item.added" not in client.types()[start:]
    assert_sdk_valid(client.events)


def has_item(item_id: str) -> Callable[[dict[str, Any]], bool]:
    return lambda event: bool(event["item"]["id"] == item_id)


async def test_only_the_latest_frames_keep_their_pixels(client: RealtimeTestClient) -> None:
    start = len(client.events)
    small = data_url(picture((20, 200, 40), size=(64, 48)))
    count = MAX_IMAGE_PAYLOADS + 3
    for index in range(count):
        item_id = f"item_frame_{index:02d}"
        client.send(image_item(small, item_id))
        await client.wait_for("conversation.item.done", has_item(item_id), after=start)
    client.send({"type": "conversation.item.retrieve", "item_id": "item_frame_00"})
    old = await client.wait_for("conversation.item.retrieved", after=start)
    assert old["item"]["content"][0]["image_url"] is None
    client.send({"type": "conversation.item.retrieve", "item_id": f"item_frame_{count - 1:02d}"})
    new = await client.wait_for(
        "conversation.item.retrieved", lambda e: e["item"]["id"] == f"item_frame_{count - 1:02d}", after=start
    )
    assert new["item"]["content"][0]["image_url"] == small
    assert_sdk_valid(client.events)
