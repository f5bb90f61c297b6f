"""The SDP proxy: the browser's offer in, the Realtime API's answer out; and hang-up.

    POST /rtc?mode=audio|webcam|screen   (or ?video=true → webcam, as the original lab's client sends)
        staff; body = the SDP offer, Content-Type application/sdp, at most 64 KiB
        201, body = SDP answer (application/sdp), Location: /rtc/<call uuid>, X-Provider-Call-Id
        401 anonymous · 403 not staff · 415 other content type · 413 too large · 400 not an offer
        429 past the per-user limit RTC_RATE_LIMIT (Retry-After)
        502 upstream failure or refusal · 503 upstream rate limit (Retry-After) · 504 upstream timeout
    POST /rtc/<call uuid>/hangup
        the call's owner; no body. 200 {id, status, end_reason}; 404 unknown or someone else's call;
        403 cross-site without a CSRF token; 502/504 when the API could not end it (retry).

CSRF: `/rtc` needs no token: it only accepts `application/sdp`, which no cross-site form can send and
a cross-site fetch can only send after a CORS preflight that we never allow. The hang-up has no body,
so it is accepted without a token only when the browser says it is same-origin (an `Origin` header
equal to ours or a trusted origin, or `Sec-Fetch-Site: same-origin`, both headers a page cannot forge);
otherwise Django's CSRF check applies. That keeps the original lab's client (no token) working when
it is served by us. No SDP is ever logged.
"""

from __future__ import annotations

import uuid
from typing import Final

from django.conf import settings
from django.contrib.auth.models import User
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.middleware.csrf import CsrfViewMiddleware
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from calls.models import Call
from calls.services.calls import CallSetupError, WebCallPlan, admit_web_call, hang_up_call, start_web_call
from calls.services.ratelimit import RateLimited
from calls.services.realtime_client import RealtimeError
from calls.views.api import (
    admitted,
    api_staff_admitted,
    json_error,
    rate_limited_response,
    setup_error_response,
    upstream_error_response,
)
from voiceagent.availability import release_db_connection_sync
from voiceagent.security import body_cap

#: The largest SDP offer we accept; a browser's audio+video offer is 4-10 KiB.
MAX_OFFER_BYTES: Final = 64 * 1024
SDP_CONTENT_TYPE: Final = "application/sdp"
#: A hang-up has no body; a few bytes of whatever a client sends along are tolerated.
MAX_HANGUP_BYTES: Final = 1024


def _offer_mode(request: HttpRequest) -> str | None:
    """The call mode from `?mode=` (or the lab client's `?video=true`); None when invalid."""
    mode = request.GET.get("mode")
    if mode is None:
        return Call.Mode.WEBCAM if request.GET.get("video") == "true" else Call.Mode.AUDIO
    return mode if mode in (Call.Mode.AUDIO, Call.Mode.WEBCAM, Call.Mode.SCREEN) else None


def _offer_problem(body: bytes) -> str | None:
    """Why `body` is not an SDP offer with audio, or None when it looks like one."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "The SDP offer is not UTF-8 text."
    if not text.lstrip().startswith("v=0"):
        return "The body is not an SDP offer: it must start with 'v=0'."
    if not any(line.startswith("m=audio ") for line in text.splitlines()):
        return "The SDP offer has no audio section ('m=audio')."
    return None


def _admit_offer(request: HttpRequest, user: User) -> WebCallPlan | HttpResponse:
    """The offer's checks, then the set-up's admission (rate count, profile): sync, in the sign-in
    check's thread hand-off (`api_staff_admitted`). The answer to a bad request, or the plan."""
    if request.content_type != SDP_CONTENT_TYPE:
        return json_error(
            415, "Send the SDP offer with Content-Type: application/sdp.", code="unsupported_media_type"
        )
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > MAX_OFFER_BYTES or len(request.body) > MAX_OFFER_BYTES:
        return json_error(413, f"The SDP offer exceeds {MAX_OFFER_BYTES // 1024} KiB.", code="body_too_large")
    problem = _offer_problem(request.body)
    if problem is not None:
        return json_error(400, problem, code="invalid_offer")
    mode = _offer_mode(request)
    if mode is None:
        return json_error(400, "'mode' must be audio, webcam or screen.", code="invalid_mode")
    try:
        return admit_web_call(user=user, mode=mode)
    except RateLimited as exc:
        return rate_limited_response(exc)
    except CallSetupError as exc:
        return setup_error_response(exc)


@body_cap(MAX_OFFER_BYTES)
@csrf_exempt  # safe: only application/sdp is accepted (see the module docstring)
@require_POST
@api_staff_admitted(_admit_offer)
async def create_call(request: HttpRequest) -> HttpResponse:
    """Forward the browser's offer upstream with our session config; answer with the API's SDP."""
    plan = admitted(request, WebCallPlan)
    try:
        call, answer_sdp = await start_web_call(plan, offer_sdp=request.body.decode("utf-8"))
    except RealtimeError as exc:
        return upstream_error_response(exc)
    response = HttpResponse(answer_sdp, status=201, content_type=SDP_CONTENT_TYPE)
    response["Location"] = f"/rtc/{call.id}"
    response["X-Provider-Call-Id"] = call.provider_call_id or ""
    response["Cache-Control"] = "no-store"
    return response


def _is_same_origin(request: HttpRequest) -> bool:
    """True when the browser states that this request comes from one of our own pages."""
    origin = request.META.get("HTTP_ORIGIN")
    if origin:
        own = f"{request.scheme}://{request.get_host()}"
        return origin == own or origin in settings.CSRF_TRUSTED_ORIGINS
    return request.META.get("HTTP_SEC_FETCH_SITE") == "same-origin"


def _csrf_rejection(request: HttpRequest) -> HttpResponseBase | None:
    """Django's own CSRF check (token + origin), for requests that are not provably same-origin."""
    if _is_same_origin(request):
        return None
    return CsrfViewMiddleware(lambda _: HttpResponse()).process_view(request, None, (), {})  # type: ignore[arg-type]


def _admit_hangup(request: HttpRequest, user: User, call_id: uuid.UUID) -> Call | HttpResponseBase:
    """The CSRF check, then the user's own call (404 for an unknown or someone else's): sync, in the
    sign-in check's thread hand-off. The connection is given back: the hang-up waits on the API."""
    rejection = _csrf_rejection(request)
    if rejection is not None:
        return rejection
    call = Call.objects.filter(pk=call_id, user=user).first()
    release_db_connection_sync()
    if call is None:
        return json_error(404, "No such call.", code="not_found")
    return call


@body_cap(MAX_HANGUP_BYTES)
@csrf_exempt  # checked in the admission: same-origin without a token, Django's CSRF check otherwise
@require_POST
@api_staff_admitted(_admit_hangup)
async def hangup_call(request: HttpRequest, call_id: uuid.UUID) -> HttpResponseBase:
    """End one of the user's own calls (also ends it upstream and stops its observer)."""
    try:
        call = await hang_up_call(call=admitted(request, Call))
    except RealtimeError as exc:
        return upstream_error_response(exc)
    return JsonResponse({"id": str(call.id), "status": call.status, "end_reason": call.end_reason or None})
