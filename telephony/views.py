"""The SIP webhook endpoint: OpenAI (or the local engine) announces phone calls here.

No login: the Standard Webhooks signature over the raw body is the authentication, so this is the
one view exempt from CSRF. The view reads the body (bounded), hands it to `receive_webhook` and turns
its typed errors into short answers; nothing is stored for a refused request, and its log line
carries the reason only (no headers, no body: they name callers).
"""

from __future__ import annotations

import logging
import uuid

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from calls.models import Call
from calls.permissions import staff_required
from calls.services.calls import hang_up_call
from calls.services.realtime_client import RealtimeError
from calls.views.api import upstream_error_response
from telephony.services import STAFF_HANGUP_REASON, SigningSecretMissing, WebhookRefused, receive_webhook
from voiceagent.security import body_cap

logger = logging.getLogger(__name__)


def _refuse(reason: str, status: int) -> JsonResponse:
    logger.warning("webhook refused (%s): %s", status, reason)
    return JsonResponse({"error": reason}, status=status)


@body_cap("TELEPHONY_WEBHOOK_MAX_BYTES")
@csrf_exempt
@require_POST
async def webhook(request: HttpRequest) -> HttpResponse:
    """`POST /telephony/webhook`: 200 `{"outcome": …}` once recorded (repeats included); 400 with a
    reason for an unverifiable or malformed delivery; 413 when over `TELEPHONY_WEBHOOK_MAX_BYTES`;
    503 when `OPENAI_SIGNING_SECRET` is not configured (so OpenAI retries once it is)."""
    limit = settings.TELEPHONY_WEBHOOK_MAX_BYTES
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return _refuse("invalid Content-Length", 400)
    if declared > limit:
        return _refuse(f"body over {limit} bytes", 413)
    # Read at most one byte past the cap from the stream (a chunked body declares no length).
    body = request.read(limit + 1)
    if len(body) > limit:
        return _refuse(f"body over {limit} bytes", 413)
    try:
        decision = await receive_webhook(body=body, headers=request.headers)
    except SigningSecretMissing as exc:
        logger.error("webhook refused (503): %s", exc)
        return JsonResponse({"error": "webhook verification is not configured"}, status=503)
    except WebhookRefused as exc:
        return _refuse(exc.reason, exc.status)
    return JsonResponse({"outcome": "duplicate" if decision.duplicate else decision.outcome})


@body_cap(1024)  # the form's CSRF token only
@require_POST
@staff_required
async def hang_up_phone_call(request: HttpRequest, call_id: uuid.UUID) -> HttpResponse:
    """`POST /telephony/calls/<uuid>/hang-up` (staff, CSRF-protected form of the console's phone card):
    end a live phone call (idempotent), then back to the console; an upstream failure is a JSON error."""
    call = await Call.objects.filter(pk=call_id, source=Call.Source.SIP).afirst()
    if call is None:
        return JsonResponse({"error": "No such phone call."}, status=404)
    try:
        await hang_up_call(call=call, reason=STAFF_HANGUP_REASON)
    except RealtimeError as exc:
        return upstream_error_response(exc)
    return redirect("console")
