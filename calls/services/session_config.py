"""An `AgentProfile` turned into the Realtime API's session config (GA shape, protocol.md §5).

The same config goes to `POST /realtime/calls` (proxied web calls), to client secrets (direct web
calls) and to `accept` (phone calls), so that every door gives the same agent. Input transcription is
always on: the observer builds the user's side of the transcript from it.
"""

from __future__ import annotations

from typing import Any, Final

from calls.models import AgentProfile, Call

#: The transcription model we ask for; OpenAI accepts it and the local engine ignores the name.
TRANSCRIPTION_MODEL: Final = "whisper-1"

#: Modes a web call may have (a phone call's mode is `phone`).
WEB_MODES: Final = frozenset({Call.Mode.AUDIO, Call.Mode.WEBCAM, Call.Mode.SCREEN})

#: What the model is told in the video modes, appended to the profile's instructions. The console
#: sends frames as `input_image` items (static/console/vision.js); without this the model tends to
#: say it cannot see anything.
VISION_INSTRUCTIONS: Final[dict[str, str]] = {
    Call.Mode.WEBCAM: (
        "You can see the user through their camera: the user's messages include still frames from "
        "it, the latest one being what the camera shows now. When asked what you see, describe the "
        "latest frame briefly."
    ),
    Call.Mode.SCREEN: (
        "You can see the user's shared screen: the user's messages include still frames of it, the "
        "latest one being what the screen shows now. When asked what you see, describe the latest "
        "frame briefly."
    ),
}


def session_instructions(profile: AgentProfile, *, mode: str) -> str:
    """The profile's instructions, plus what the model can see in the video modes."""
    vision = VISION_INSTRUCTIONS.get(mode)
    if not vision:
        return profile.instructions
    return f"{profile.instructions.rstrip()}\n\n{vision}" if profile.instructions.strip() else vision


def build_session_config(profile: AgentProfile, *, mode: str) -> dict[str, Any]:
    """The session config for a call of `mode` answered by `profile`.

    Turn detection is the profile's (an empty value means push-to-talk: `null`). Tools are the
    profile's enabled built-ins from `calls.tools.registry` as function tools (the observer runs
    them; per-call tools such as MCP ones are added by the observer with a `session.update` once it
    has listed them, so that call setup never waits on a tool server). `mode` is accepted for every
    door alike; in the video modes the instructions say that the model can see the camera or the
    screen (it gets no video track: the console sends frames as image items). The observer's
    session-tamper guard compares against this same function's output, so it stays consistent.
    """
    from calls.tools import registry

    if mode not in WEB_MODES and mode != Call.Mode.PHONE:
        raise ValueError(f"Unknown call mode {mode!r}.")
    turn_detection = dict(profile.turn_detection) if profile.turn_detection else None
    return {
        "type": "realtime",
        "model": profile.model,
        "instructions": session_instructions(profile, mode=mode),
        "output_modalities": ["audio"],
        "audio": {
            "input": {
                "transcription": {"model": TRANSCRIPTION_MODEL},
                "turn_detection": turn_detection,
            },
            "output": {"voice": profile.voice},
        },
        "tools": registry.function_specs(profile.tools or []),
    }
