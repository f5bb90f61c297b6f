"""Frames in the transcript: `{% call_frames call turns as frames %}`, then `frames|before_turn:turn`
for the frames sent before a turn and `frames.trailing` for those after the last one."""

from __future__ import annotations

from collections.abc import Sequence

from django import template

from calls.frames import Frame, FrameIndex, attach_frames, call_frames
from calls.models import Call, TranscriptTurn

register = template.Library()


@register.simple_tag(name="call_frames")
def call_frames_tag(call: Call, turns: Sequence[TranscriptTurn]) -> FrameIndex:
    return attach_frames(turns, call_frames(call=call))


@register.filter
def before_turn(frames: FrameIndex, turn: TranscriptTurn) -> list[Frame]:
    return frames.before(turn) if isinstance(frames, FrameIndex) else []
