"""Per-user rate limits on the endpoints that cost money or hand out credentials (`/rtc`, client secrets).

Rates are settings strings such as ``"30/m"`` (count per second, minute, hour or day, optionally with a
multiplier: ``"100/5m"``); ``"off"`` or an empty value disables a limit (the load bench does, since it
sets up hundreds of calls as one user). Counting is a fixed window per user in Django's cache, so that
every web process shares it when the cache is Redis (`REDIS_URL`); with the development LocMem cache it
is per process. We keep this small async limiter rather than django-ratelimit's decorator: the views are
async, and the refusal must carry Retry-After (the seconds until the window resets), which
django-ratelimit does not compute.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Final

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import ImproperlyConfigured

_PERIODS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_RATE: Final = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_OFF: Final = {"", "off", "none", "0"}


@dataclass(frozen=True)
class Rate:
    """At most `count` requests per `period_s` seconds."""

    count: int
    period_s: int

    def describe(self) -> str:
        unit = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}.get(self.period_s)
        return f"{self.count} per {unit}" if unit else f"{self.count} per {self.period_s} s"


class RateLimited(Exception):
    """Too many requests from one user; `retry_after` is the seconds until the window resets."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


def parse_rate(text: str, *, setting: str) -> Rate | None:
    """`"30/m"` → Rate(30, 60); `"off"`/empty → None; anything else is a configuration error naming
    `setting` (raised when the limit is first used)."""
    if text.strip().lower() in _OFF:
        return None
    match = _RATE.match(text)
    if match is None or int(match.group(1)) < 1:
        raise ImproperlyConfigured(
            f"{setting}={text!r} is not a rate: write e.g. '30/m' (count per s, m, h or d), or 'off'."
        )
    multiplier = int(match.group(2) or 1)
    return Rate(count=int(match.group(1)), period_s=multiplier * _PERIODS[match.group(3)])


def check_rate_sync(*, scope: str, user_pk: object, setting: str, what: str) -> None:
    """Count one request of `user_pk` against the rate in settings.`setting`; `RateLimited` past it.

    `what` names the thing limited in the refusal ("call set-ups"), which the user reads. Sync, so
    that a call set-up can count itself in the same thread hand-off as its database work; the count
    is the cache's own atomic increment (Redis INCR; LocMem under its lock), never a read-then-write.
    """
    rate = parse_rate(str(getattr(settings, setting)), setting=setting)
    if rate is None:
        return
    now = time.time()
    window = int(now // rate.period_s)
    key = f"ratelimit:{scope}:{user_pk}:{window}"
    ttl = rate.period_s + 30
    cache.add(key, 0, timeout=ttl)
    try:
        count = cache.incr(key)
    except ValueError:  # the key expired between add and incr: this is the window's first request
        cache.set(key, 1, timeout=ttl)
        count = 1
    if count > rate.count:
        retry_after = max(1, int((window + 1) * rate.period_s - now) + 1)
        raise RateLimited(
            f"Too many {what}: at most {rate.describe()}. Try again in {retry_after} s.",
            retry_after=retry_after,
        )


async def check_rate(*, scope: str, user_pk: object, setting: str, what: str) -> None:
    """`check_rate_sync` for async callers: one thread hand-off (Django's async cache methods would
    take three, and their `aincr` is a get and a set: two concurrent requests could both count 1)."""
    await sync_to_async(check_rate_sync)(scope=scope, user_pk=user_pk, setting=setting, what=what)
