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


def build_session_config(profile: AgentProfile, *, mode: str) -> dict[str, Any]:
    """The session config for a call of `mode` answered by `profile`.

    Turn detection is the profile's (an empty value means push-to-talk: `null`). Tools are the
    profile's enabled built-ins from `calls.tools.registry` as function tools (the observer runs
    them; per-call tools such as MCP ones are added by the observer with a `session.update` once it
    has listed them, so that call setup never waits on a tool server). `mode` is accepted for every
    door alike; the video modes do not change the config: the model gets no video track (images
    would be items).
    """
    from calls.tools import registry

    if mode not in WEB_MODES and mode != Call.Mode.PHONE:
        raise ValueError(f"Unknown call mode {mode!r}.")
    turn_detection = dict(profile.turn_detection) if profile.turn_detection else None
    return {
        "type": "realtime",
        "model": profile.model,
        "instructions": profile.instructions,
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
