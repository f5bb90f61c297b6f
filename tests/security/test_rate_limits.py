"""Per-user rate limits on call set-up (`POST /rtc`) and client secrets, from settings, on the cache.

Driven against the real local engine: the allowed requests really set up calls / mint keys; the
refused one is a 429 with Retry-After and a JSON message, and leaves no Call row behind.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Iterator

import pytest
from django.core.exceptions import ImproperlyConfigured
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call
from calls.services.ratelimit import Rate, parse_rate
from tests.engine.conftest import RunningEngine, make_offer, start_engine
from tests.web.conftest import (
    SignedIn,
    close_async_orm_connections,
    default_agent,
    local_engine,
    sign_in_async,
)

__all__ = ["close_async_orm_connections", "default_agent", "local_engine", "sign_in_async", "start_engine"]

SignIn = Callable[..., Awaitable[SignedIn]]


async def post_offer(signed_in: SignedIn) -> tuple[int, dict[str, str], bytes]:
    response = await signed_in.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    return response.status_code, dict(response.headers), response.content


def assert_refusal(status: int, headers: dict[str, str], body: bytes, *, period_s: int) -> None:
    """A 429 that says what happened, in JSON, and when to come back."""
    import json

    assert status == 429, body
    assert headers["Content-Type"] == "application/json"
    error = json.loads(body)["error"]
    assert error["code"] == "rate_limited"
    assert "Too many" in error["message"] and "Try again in" in error["message"]
    assert 1 <= int(headers["Retry-After"]) <= period_s + 1


@pytest.mark.usefixtures("default_agent")
async def test_rtc_refuses_a_user_past_the_limit_and_serves_others(
    local_engine: RunningEngine, sign_in_async: SignIn, settings: SettingsWrapper
) -> None:
    settings.RTC_RATE_LIMIT = "2/m"
    busy = await sign_in_async()
    other = await sign_in_async()

    allowed = [(await post_offer(busy))[0] for _ in range(2)]
    refused = await post_offer(busy)
    others = await post_offer(other)

    assert allowed == [201, 201]
    assert_refusal(*refused, period_s=60)
    assert others[0] == 201
    # The refused set-up never reached the engine and left no call on record.
    assert await Call.objects.filter(user=busy.user).acount() == 2
    assert len(local_engine.state.calls) == 3


@pytest.mark.usefixtures("default_agent")
async def test_client_secrets_follow_their_own_setting(
    local_engine: RunningEngine, sign_in_async: SignIn, settings: SettingsWrapper
) -> None:
    settings.CLIENT_SECRET_RATE_LIMIT = "3/h"
    staff = await sign_in_async()

    allowed = [(await staff.client.post("/api/realtime/client-secret")).status_code for _ in range(3)]
    refused = await staff.client.post("/api/realtime/client-secret")
    # The set-up limit is a separate budget.
    call = await post_offer(staff)

    assert allowed == [200, 200, 200]
    assert_refusal(refused.status_code, dict(refused.headers), refused.content, period_s=3600)
    assert "3 per hour" in refused.json()["error"]["message"]
    assert call[0] == 201


@pytest.mark.usefixtures("default_agent")
async def test_off_disables_the_limit(
    local_engine: RunningEngine, sign_in_async: SignIn, settings: SettingsWrapper
) -> None:
    settings.CLIENT_SECRET_RATE_LIMIT = "off"
    staff = await sign_in_async()
    statuses = {(await staff.client.post("/api/realtime/client-secret")).status_code for _ in range(12)}
    assert statuses == {200}


@pytest.fixture
def redis_cache(settings: SettingsWrapper) -> Iterator[str]:
    """Django's cache on the machine's Redis (db 5 is this battery's manual index; the test's keys
    carry a random prefix and are deleted after, nothing else is touched)."""
    import redis

    url = "redis://127.0.0.1:6379/5"
    client = redis.Redis.from_url(url)
    try:
        client.ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379 (.ci/run starts one)")
    prefix = f"test-security-{uuid.uuid4().hex[:12]}"
    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": url,
            "KEY_PREFIX": prefix,
        }
    }
    yield prefix
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()


@pytest.mark.usefixtures("default_agent")
async def test_the_count_is_kept_in_the_shared_cache(
    local_engine: RunningEngine, sign_in_async: SignIn, settings: SettingsWrapper, redis_cache: str
) -> None:
    """With the cache on Redis (REDIS_URL) every web process counts against the same window."""
    import redis.asyncio

    settings.CLIENT_SECRET_RATE_LIMIT = "2/m"
    staff = await sign_in_async()
    statuses = [(await staff.client.post("/api/realtime/client-secret")).status_code for _ in range(3)]

    assert statuses == [200, 200, 429]
    client = redis.asyncio.Redis.from_url("redis://127.0.0.1:6379/5")
    try:
        keys = [key.decode() async for key in client.scan_iter(match=f"{redis_cache}:*")]
        assert len(keys) == 1 and f"ratelimit:client-secret:{staff.user.pk}:" in keys[0]
        assert await client.get(keys[0]) == b"3"
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("text", "rate"),
    [
        ("30/m", Rate(30, 60)),
        ("10/s", Rate(10, 1)),
        ("100/5m", Rate(100, 300)),
        (" 2 / h ", Rate(2, 3600)),
        ("1/d", Rate(1, 86400)),
        ("off", None),
        ("", None),
        ("0", None),
    ],
)
def test_rates_are_read_from_settings_strings(text: str, rate: Rate | None) -> None:
    assert parse_rate(text, setting="RTC_RATE_LIMIT") == rate


@pytest.mark.parametrize("text", ["30", "30/minute", "-1/m", "0/m", "x/m", "30/m/h"])
def test_a_malformed_rate_names_its_setting(text: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="RTC_RATE_LIMIT"):
        parse_rate(text, setting="RTC_RATE_LIMIT")
