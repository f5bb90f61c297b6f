"""JSON endpoints of web calls: ephemeral keys for direct calls, and registering such a call.

    POST /api/realtime/client-secret   staff; optional JSON {"mode"}; 200 {value, expires_at}; 429 past
                                       the per-user limit CLIENT_SECRET_RATE_LIMIT (Retry-After)
    POST /api/calls                    staff; JSON {provider_call_id, mode}; 201 {id, provider_call_id};
                                       400 invalid, 409 already registered

Both keep Django's CSRF protection (send the `X-CSRFToken` header). Errors are JSON
`{"error": {"message", "code"}}`; see docs/web-calls.md. This module also holds the helpers that
`calls.views.rtc` shares: the error response, the API's staff check, and upstream error mapping.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, Final, TypeVar, cast

from asgiref.sync import sync_to_async
from django.contrib.auth.middleware import get_user
from django.contrib.auth.models import AnonymousUser, User
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.views.decorators.http import require_POST

from calls.permissions import NOT_STAFF_MESSAGE
from calls.services.calls import (
    CallAlreadyRegistered,
    CallSetupError,
    issue_client_secret,
    register_direct_call,
)
from calls.services.ratelimit import RateLimited
from calls.services.realtime_client import InvalidProviderCallId, RealtimeError, RealtimeTimeout
from voiceagent.security import body_cap

AsyncView = TypeVar("AsyncView", bound=Callable[..., Awaitable[HttpResponseBase]])

#: The most a JSON request body of these endpoints may be.
MAX_JSON_BYTES: Final = 4 * 1024
#: Seconds a client should wait when the API is rate-limiting us and did not say how long.
DEFAULT_RETRY_AFTER_S: Final = 5


def json_error(
    status: int, message: str, *, code: str, headers: dict[str, str] | None = None
) -> JsonResponse:
    """The error shape of every web-call endpoint: `{"error": {"message", "code"}}`."""
    response = JsonResponse({"error": {"message": message, "code": code}}, status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def upstream_error_response(exc: RealtimeError) -> JsonResponse:
    """Map a Realtime API failure to our edge: 504 timeout, 503 (+Retry-After) when the API rate-limits
    us, 502 for everything else (5xx, garbage, or a 4xx refusal: the request was ours, not the browser's)."""
    if isinstance(exc, RealtimeTimeout):
        return json_error(504, exc.message, code=exc.code or "upstream_timeout")
    if exc.status == 429:
        retry_after = exc.retry_after if exc.retry_after is not None else DEFAULT_RETRY_AFTER_S
        return json_error(
            503,
            f"The Realtime API is rate-limiting us: {exc.message}",
            code="upstream_rate_limited",
            headers={"Retry-After": str(retry_after)},
        )
    if exc.status is not None and 400 <= exc.status < 500:
        return json_error(
            502,
            f"The Realtime API refused the request (HTTP {exc.status}): {exc.message}",
            code=exc.code or "upstream_refused",
        )
    return json_error(502, exc.message, code=exc.code or "upstream_error")


def rate_limited_response(exc: RateLimited) -> JsonResponse:
    """429 with Retry-After: this user asked too often (our own per-user limit, not the API's)."""
    return json_error(429, exc.message, code="rate_limited", headers={"Retry-After": str(exc.retry_after)})


def setup_error_response(exc: CallSetupError) -> JsonResponse:
    """Our own refusals: 409 for a duplicate, 503 when no agent profile exists, 400 otherwise."""
    if isinstance(exc, CallAlreadyRegistered):
        return json_error(409, exc.message, code=exc.code)
    if exc.code == "no_agent_profile":
        return json_error(503, exc.message, code=exc.code)
    return json_error(400, exc.message, code=exc.code)


#: The request attribute where `api_staff_required` keeps the user it let through.
API_USER_ATTRIBUTE: Final = "api_user"
#: The request attribute where `api_staff_admitted` keeps what its admission returned.
ADMITTED_ATTRIBUTE: Final = "api_admitted"


def _signed_in_user(request: HttpRequest) -> User | AnonymousUser:
    """The request's user, session and user row read in one thread hand-off (sync; the same lookup
    and session-hash check as `request.auser()`, whose two awaited queries cost a hand-off each)."""
    return get_user(request)


def staff_user(request: HttpRequest) -> User | JsonResponse:
    """The signed-in staff user of `request` (sync), or the refusal: a JSON 401 for anonymous (not a
    login redirect: these are fetch endpoints), a JSON 403 for signed-in users who are not staff."""
    user = _signed_in_user(request)
    if not user.is_authenticated:
        return json_error(401, "Sign in first.", code="not_authenticated")
    if not user.is_active or not user.is_staff:
        return json_error(403, NOT_STAFF_MESSAGE, code="forbidden")
    return user


def api_staff_required(view: AsyncView) -> AsyncView:
    """Only signed-in staff reach `view` (`staff_user`'s refusals otherwise)."""

    @wraps(view)
    async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        user = await sync_to_async(staff_user)(request)
        if isinstance(user, HttpResponseBase):
            return user
        setattr(request, API_USER_ATTRIBUTE, user)
        return await view(request, *args, **kwargs)

    return cast(AsyncView, wrapper)


#: A view's admission: sync, called with the request, the staff user and the view's URL arguments;
#: returns a response (the answer: a refusal) or what the view needs (`admitted(request)`).
Admission = Callable[..., object]


def api_staff_admitted(admit: Admission) -> Callable[[AsyncView], AsyncView]:
    """`api_staff_required`, with the view's own sync checks and reads (`admit`) in the same thread
    hand-off as the sign-in check, once the user is known to be staff: one hand-off instead of two,
    each a wake-up of two threads and their CPU (bench/setup_overhead.py: ~0.4 ms of a set-up one at
    a time on our 2-core box, more under load)."""

    def decorate(view: AsyncView) -> AsyncView:
        @wraps(view)
        async def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            def check_and_admit() -> tuple[User | None, object]:
                user = staff_user(request)
                if isinstance(user, HttpResponseBase):
                    return None, user
                return user, admit(request, user, *args, **kwargs)

            user, admitted_value = await sync_to_async(check_and_admit)()
            if isinstance(admitted_value, HttpResponseBase):
                return admitted_value
            setattr(request, API_USER_ATTRIBUTE, user)
            setattr(request, ADMITTED_ATTRIBUTE, admitted_value)
            return await view(request, *args, **kwargs)

        return cast(AsyncView, wrapper)

    return decorate


T = TypeVar("T")


def admitted(request: HttpRequest, kind: type[T]) -> T:
    """What the view's `api_staff_admitted` admission returned for `request` (a `kind`)."""
    value = getattr(request, ADMITTED_ATTRIBUTE, None)
    if not isinstance(value, kind):
        raise TypeError(f"{request.path}: no admitted {kind.__name__} (is the view @api_staff_admitted?)")
    return value


async def request_user(request: HttpRequest) -> User:
    """The signed-in user of a request that `api_staff_required` already let through."""
    user = getattr(request, API_USER_ATTRIBUTE, None)
    if isinstance(user, User):
        return user
    return cast(User, await request.auser())


def read_json_object(request: HttpRequest, *, required: bool) -> dict[str, Any] | JsonResponse:
    """The request's JSON object body, or the error response to return (400/413/415)."""
    if request.content_type != "application/json":
        # An optional body may be absent (a bare fetch sends no content type); anything else is ignored
        # rather than parsed, since Django's CSRF check may already have consumed a form body.
        if not required:
            return {}
        return json_error(415, "Send the body as application/json.", code="unsupported_media_type")
    if not request.body:
        return json_error(400, "A JSON body is required.", code="missing_body") if required else {}
    if len(request.body) > MAX_JSON_BYTES:
        return json_error(413, f"The body exceeds {MAX_JSON_BYTES} bytes.", code="body_too_large")
    try:
        parsed = json.loads(request.body)
    except ValueError:
        return json_error(400, "The body is not valid JSON.", code="invalid_json")
    if not isinstance(parsed, dict):
        return json_error(400, "The body must be a JSON object.", code="invalid_json")
    return parsed


@body_cap(MAX_JSON_BYTES)
@require_POST
@api_staff_required
async def client_secret(request: HttpRequest) -> HttpResponse:
    """Mint an ephemeral key for a direct call; the answer holds `value` and `expires_at` only."""
    body = read_json_object(request, required=False)
    if isinstance(body, JsonResponse):
        return body
    mode = body.get("mode", "audio")
    if not isinstance(mode, str):
        return json_error(400, "'mode' must be a string.", code="invalid_mode")
    try:
        secret = await issue_client_secret(user=await request_user(request), mode=mode)
    except RateLimited as exc:
        return rate_limited_response(exc)
    except CallSetupError as exc:
        return setup_error_response(exc)
    except RealtimeError as exc:
        return upstream_error_response(exc)
    response = JsonResponse({"value": secret.value, "expires_at": secret.expires_at})
    response["Cache-Control"] = "no-store"
    return response


@body_cap(MAX_JSON_BYTES)
@require_POST
@api_staff_required
async def register_call(request: HttpRequest) -> HttpResponse:
    """Register a call the browser created directly with the API, and start observing it."""
    body = read_json_object(request, required=True)
    if isinstance(body, JsonResponse):
        return body
    provider_call_id = body.get("provider_call_id")
    if not isinstance(provider_call_id, str):
        return json_error(400, "'provider_call_id' is required (a string).", code="invalid_provider_call_id")
    mode = body.get("mode", "audio")
    if not isinstance(mode, str):
        return json_error(400, "'mode' must be a string.", code="invalid_mode")
    user = await request_user(request)
    try:
        call = await register_direct_call(user=user, provider_call_id=provider_call_id, mode=mode)
    except InvalidProviderCallId as exc:
        return json_error(400, str(exc), code="invalid_provider_call_id")
    except CallSetupError as exc:
        return setup_error_response(exc)
    return JsonResponse({"id": str(call.id), "provider_call_id": call.provider_call_id}, status=201)
