"""The console's vision modules in Node (no DOM needed for these parts): the transcript model files
frames in strips between turns, and the sampler's settings, scaling and change check. The browser
e2e (tests/e2e/test_vision_e2e.py) covers sampling a real camera track."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

NODE = shutil.which("node")
CONSOLE = Path(__file__).resolve().parents[2] / "static" / "console"

pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed")


def run(script: str) -> Any:
    assert NODE is not None
    done = subprocess.run(
        [NODE, "--input-type=module", "-e", script], capture_output=True, text=True, timeout=30, check=True
    )
    return json.loads(done.stdout)


def frame_item(item_id: str, width: int = 640) -> dict[str, Any]:
    return {
        "type": "conversation.item.added",
        "item": {
            "id": item_id,
            "type": "message",
            "role": "user",
            "content": [
                {
                    "type": "input_image",
                    "image_url": "data:image/jpeg;base64,AAAA",
                    "voiceagent_image": {"thumbnail": True, "width": width, "height": 480},
                }
            ],
        },
    }


def turns_after(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    module = (CONSOLE / "transcript.js").as_uri()
    turns: list[dict[str, Any]] = run(
        f"""
        import {{ TranscriptModel }} from {json.dumps(module)};
        const model = new TranscriptModel();
        for (const event of {json.dumps(events)}) model.apply(event);
        console.log(JSON.stringify(model.turns));
        """
    )
    return turns


def test_consecutive_frames_share_a_strip_and_a_turn_starts_a_new_one() -> None:
    user = {
        "type": "conversation.item.added",
        "item": {
            "id": "item_u",
            "type": "message",
            "role": "user",
            "content": [{"type": "input_audio", "transcript": "What do you see?"}],
        },
    }
    done_again = {**frame_item("item_f2"), "type": "conversation.item.done"}
    turns = turns_after(
        [frame_item("item_f1"), frame_item("item_f2", 1024), done_again, user, frame_item("item_f3")]
    )
    assert [t["role"] for t in turns] == ["frames", "user", "frames"]
    first, _, last = turns
    assert [(f["itemId"], f["width"]) for f in first["frames"]] == [("item_f1", 640), ("item_f2", 1024)]
    assert first["text"] == "2 frames sent" and last["text"] == "1 frame sent"
    assert first["frames"][0]["url"] == "data:image/jpeg;base64,AAAA"


def test_a_message_with_words_and_an_image_stays_a_user_turn() -> None:
    event = frame_item("item_mixed")
    event["item"]["content"].append({"type": "input_text", "text": "look at this"})
    (turn,) = turns_after([event])
    assert turn["role"] == "user" and turn["text"] == "look at this"


def test_settings_scaling_and_change_check() -> None:
    module = (CONSOLE / "vision.js").as_uri()
    result = run(
        f"""
        import {{ DEFAULTS, visionSettings, scaledSize, probeDifference }} from {json.dumps(module)};
        const element = {{ dataset: {{ visionSpeakingMs: "500", visionIdleMs: "", visionMaxSide: "x" }} }};
        console.log(JSON.stringify({{
          defaults: visionSettings(),
          page: visionSettings({{ config: {{ vision: {{ idleIntervalMs: 3000, quality: 0.6 }} }}, element }}),
          options: visionSettings({{ element, options: {{ vision: {{ speakingIntervalMs: 250 }} }} }}),
          landscape: scaledSize(1920, 1080, 1024),
          portrait: scaledSize(720, 1280, 1024),
          small: scaledSize(640, 480, 1024),
          same: probeDifference(new Uint8Array([10, 20]), new Uint8Array([10, 20])),
          half: probeDifference(new Uint8Array([0, 0]), new Uint8Array([255, 0])),
          first: probeDifference(null, new Uint8Array([1])),
          frozen: Object.isFrozen(DEFAULTS),
        }}));
        """
    )
    assert result["defaults"]["speakingIntervalMs"] == 1000 and result["defaults"]["idleIntervalMs"] == 4000
    assert result["defaults"]["maxSide"] == 1024
    # page config, then data attributes (blank and non-numeric ones ignored), then options
    assert (result["page"]["speakingIntervalMs"], result["page"]["idleIntervalMs"]) == (500, 3000)
    assert result["page"]["quality"] == 0.6 and result["page"]["maxSide"] == 1024
    assert result["options"]["speakingIntervalMs"] == 250
    assert result["landscape"] == {"width": 1024, "height": 576}
    assert result["portrait"] == {"width": 576, "height": 1024}
    assert result["small"] == {"width": 640, "height": 480}
    assert (result["same"], result["half"], result["first"], result["frozen"]) == (0, 0.5, 1, True)
