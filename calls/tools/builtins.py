"""The built-in tools an agent profile may enable (by name, in `AgentProfile.tools`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import importlib
import logging
import re
import unicodedata
import zoneinfo
from typing import Any, Final

from calls.tools.base import Tool, ToolContext, ToolError, tool
from calls.tools.weather_table import WEATHER, Weather

logger = logging.getLogger(__name__)

#: Seconds `end_call` waits before hanging up when no observer schedules it (lets the goodbye play).
END_CALL_GRACE_S: Final = 3.0
END_CALL_REASON: Final = "ended by the agent"
_TARGET_NUMBER: Final = re.compile(r"^\+?[0-9][0-9 ()./-]{2,30}$")


def _zone_name(value: str) -> str | None:
    """An IANA zone from an IANA name, or from a city that names one ("Tokyo" → Asia/Tokyo): models
    and the local engine's rule responder often pass the city that was asked about."""
    text = value.strip()
    if not text:
        return None
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        pass
    else:
        return text
    city = text.replace(" ", "_").lower()
    matches = sorted(
        zone for zone in zoneinfo.available_timezones() if zone.lower().rsplit("/", 1)[-1] == city
    )
    return matches[0] if matches else None


@tool
def get_current_time(timezone: str) -> dict[str, str]:
    """Get the current date and time in a time zone.

    Args:
        timezone: An IANA time zone name, e.g. "Europe/Paris", "America/New_York" or "UTC" (a city
            that names a zone, e.g. "Tokyo", is understood too).
    """
    name = _zone_name(timezone)
    if name is None:
        raise ToolError(f"unknown time zone {timezone.strip()!r}; use an IANA name such as Europe/Paris")
    zone = zoneinfo.ZoneInfo(name)
    now = dt.datetime.now(zone)
    return {
        "timezone": name,
        "time": now.strftime("%H:%M"),
        "date": now.date().isoformat(),
        "weekday": now.strftime("%A"),
        "iso": now.isoformat(timespec="seconds"),
    }


def _city_key(city: str) -> str:
    plain = unicodedata.normalize("NFKD", city).encode("ascii", "ignore").decode()
    return " ".join(re.sub(r"[^a-z ]", " ", plain.lower()).split())


@tool
def get_weather(city: str) -> Weather:
    """Get the current weather (temperature in °C and conditions) for a city.

    Args:
        city: The city's name, e.g. "Paris".
    """
    key = _city_key(city)
    found = WEATHER.get(key) or next((w for k, w in WEATHER.items() if k in key.split(",")[0]), None)
    if found is None:
        known = ", ".join(w["city"] for w in WEATHER.values())
        raise ToolError(f"no weather known for {city!r}; known cities: {known}")
    return found


@tool
async def end_call(reason: str, context: ToolContext) -> dict[str, str]:
    """End the call politely: say goodbye first; the line is hung up once your reply has played.

    Args:
        reason: Why the call ends, in a few words (e.g. "the caller said goodbye").
    """
    why = f"{END_CALL_REASON}: {reason.strip()}"[:100] if reason.strip() else END_CALL_REASON
    if context.hang_up is not None:
        context.hang_up(why)
    else:
        asyncio.get_running_loop().call_later(
            END_CALL_GRACE_S, lambda: asyncio.ensure_future(_hang_up(context.call, why))
        )
    return {"status": "ending", "reason": why}


async def _hang_up(call: Any, reason: str) -> None:
    from calls.services.calls import hang_up_call
    from calls.services.realtime_client import RealtimeError

    try:
        await hang_up_call(call=call, reason=reason)
    except RealtimeError as exc:
        logger.warning("call %s: end_call hang-up failed: %r", call.pk, exc)


def transfer_target_uri(target: str) -> str:
    """A SIP REFER target from what the model said: a sip:/tel: URI as is, a phone number as tel:."""
    value = target.strip()
    if value.lower().startswith(("sip:", "sips:", "tel:")):
        return value
    if _TARGET_NUMBER.match(value):
        return "tel:" + re.sub(r"[^0-9+]", "", value)
    raise ToolError(f"cannot transfer to {target!r}: give a phone number (+15551234567) or a sip: URI")


@tool
async def transfer_call(target: str, context: ToolContext) -> dict[str, str]:
    """Transfer a phone call to another number or SIP address (phone calls only).

    Args:
        target: Where to transfer: a phone number in international form (e.g. "+15551234567") or a
            SIP URI (e.g. "sip:support@example.com").
    """
    from calls.models import Call

    if context.call.source != Call.Source.SIP:
        raise ToolError("transfer_call works on phone calls only; this is a web call")
    target_uri = transfer_target_uri(target)
    try:
        services = importlib.import_module("telephony.services")
    except ImportError:
        services = None
    transfer = getattr(services, "transfer_call", None)
    if transfer is None:
        raise ToolError("call transfer is not available on this server yet")
    refused = getattr(services, "TransferError", None)
    refusals: tuple[type[BaseException], ...] = (refused,) if isinstance(refused, type) else ()
    try:
        await transfer(call=context.call, target_uri=target_uri)
    except refusals as exc:  # not allowed, not live: the model should tell the caller
        raise ToolError(f"transfer refused: {exc}") from None
    return {"status": "transferred", "target": target_uri}


BUILTIN_TOOLS: Final[tuple[Tool, ...]] = (get_current_time, get_weather, end_call, transfer_call)
