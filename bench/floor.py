"""The floor of `POST /rtc`: what the server stack alone costs a forwarded offer, for
`bench/setup_overhead.py --floor` (served by `bench.settings_floor`, never by the product).

`POST /bench/floor` forwards the SDP offer through the same stack as `/rtc`: daphne, Django's ASGI
handler with the product's middleware (`voiceagent.handler`), an async view, and the product's own
`RealtimeClient.create_call` on the shared kept-alive httpx pool, with the default profile's session
config (read once, at the first request). It does nothing else: no sign-in check, no rate count, no
`Call` row, no observer. `POST /bench/floor-auth` adds one thing, the sign-in check of every staff
endpoint (`staff_user`: session and user row in one thread hand-off). What `/rtc` costs above these
two is the product's own work; what the floor costs above the engine is the fixed stack's.

Both answer 201 with the SDP answer and the engine's `Location`, so the benchmark hangs the call up
at the engine. An unauthenticated endpoint that spends the API key: which is why it lives only here.
"""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.urls import include, path
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from calls.services.realtime_client import RealtimeClient
from calls.services.session_config import build_session_config
from calls.views.api import staff_user

_SESSION: dict[str, Any] = {}


def _default_session() -> dict[str, Any]:
    """The default profile's session config for an audio call (sync; read once per process)."""
    if not _SESSION:
        from calls.services.calls import default_profile

        _SESSION.update(build_session_config(default_profile(), mode="audio"))
    return _SESSION


async def _forward(request: HttpRequest) -> HttpResponse:
    session = _SESSION or await sync_to_async(_default_session)()
    async with RealtimeClient() as client:
        created = await client.create_call(offer_sdp=request.body.decode("utf-8"), session=session)
    response = HttpResponse(created.answer_sdp, status=201, content_type="application/sdp")
    response["Location"] = f"/v1/realtime/calls/{created.provider_call_id}"
    return response


@csrf_exempt
@require_POST
async def floor(request: HttpRequest) -> HttpResponse:
    """The offer forwarded, nothing else."""
    return await _forward(request)


@csrf_exempt
@require_POST
async def floor_auth(request: HttpRequest) -> HttpResponseBase:
    """The offer forwarded after the sign-in check that every staff endpoint makes."""
    user = await sync_to_async(staff_user)(request)
    if isinstance(user, HttpResponseBase):
        return user
    return await _forward(request)


urlpatterns = [
    path("bench/floor", floor),
    path("bench/floor-auth", floor_auth),
    path("", include("voiceagent.urls")),
]
