"""The camera or screen frames a call sent, read back from its stored events for the transcript pages.

No table of their own: the observer stores each frame's `conversation.item.added` event with a
thumbnail in place of the image (`calls.observer.images`), and that event's arrival time says where
the frame belongs among the transcript's turns. `attach_frames` files each frame under the first turn
that started after it, so a template can show the frames sent before a turn just above it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from calls.models import Call, Event, TranscriptTurn
from calls.observer.images import IMAGE_KEY, image_parts

#: The item event that carries a frame once (item.done and retrieve echo it again).
FRAME_EVENT: Final = "conversation.item.added"


@dataclass(frozen=True)
class Frame:
    """One frame as stored: its thumbnail (a data URL, or "" if none was kept) and the original's size."""

    at: dt.datetime
    item_id: str
    thumbnail_url: str
    width: int | None
    height: int | None
    bytes: int | None

    @property
    def label(self) -> str:
        size = f"{self.width}x{self.height}" if self.width and self.height else "image"
        return f"{size} · {self.bytes // 1024} KB" if self.bytes else size


@dataclass
class FrameIndex:
    """Frames grouped by the turn they precede (`by_turn`, turn pk → frames) and those after the
    last turn (`trailing`)."""

    by_turn: dict[int, list[Frame]] = field(default_factory=dict)
    trailing: list[Frame] = field(default_factory=list)

    def before(self, turn: TranscriptTurn) -> list[Frame]:
        return self.by_turn.get(turn.pk, [])

    def __len__(self) -> int:
        return sum(len(frames) for frames in self.by_turn.values()) + len(self.trailing)


def call_frames(*, call: Call) -> list[Frame]:
    """The call's frames in arrival order (one query over its item events)."""
    frames: list[Frame] = []
    rows = (
        Event.objects.filter(call=call, type=FRAME_EVENT)
        .order_by("sequence")
        .values_list("payload", "received_at")
    )
    for payload, received_at in rows.iterator():
        if not isinstance(payload, dict):
            continue
        item = payload.get("item") or {}
        for part in image_parts(payload):
            stored = part.get(IMAGE_KEY)
            facts: dict[str, object] = stored if isinstance(stored, dict) else {}
            url = part.get("image_url")
            frames.append(
                Frame(
                    at=received_at,
                    item_id=str(item.get("id") or ""),
                    thumbnail_url=url if isinstance(url, str) and url.startswith("data:image/") else "",
                    width=_int(facts.get("width")),
                    height=_int(facts.get("height")),
                    bytes=_int(facts.get("bytes")),
                )
            )
    return frames


def attach_frames(turns: Sequence[TranscriptTurn], frames: Sequence[Frame]) -> FrameIndex:
    """File each frame under the first turn (in the given, time-ordered list) that started after it."""
    index = FrameIndex()
    starts = [(turn.started_at, turn.pk) for turn in turns]
    position = 0
    for frame in sorted(frames, key=lambda f: f.at):
        while position < len(starts) and starts[position][0] is not None and starts[position][0] <= frame.at:
            position += 1
        if position < len(starts):
            index.by_turn.setdefault(starts[position][1], []).append(frame)
        else:
            index.trailing.append(frame)
    return index


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
