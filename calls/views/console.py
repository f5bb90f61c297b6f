"""The console: the page staff use to talk to the agent from the browser."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import get_token
from django.shortcuts import render
from django.views.decorators.http import require_safe

from calls.models import AgentProfile, Call
from calls.permissions import staff_required

#: The console's mode picker, in display order: (mode, title, one-line description).
CONSOLE_MODES: list[tuple[Call.Mode, str, str]] = [
    (Call.Mode.AUDIO, "Audio only", "Low-latency microphone with a neural voice."),
    (Call.Mode.WEBCAM, "Webcam", "Camera and microphone: the agent sees frames of your camera."),
    (Call.Mode.SCREEN, "Share screen", "Screen and microphone: the agent sees frames of your screen."),
]

#: How the browser's SDP offer reaches the Realtime API: (transport, title, one-line description).
CONSOLE_TRANSPORTS: list[tuple[Call.Transport, str, str]] = [
    (Call.Transport.PROXY, "Proxy", "The offer goes through this server (/rtc)."),
    (Call.Transport.DIRECT, "Direct", "The browser posts it to the API with an ephemeral key."),
]


@require_safe
@staff_required
def console(request: HttpRequest) -> HttpResponse:
    """Render the console shell; the call flow is driven by static/console/*.js (entry: main.js).

    The page config tells the call client where the Realtime API is (the "direct" transport posts
    there from the browser, so for the local engine it must be reachable from the browser too), which
    ICE servers to use (none by default: host candidates only) and the CSRF token for our own POSTs.
    """
    agent = AgentProfile.objects.filter(is_default=True).first()
    client_config = {
        "defaultMode": Call.Mode.AUDIO.value,
        "modes": [mode.value for mode, _, _ in CONSOLE_MODES],
        "defaultTransport": Call.Transport.PROXY.value,
        "engine": "local" if settings.USES_LOCAL_ENGINE else "openai",
        "realtimeBaseUrl": settings.REALTIME_BASE_URL,
        "iceServers": settings.CONSOLE_ICE_SERVERS,
        "csrfToken": get_token(request),
        # Web calls use the default profile: the console records them unless it says not to.
        "recordCalls": bool(agent.record_calls) if agent else False,
    }
    return render(
        request,
        "calls/console.html",
        {
            "modes": CONSOLE_MODES,
            "transports": CONSOLE_TRANSPORTS,
            "agent": agent,
            "engine_label": "Local engine" if settings.USES_LOCAL_ENGINE else "OpenAI Realtime",
            "client_config": client_config,
        },
    )
