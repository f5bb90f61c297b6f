"""The per-user rate limit counts every request exactly once, even when they arrive together.

Django's async cache API increments with a get and a set (two awaits): concurrent set-ups could both
read the same count and let more through than the limit. `check_rate` counts with the cache's own
atomic increment in one thread hand-off.
"""

from __future__ import annotations

import asyncio

import pytest
from django.core.cache import cache
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.services.ratelimit import RateLimited, check_rate


async def test_concurrent_requests_are_each_counted(settings: SettingsWrapper) -> None:
    settings.RTC_RATE_LIMIT = "10/m"
    await cache.aclear()

    async def one() -> bool:
        try:
            await check_rate(scope="rtc", user_pk=7, setting="RTC_RATE_LIMIT", what="call set-ups")
        except RateLimited:
            return False
        return True

    outcomes = await asyncio.gather(*(one() for _ in range(25)))
    assert outcomes.count(True) == 10
    with pytest.raises(RateLimited):
        await one_more()


async def one_more() -> None:
    await check_rate(scope="rtc", user_pk=7, setting="RTC_RATE_LIMIT", what="call set-ups")
