"""Phone calls: verify OpenAI's signed webhooks, decide, accept or reject, transfer (docs/telephony.md).

Every state change of a phone call outside the observer lives here; `telephony.views.webhook` only
reads the request and calls `receive_webhook`.

The flow of a `realtime.call.incoming` delivery:
1. `verify_webhook`: svix checks the signature over the raw body (5-minute tolerance, several
   signatures allowed, constant-time comparison); then the envelope is checked.
2. `record_delivery` (one transaction): the `WebhookDelivery` row is inserted *first*; its unique
   `webhook_id` makes a repeated delivery an `IntegrityError`, i.e. a no-op, even when two processes
   race (the database decides, not a check-then-insert). The same transaction decides accept or
   reject (concurrent-call limit, business hours), creates the `Call` (also unique on the provider
   call id, so a second delivery of the same call under a new webhook id is a no-op too) and records
   the outcome.
3. The webhook is answered 200 at once; `answer_incoming_call` runs on a background task of the web
   process: `POST …/accept` with the agent's session config (or `…/reject` with the SIP status),
   then asks the observer to watch the call (the observer sends the greeting). A 404 on accept means
   the caller hung up while ringing: the call is `ended` with `END_REASON_MISSED`.

Logs carry ids and outcomes, never numbers or headers (personal data).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import logging
import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from standardwebhooks.webhooks import EmptyWebhookSecretError
from svix.webhooks import Webhook, WebhookVerificationError

from calls.models import AgentProfile, Call, WebhookDelivery
from calls.observer.dispatch import ObserverUnavailableError, request_observation, request_stop
from calls.services.calls import amark_call_failed
from calls.services.realtime_client import RealtimeClient, RealtimeError, is_valid_provider_call_id
from calls.services.session_config import build_session_config
from telephony.hours import BusinessHours, parse_business_hours
from voiceagent.config import MissingSettingError, require_setting
from voiceagent.monitoring.logs import bind_call_id
from voiceagent.monitoring.metrics import (
    instrument_webhook_verification,
    record_call_setup,
    setup_outcome,
)

logger = logging.getLogger(__name__)

INCOMING_CALL_EVENT: Final = "realtime.call.incoming"
#: SIP statuses we reject with.
BUSY_HERE: Final = 486
TEMPORARILY_UNAVAILABLE: Final = 480
END_REASON_MISSED: Final = "caller hung up before answer"
END_REASON_OVER_CAPACITY: Final = "over the concurrent-call limit"
END_REASON_CLOSED: Final = "outside business hours"
END_REASON_TRANSFERRED: Final = "transferred"
STAFF_HANGUP_REASON: Final = "hung up by staff"
#: Bound on what we keep of the SIP headers (a hostile INVITE could carry many).
MAX_SIP_HEADERS: Final = 64
MAX_SIP_HEADER_CHARS: Final = 1024
_WEBHOOK_ID_RE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")
_LIVE: Final = (Call.Status.CONNECTING, Call.Status.ACTIVE)


# --- errors -----------------------------------------------------------------------------------------


class WebhookRefused(Exception):
    """A webhook that is not authentic or not usable; `reason` is short and safe to return."""

    def __init__(self, reason: str, *, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class SigningSecretMissing(Exception):
    """`OPENAI_SIGNING_SECRET` is not set (or not a valid whsec_ secret): no webhook can be checked."""


class TransferError(Exception):
    """A transfer that cannot be made; `code` names why (`not_allowed`, `invalid_target`, `not_live`)."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class TransferNotAllowed(TransferError):
    """The target is not on the agent profile's `transfer_targets` allow-list (toll fraud guard)."""


# --- verification -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerifiedWebhook:
    """An authentic webhook: its delivery id (`webhook-id`, stable across retries) and its event."""

    webhook_id: str
    event_type: str
    event: dict[str, Any]


