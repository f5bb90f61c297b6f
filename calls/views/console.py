"""The console: the page staff use to talk to the agent from the browser."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from calls.models import AgentProfile, Call
from calls.permissions import staff_required

#: The console's mode picker, in display order: (mode, title, one-line description).
CONSOLE_MODES: list[tuple[Call.Mode, str, str]] = [
    (Call.Mode.AUDIO, "Audio only", "Low-latency microphone with a neural voice."),
    (Call.Mode.WEBCAM, "Webcam", "Camera and microphone: the agent sees frames."),
    (Call.Mode.SCREEN, "Share screen", "A screen or window plus your microphone."),
]


@staff_required
def console(request: HttpRequest) -> HttpResponse:
    """Render the console shell; the call flow is driven by static/console/*.js."""
    agent = AgentProfile.objects.filter(is_default=True).first()
    client_config = {
        "defaultMode": Call.Mode.AUDIO.value,
        "modes": [mode.value for mode, _, _ in CONSOLE_MODES],
        "engine": "local" if settings.USES_LOCAL_ENGINE else "openai",
    }
    return render(
        request,
        "calls/console.html",
        {
            "modes": CONSOLE_MODES,
            "agent": agent,
            "engine_label": "Local engine" if settings.USES_LOCAL_ENGINE else "OpenAI Realtime",
            "client_config": client_config,
        },
    )
