"""The lifecycle of a web call: start it (proxy), register it (direct), hang it up, and mint keys.

Every state change of a `Call` made outside the observer lives here; views only parse and authorize.
The observer is asked to watch or stop watching through `calls.observer.dispatch`, always after the
row it needs is committed (the async ORM runs each write in autocommit, so "after the await" is
"after commit"). Upstream failures are recorded on the call (`failed` + the reason) and re-raised as
the typed errors of `realtime_client` for the edge to turn into HTTP statuses.

Status changes are conditional updates that never move a call out of a final status, so the observer
(which may end the same call at the same moment) and a repeated hang-up cannot undo each other.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any, Final

from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from django.contrib.auth.models import AnonymousUser, User
from django.db import IntegrityError
from django.utils import timezone
from redis.exceptions import RedisError

from calls.models import AgentProfile, Call
from calls.observer.dispatch import ObserverUnavailableError, request_observation, request_stop
from calls.services.ratelimit import RateLimited, check_rate, check_rate_sync
from calls.services.realtime_client import (
    ClientSecret,
    RealtimeClient,
    RealtimeError,
    RealtimeUnavailable,
    check_provider_call_id,
)
from calls.services.session_config import WEB_MODES, build_session_config
from voiceagent.availability import release_db_connection_sync
from voiceagent.monitoring.logs import bind_call_id
from voiceagent.monitoring.metrics import (
    counted_call_setup,
    instrument_call_setup,
    record_call_setup,
    setup_outcome,
)

logger = logging.getLogger(__name__)

#: Client secrets one user may mint per minute by default (each one is a live credential for a call);
#: settings.CLIENT_SECRET_RATE_LIMIT ("10/m") sets it.
CLIENT_SECRET_RATE_PER_MINUTE: Final = 10
#: Lifetime of a client secret: long enough to set up a call, short enough to be useless if leaked.
CLIENT_SECRET_TTL_S: Final = 600

HANGUP_REASON: Final = "hung up by the user"

UserLike = User | AnonymousUser


class CallSetupError(Exception):
    """A call could not be set up for a reason of ours (not the API's); `code` names it."""

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class CallAlreadyRegistered(CallSetupError):
    """A direct call was registered with a provider call id that another Call already has."""


def _check_mode(mode: str) -> Call.Mode:
    if mode not in WEB_MODES:
        raise CallSetupError(
            f"Unknown mode {mode!r}: expected one of {', '.join(sorted(WEB_MODES))}.", code="invalid_mode"
        )
    return Call.Mode(mode)


def default_profile() -> AgentProfile:
    """The default agent profile (sync; the data migration makes one, the admin keeps at most one)."""
    profile = AgentProfile.objects.order_by("-is_default", "name").first()
    if profile is None:
        raise CallSetupError("No agent profile exists; create one in the admin.", code="no_agent_profile")
    return profile


async def _agent_profile() -> AgentProfile:
    return await sync_to_async(default_profile)()


async def _observe(call: Call) -> None:
    """Ask the observer to watch `call`. A missing layer is logged, not fatal: the call itself works."""
    try:
        await request_observation(call.id)
    except (ObserverUnavailableError, ChannelFull, OSError, RedisError) as exc:
        # RedisError: the channel layer is down. The call goes on; a worker's lease scanner attaches
        # to live calls that nobody observes (docs/scaling.md).
        logger.warning("call %s: observer not reached (%s); no transcript will be recorded", call.id, exc)


async def _stop_observing(call: Call, *, reason: str) -> None:
    try:
        await request_stop(call.id, reason=reason)
    except (ObserverUnavailableError, ChannelFull, OSError, RedisError) as exc:
        logger.warning("call %s: observer stop not delivered (%s)", call.id, exc)


def mark_call_failed(*, call: Call, error: str) -> None:
    """Record that `call` failed with `error` (sync). A call already in a final status is left alone."""
    now = timezone.now()
    updated = (
        Call.objects.filter(pk=call.pk)
        .exclude(status__in=Call.FINAL_STATUSES)
        .update(status=Call.Status.FAILED, error=error, end_reason="failed", ended_at=now)
    )
    if updated:
        call.status, call.error, call.end_reason, call.ended_at = Call.Status.FAILED, error, "failed", now


async def amark_call_failed(*, call: Call, error: str) -> None:
    """`mark_call_failed` for async callers (one UPDATE)."""
    now = timezone.now()
    updated = (
        await Call.objects.filter(pk=call.pk)
        .exclude(status__in=Call.FINAL_STATUSES)
        .aupdate(status=Call.Status.FAILED, error=error, end_reason="failed", ended_at=now)
    )
    if updated:
        call.status, call.error, call.end_reason, call.ended_at = Call.Status.FAILED, error, "failed", now


@dataclass(frozen=True)
class WebCallPlan:
    """A web call admitted for set-up: counted against its user's rate, its profile read, its
    session config built, its `Call` made but not saved (the API has not answered yet)."""

    call: Call
    session: dict[str, Any]
    #: time.monotonic() at admission, where the set-up's latency is measured from.
    started: float


def admit_web_call(*, user: UserLike, mode: str, transport: str = Call.Transport.PROXY) -> WebCallPlan:
    """The checks before an offer goes upstream (sync, run in the view's one thread hand-off, after
    its sign-in check): the mode, the user's set-up rate, the default profile. The thread's database
    connection is given back at the end, so it is not held while the API answers
    (voiceagent/availability.py). Refusals (`RateLimited`, `CallSetupError`) are counted in the
    set-up metrics here, as `start_web_call` counts the rest."""
    started = time.monotonic()
    try:
        call_mode = _check_mode(mode)
        if isinstance(user, User):
            check_rate_sync(scope="rtc", user_pk=user.pk, setting="RTC_RATE_LIMIT", what="call set-ups")
        profile = default_profile()
    except (CallSetupError, RateLimited) as exc:
        record_call_setup(transport, setup_outcome(exc))
        raise
    finally:
        release_db_connection_sync()
    call = Call(
        source=Call.Source.WEB,
        mode=call_mode,
        transport=Call.Transport(transport),
        user=user if isinstance(user, User) else None,
        agent=profile,
        status=Call.Status.CONNECTING,
    )
    return WebCallPlan(call=call, session=build_session_config(profile, mode=call_mode), started=started)


def _record_web_call(call: Call) -> Call:
    """Insert `call` as its set-up left it (sync, one INSERT) and give the connection back."""
    call.save(force_insert=True)
    release_db_connection_sync()
    return call


async def start_web_call(plan: WebCallPlan, *, offer_sdp: str) -> tuple[Call, str]:
    """Create the admitted web call from the browser's SDP offer; return the Call and the SDP answer.

    The Call row is written once, when the API has answered: `connecting` with the provider's call
    id, or `failed` with the reason when the API refused (the `RealtimeError` then propagates), so
    every set-up is on record in one INSERT instead of an insert before and an update after (the
    row's `created_at` is still the moment the set-up began, and its id is chosen then, so the
    set-up's log lines carry it). Once answered, recording the call and asking the observer to
    attach run to completion even if the browser goes away meanwhile: the call exists upstream,
    so it must be on record and observed. With the admission, two thread hand-offs per set-up
    (admission with the sign-in check; the insert) and the API over a kept-alive connection
    (`realtime_client`). Counted and timed in voiceagent_call_setups_total and the set-up latency.
    """
    call = plan.call
    bind_call_id(call.id)
    with counted_call_setup(call.transport, started=plan.started):
        try:
            async with RealtimeClient() as client:
                created = await client.create_call(offer_sdp=offer_sdp, session=plan.session)
        except RealtimeError as exc:
            logger.warning("call %s: upstream refused the offer (%s, %s)", call.id, exc.status, exc.code)
            await sync_to_async(_record_web_call)(_failed(call, exc.message))
            raise
        except asyncio.CancelledError:
            # The browser went away mid-request (Django cancels the view): no answer will ever reach it.
            await asyncio.shield(
                sync_to_async(_record_web_call)(_failed(call, "The browser disconnected before the answer."))
            )
            raise
        call.provider_call_id = created.provider_call_id
        await asyncio.shield(_record_and_observe(call))
    logger.info("call %s started as %s", call.id, created.provider_call_id)
    return call, created.answer_sdp


def _failed(call: Call, error: str) -> Call:
    """`call` (not yet saved) as a set-up that failed with `error`."""
    call.status, call.error, call.end_reason = Call.Status.FAILED, error, "failed"
    call.ended_at = timezone.now()
    return call


async def _record_and_observe(call: Call) -> None:
    """Insert the answered call and ask the observer to attach; if it cannot be recorded, end it
    upstream (a call nobody records or observes must not go on) and let the error propagate."""
    try:
        await sync_to_async(_record_web_call)(call)
    except Exception as exc:
        logger.error("call %s: could not be recorded (%s); hanging it up upstream", call.id, exc)
        try:
            async with RealtimeClient() as client:
                await client.hangup_call(call.provider_call_id or "")
        except RealtimeError as hangup_error:
            logger.warning("call %s: the upstream hang-up failed too (%s)", call.id, hangup_error.status)
        if isinstance(exc, IntegrityError):  # the API named a call that is already on record
            raise RealtimeUnavailable(
                "The Realtime API answered with a call id that is already on record; the call was ended.",
                code="duplicate_call_id",
            ) from exc
        raise
    await _observe(call)


@instrument_call_setup("direct")
async def register_direct_call(*, user: UserLike, provider_call_id: str, mode: str) -> Call:
    """Record a call the browser created straight with the API (ephemeral key) and observe it.

    `provider_call_id` must be a well-formed id (`InvalidProviderCallId` otherwise) that no Call has
    yet (`CallAlreadyRegistered`): nobody can attach our observer to a call already on record.
    """
    checked = check_provider_call_id(provider_call_id)
    call_mode = _check_mode(mode)
    profile = await _agent_profile()
    try:
        call = await Call.objects.acreate(
            provider_call_id=checked,
            source=Call.Source.WEB,
            mode=call_mode,
            transport=Call.Transport.DIRECT,
            user=user if isinstance(user, User) else None,
            agent=profile,
            status=Call.Status.CONNECTING,
        )
    except IntegrityError:
        raise CallAlreadyRegistered(
            "A call with this provider call id is already registered.", code="conflict"
        ) from None
    bind_call_id(call.id)
    logger.info("call %s registered as direct call %s", call.id, checked)
    await _observe(call)
    return call


async def hang_up_call(*, call: Call, reason: str = HANGUP_REASON) -> Call:
    """End `call` upstream, mark it `ended` with `reason`, and tell the observer. Idempotent.

    A call already in a final status is returned as it is (no upstream request). The API's 404
    (the call is already gone upstream) counts as hung up. Any other upstream error propagates and
    leaves the call as it was, so that the hang-up can be retried.
    """
    if call.is_final:
        return call
    if call.provider_call_id:
        try:
            async with RealtimeClient() as client:
                await client.hangup_call(call.provider_call_id)
        except RealtimeError as exc:
            if exc.status != 404:
                raise
            logger.info("call %s was already gone upstream", call.id)
    now = timezone.now()
    updated = (
        await Call.objects.filter(pk=call.pk)
        .exclude(status__in=Call.FINAL_STATUSES)
        .aupdate(status=Call.Status.ENDED, end_reason=reason, ended_at=now)
    )
    if updated:
        call.status, call.end_reason, call.ended_at = Call.Status.ENDED, reason, now
    else:
        await call.arefresh_from_db(fields=["status", "end_reason", "ended_at", "error"])
    await _stop_observing(call, reason=reason)
    return call


async def issue_client_secret(*, user: UserLike, mode: str = Call.Mode.AUDIO) -> ClientSecret:
    """An ephemeral key for a session with the default agent's config, rate-limited per user.

    Only the key and its expiry leave this function; the API key never does.
    """
    if not isinstance(user, User):
        raise CallSetupError("Sign in first.", code="not_authenticated")
    await check_rate(
        scope="client-secret", user_pk=user.pk, setting="CLIENT_SECRET_RATE_LIMIT", what="client secrets"
    )
    call_mode = _check_mode(mode)
    profile = await _agent_profile()
    session = build_session_config(profile, mode=call_mode)
    async with RealtimeClient() as client:
        secret = await client.create_client_secret(session=session, expires_in_s=CLIENT_SECRET_TTL_S)
    logger.info("client secret issued to user %s", user.pk)
    return secret