def _verifier(secret: str, *, name: str) -> Webhook:
    try:
        return Webhook(secret)
    except (ValueError, RuntimeError, EmptyWebhookSecretError) as exc:  # bad base64 is a ValueError
        raise SigningSecretMissing(f"{name} is not a valid whsec_ secret ({type(exc).__name__}).") from None


def _verifiers() -> list[Webhook]:
    """The current secret's verifier first, then those of `OPENAI_SIGNING_SECRET_PREVIOUS`: during a
    rotation a delivery signed with either the new or the old secret is authentic."""
    try:
        secret = require_setting("OPENAI_SIGNING_SECRET", purpose="verify OpenAI's phone-call webhooks")
    except MissingSettingError as exc:
        raise SigningSecretMissing(str(exc)) from None
    previous = [value for value in settings.OPENAI_SIGNING_SECRET_PREVIOUS if value]
    return [
        _verifier(secret, name="OPENAI_SIGNING_SECRET"),
        *(_verifier(value, name="OPENAI_SIGNING_SECRET_PREVIOUS") for value in previous),
    ]


@instrument_webhook_verification  # voiceagent_webhook_verifications_total{outcome}
def verify_webhook(*, body: bytes, headers: Mapping[str, str]) -> VerifiedWebhook:
    """Check the signature of `body` (the raw bytes) and the envelope; `WebhookRefused` if either fails.

    Only the three Standard Webhooks headers are given to svix (it would otherwise prefer `svix-*`
    headers over ours). `SigningSecretMissing` when no secret is configured.
    """
    verifiers = _verifiers()
    wanted = {
        name: headers.get(name, "") for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
    }
    for name, value in wanted.items():
        if not value:
            raise WebhookRefused(f"missing {name} header")
    for attempt, verifier in enumerate(verifiers, start=1):
        try:
            verifier.verify(body, wanted)
            break
        except WebhookVerificationError as exc:
            if attempt == len(verifiers):  # no secret signed it
                raise WebhookRefused(f"signature verification failed: {str(exc).lower()}") from None
        except (ValueError, UnicodeDecodeError):  # a malformed signature list, or a body not UTF-8
            raise WebhookRefused("signature verification failed: malformed signature or body") from None
    webhook_id = wanted["webhook-id"]
    if _WEBHOOK_ID_RE.fullmatch(webhook_id) is None:
        raise WebhookRefused("webhook-id is not a valid id")
    try:
        event = json.loads(body)
    except ValueError:
        raise WebhookRefused("body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookRefused("body is not a JSON object")
    event_type = event.get("type")
    if event.get("object") != "event" or not isinstance(event_type, str) or not event_type:
        raise WebhookRefused("body is not an event envelope")
    if len(event_type) > 100:
        raise WebhookRefused("event type too long")
    if not isinstance(event.get("data"), dict):
        raise WebhookRefused("event has no data object")
    if event_type == INCOMING_CALL_EVENT:
        _check_incoming_data(event["data"])
    return VerifiedWebhook(webhook_id=webhook_id, event_type=event_type, event=event)


def _check_incoming_data(data: dict[str, Any]) -> None:
    if not is_valid_provider_call_id(data.get("call_id")):
        raise WebhookRefused("realtime.call.incoming without a valid call_id")
    headers = data.get("sip_headers", [])
    if not isinstance(headers, list) or not all(
        isinstance(h, dict) and isinstance(h.get("name"), str) and isinstance(h.get("value"), str)
        for h in headers
    ):
        raise WebhookRefused("realtime.call.incoming with malformed sip_headers")


# --- SIP headers -------------------------------------------------------------------------------------

_URI_RE: Final = re.compile(r"<([^>]*)>|((?:sips?|tel):[^;\s>]+)", re.IGNORECASE)


def sip_header(headers: list[dict[str, str]], name: str) -> str:
    """The first value of header `name` (case-insensitive; compact forms f/t for From/To), or ""."""
    compact = {"from": "f", "to": "t"}.get(name.lower())
    for header in headers:
        header_name = header["name"].lower()
        if header_name == name.lower() or (compact is not None and header_name == compact):
            return header["value"]
    return ""


def number_from_sip_address(value: str) -> str:
    """The user part of a From/To value: `"Ann" <sip:+15551234@host>;tag=x` → `+15551234`;
    `<tel:+15551234>` → `+15551234`. "" if there is none. Bounded to 64 characters."""
    match = _URI_RE.search(value)
    if match is None:
        return ""
    uri = (match[1] or match[2] or "").strip()
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        user = rest.split(";", 1)[0]
    elif scheme.lower() in ("sip", "sips"):
        user = rest.split("@", 1)[0] if "@" in rest else ""
        user = user.split(";", 1)[0].split(":", 1)[0]
    else:
        return ""
    return user.strip()[:64]


def _bounded_headers(raw: list[dict[str, str]]) -> list[dict[str, str]]:
    return [
        {"name": h["name"][:MAX_SIP_HEADER_CHARS], "value": h["value"][:MAX_SIP_HEADER_CHARS]}
        for h in raw[:MAX_SIP_HEADERS]
    ]


# --- the decision -------------------------------------------------------------------------------------


@cache
def _business_hours(value: str, default_timezone: str) -> BusinessHours | None:
    return parse_business_hours(value, default_timezone=default_timezone) if value.strip() else None


def business_hours() -> BusinessHours | None:
    """The parsed `TELEPHONY_BUSINESS_HOURS` (None: always open). Raises `ImproperlyConfigured`."""
    return _business_hours(settings.TELEPHONY_BUSINESS_HOURS, settings.TIME_ZONE)


@dataclass(frozen=True)
class Decision:
    """What `record_delivery` decided for one delivery."""

    outcome: str  # a WebhookDelivery.Outcome value
    call_id: uuid.UUID | None = None
    provider_call_id: str | None = None
    reject_status: int | None = None
    duplicate: bool = False


def _agent_for(callee: str) -> AgentProfile | None:
    """The profile that lists the dialled number, else the default profile (else any profile)."""
    if callee:
        for profile in AgentProfile.objects.exclude(phone_numbers=[]).order_by("-is_default", "name"):
            numbers = profile.phone_numbers if isinstance(profile.phone_numbers, list) else []
            if any(_same_number(str(number), callee) for number in numbers):
                return profile
    return AgentProfile.objects.order_by("-is_default", "name").first()


def _same_number(listed: str, dialled: str) -> bool:
    """Numbers compared on their digits and leading +: "+1 (555) 123-0000" lists "+15551230000"."""

    def norm(number: str) -> str:
        number = number.strip().removeprefix("tel:")
        return ("+" if number.startswith("+") else "") + re.sub(r"\D", "", number)

    return norm(listed) == norm(dialled) and bool(norm(listed))


def _rejection(now: dt.datetime) -> tuple[int, str] | None:
    limit = settings.TELEPHONY_MAX_CONCURRENT_CALLS
    if limit is not None:
        live = Call.objects.filter(source=Call.Source.SIP, status__in=_LIVE).count()
        if live >= limit:
            return BUSY_HERE, END_REASON_OVER_CAPACITY
    hours = business_hours()
    if hours is not None and not hours.is_open(now):
        return TEMPORARILY_UNAVAILABLE, END_REASON_CLOSED
    return None


def record_delivery(*, webhook: VerifiedWebhook, now: dt.datetime | None = None) -> Decision:
    """Store the delivery and, for an incoming call, decide and create its `Call` (one transaction).

    A delivery whose `webhook-id` is already stored returns `Decision(duplicate=True)` and changes
    nothing. Sync: call it through `sync_to_async`.
    """
    now = now or timezone.now()
    try:
        with transaction.atomic():
            delivery = WebhookDelivery.objects.create(
                webhook_id=webhook.webhook_id,
                type=webhook.event_type,
                received_at=now,
                outcome=WebhookDelivery.Outcome.IGNORED,
            )
            if webhook.event_type != INCOMING_CALL_EVENT:
                return Decision(outcome=WebhookDelivery.Outcome.IGNORED)
            return _record_incoming_call(delivery=delivery, data=webhook.event["data"], now=now)
    except IntegrityError:
        return Decision(outcome=WebhookDelivery.Outcome.IGNORED, duplicate=True)


def _record_incoming_call(*, delivery: WebhookDelivery, data: dict[str, Any], now: dt.datetime) -> Decision:
    provider_call_id: str = data["call_id"]
    headers = _bounded_headers(data.get("sip_headers", []))
    caller = number_from_sip_address(sip_header(headers, "From"))
    callee = number_from_sip_address(sip_header(headers, "To"))
    # Serialize decisions (PostgreSQL): the concurrent-call count must not be read by two deliveries
    # at once. The default profile's row is the lock; SQLite serializes writers anyway.
    list(AgentProfile.objects.select_for_update().filter(is_default=True).values_list("pk", flat=True))
    agent = _agent_for(callee)
    if agent is None:
        # Nothing can answer: refused like a closed line, and recorded as failed.
        delivery.outcome = WebhookDelivery.Outcome.FAILED
        delivery.save(update_fields=["outcome"])
        logger.error("incoming call %s: no agent profile exists; rejecting", provider_call_id)
        return Decision(
            outcome=WebhookDelivery.Outcome.FAILED,
            provider_call_id=provider_call_id,
            reject_status=TEMPORARILY_UNAVAILABLE,
        )
    rejection = _rejection(now)
    fields: dict[str, Any] = {
        "source": Call.Source.SIP,
        "mode": Call.Mode.PHONE,
        "transport": Call.Transport.SIP,
        "caller_number": caller,
        "callee_number": callee,
        "sip_headers": headers,
        "agent": agent,
        "created_at": now,
    }
    if rejection is not None:
        fields.update(status=Call.Status.REJECTED, end_reason=rejection[1], ended_at=now)
    try:
        with transaction.atomic():  # a savepoint: the call id may be on record from another delivery
            call = Call.objects.create(provider_call_id=provider_call_id, **fields)
    except IntegrityError:
        existing = Call.objects.filter(provider_call_id=provider_call_id).first()
        delivery.call = existing
        delivery.save(update_fields=["call"])
        logger.info("webhook %s: call %s is already on record", delivery.webhook_id, provider_call_id)
        return Decision(outcome=WebhookDelivery.Outcome.IGNORED, duplicate=True)
    delivery.call = call
    if rejection is not None:
        delivery.outcome = WebhookDelivery.Outcome.REJECTED
        delivery.save(update_fields=["call", "outcome"])
        logger.info("call %s (%s): rejecting (%s)", call.id, provider_call_id, rejection[1])
        return Decision(
            outcome=WebhookDelivery.Outcome.REJECTED,
            call_id=call.id,
            provider_call_id=provider_call_id,
            reject_status=rejection[0],
        )
    delivery.outcome = WebhookDelivery.Outcome.ACCEPTED
    delivery.save(update_fields=["call", "outcome"])
    logger.info("call %s (%s): incoming phone call, accepting", call.id, provider_call_id)
    return Decision(
        outcome=WebhookDelivery.Outcome.ACCEPTED, call_id=call.id, provider_call_id=provider_call_id
    )


# --- answering --------------------------------------------------------------------------------------

#: Background answers of this process (a strong reference each, so none is garbage-collected).
_answering: set[asyncio.Task[None]] = set()


async def receive_webhook(*, body: bytes, headers: Mapping[str, str]) -> Decision:
    """Verify, record and decide one delivery; the upstream accept/reject runs in the background.

    Raises `WebhookRefused` (→ 4xx) or `SigningSecretMissing` (→ 503). Returns as soon as the
    decision is committed, so OpenAI gets its 200 without waiting on the accept.
    """
    webhook = verify_webhook(body=body, headers=headers)
    decision = await sync_to_async(record_delivery)(webhook=webhook)
    if decision.duplicate:
        logger.info(
            "webhook %s (%s): repeated delivery, nothing to do", webhook.webhook_id, webhook.event_type
        )
    elif decision.provider_call_id is not None:
        # A fresh context: the request's one ties sync_to_async to the request's thread executor,
        # which is gone once the 200 is sent (asgiref: "CurrentThreadExecutor already quit").
        task = asyncio.get_running_loop().create_task(
            answer_incoming_call(decision=decision),
            name=f"answer-{decision.provider_call_id}",
            context=contextvars.Context(),
        )
        _answering.add(task)
        task.add_done_callback(_answering.discard)
    else:
        logger.info("webhook %s: %s stored (ignored)", webhook.webhook_id, webhook.event_type)
    return decision


async def wait_for_answers(*, grace_s: float = 15.0) -> None:
    """Wait until the background answers of this process are done (shutdown, tests)."""
    if _answering:
        await asyncio.wait(set(_answering), timeout=grace_s)


#: Turn-detection fields OpenAI refuses on SIP accepts (protocol.md §4; openai-agents-js #741).
SIP_UNSUPPORTED_TURN_DETECTION: Final = ("threshold", "prefix_padding_ms", "silence_duration_ms")


def phone_session_config(profile: AgentProfile) -> dict[str, Any]:
    """The agent's session config for `accept`: the phone-mode config without the turn-detection
    tuning fields SIP accepts refuse (the API then uses its defaults for them)."""
    session = build_session_config(profile, mode=Call.Mode.PHONE)
    turn_detection = session.get("audio", {}).get("input", {}).get("turn_detection")
    if isinstance(turn_detection, dict):
        for key in SIP_UNSUPPORTED_TURN_DETECTION:
            turn_detection.pop(key, None)
    return session


async def answer_incoming_call(*, decision: Decision) -> None:
    """Accept or reject the call upstream as decided, then start observing an accepted call."""
    assert decision.provider_call_id is not None
    started = time.monotonic()
    bind_call_id(decision.call_id)  # this task's log lines (a fresh context: see receive_webhook)
    if decision.reject_status is not None:
        record_call_setup("sip", "rejected")
        try:
            async with RealtimeClient() as client:
                await client.reject_call(decision.provider_call_id, status_code=decision.reject_status)
        except RealtimeError as exc:  # the caller may be gone already: the call is rejected either way
            logger.info("call %s: reject failed (%s, %s)", decision.provider_call_id, exc.status, exc.code)
        return
    assert decision.call_id is not None
    call = await Call.objects.select_related("agent").aget(pk=decision.call_id)
    session = phone_session_config(call.agent)
    try:
        async with RealtimeClient() as client:
            await client.accept_call(decision.provider_call_id, session=session)
    except RealtimeError as exc:
        record_call_setup("sip", "missed" if exc.status == 404 else setup_outcome(exc))
        if exc.status == 404:
            await _mark_missed(call)
            return
        logger.warning("call %s: accept failed (%s, %s)", call.id, exc.status, exc.code)
        await amark_call_failed(call=call, error=exc.message)
        await WebhookDelivery.objects.filter(call=call).aupdate(outcome=WebhookDelivery.Outcome.FAILED)
        return
    record_call_setup("sip", "ok", started=started)
    try:
        await request_observation(call.id)
    except (ObserverUnavailableError, ChannelFull, OSError) as exc:
        logger.warning("call %s: observer not reached (%s); no transcript will be recorded", call.id, exc)


async def _mark_missed(call: Call) -> None:
    now = timezone.now()
    await (
        Call.objects.filter(pk=call.pk)
        .exclude(status__in=Call.FINAL_STATUSES)
        .aupdate(status=Call.Status.ENDED, end_reason=END_REASON_MISSED, ended_at=now)
    )
    logger.info("call %s: the caller hung up before the answer", call.id)


# --- transfer -----------------------------------------------------------------------------------------

_TARGET_RE: Final = re.compile(r"(?:tel:\+?[0-9]{3,20}|sips?:[^\s<>\"]{3,200})", re.IGNORECASE)


def normalize_transfer_target(target: str) -> str:
    """`+1 555 123` → `tel:+1555123`; `tel:`/`sip:`/`sips:` URIs as given (scheme lower-cased).
    `TransferError(code="invalid_target")` for anything else."""
    text = target.strip()
    scheme, sep, rest = text.partition(":")
    if sep and scheme.lower() in ("tel", "sip", "sips"):
        uri = f"{scheme.lower()}:{rest}"
        if scheme.lower() == "tel":
            uri = (
                "tel:"
                + ("+" if rest.strip().startswith("+") else "")
                + re.sub(r"[\s().-]", "", rest.strip().lstrip("+"))
            )
    elif re.fullmatch(r"\+?[0-9 ().-]{3,30}", text):
        uri = "tel:" + ("+" if text.startswith("+") else "") + re.sub(r"\D", "", text)
    else:
        raise TransferError("Transfer targets are phone numbers or tel:/sip: URIs.", code="invalid_target")
    if _TARGET_RE.fullmatch(uri) is None:
        raise TransferError("Transfer targets are phone numbers or tel:/sip: URIs.", code="invalid_target")
    return uri


def allowed_transfer_targets(profile: AgentProfile) -> list[str]:
    """The profile's allow-list, normalized (malformed entries are skipped)."""
    targets: list[str] = []
    for entry in profile.transfer_targets if isinstance(profile.transfer_targets, list) else []:
        try:
            targets.append(normalize_transfer_target(str(entry)))
        except TransferError:
            logger.warning("agent %s: transfer target entry is not a number or URI; ignored", profile.pk)
    return targets


async def transfer_call(*, call: Call, target_uri: str) -> Call:
    """Transfer the live phone `call` to `target_uri` (SIP REFER via `…/refer`); status `transferred`.

    `target_uri` must be on the agent's `transfer_targets` (`TransferNotAllowed` otherwise: an
    open transfer is toll fraud waiting to happen); `TransferError` if the call is not a live phone
    call. Upstream refusals propagate as `RealtimeError` and leave the call as it was.
    The caller ID the transferred leg shows is set by the SIP trunk (`FROM_NUMBER`, docs/telephony.md).
    """
    target = normalize_transfer_target(target_uri)
    if call.is_final or call.provider_call_id is None:
        raise TransferError("Only a live call can be transferred.", code="not_live")
    if call.source != Call.Source.SIP:
        raise TransferError("Only phone calls can be transferred.", code="not_phone")
    agent = await AgentProfile.objects.aget(pk=call.agent_id)
    if target not in allowed_transfer_targets(agent):
        logger.warning("call %s: transfer to a target not on the allow-list refused", call.id)
        raise TransferNotAllowed("This number is not on the agent's transfer list.", code="not_allowed")
    async with RealtimeClient() as client:
        await client.refer_call(call.provider_call_id, target_uri=target)
    now = timezone.now()
    reason = f"{END_REASON_TRANSFERRED} to {target}"[:100]
    updated = (
        await Call.objects.filter(pk=call.pk)
        .exclude(status__in=Call.FINAL_STATUSES)
        .aupdate(status=Call.Status.TRANSFERRED, end_reason=reason, ended_at=now)
    )
    if updated:
        call.status, call.end_reason, call.ended_at = Call.Status.TRANSFERRED, reason, now
    else:
        await call.arefresh_from_db(fields=["status", "end_reason", "ended_at", "error"])
    logger.info("call %s: transferred", call.id)
    try:
        await request_stop(call.id, reason=reason)
    except (ObserverUnavailableError, ChannelFull, OSError) as exc:
        logger.warning("call %s: observer stop not delivered (%s)", call.id, exc)
    return call
