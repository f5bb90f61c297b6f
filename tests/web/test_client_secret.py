"""`POST /api/realtime/client-secret` and `POST /api/calls`: the direct transport's two endpoints."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.test import AsyncClient

from calls.models import Call
from calls.services.calls import CLIENT_SECRET_RATE_PER_MINUTE
from tests.engine.conftest import API_KEY, RunningEngine, make_offer
from tests.factories import CallFactory
from tests.web.conftest import SignedIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("default_agent")]

SignIn = Callable[..., Awaitable[SignedIn]]


@pytest.fixture(autouse=True)
def empty_cache() -> None:
    """Rate-limit windows live in the cache; each test starts with none."""
    cache.clear()


async def test_client_secret_returns_only_value_and_expiry(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    staff = await sign_in_async()
    response = await staff.client.post("/api/realtime/client-secret")

    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"value", "expires_at"}
    assert body["value"].startswith("ek_")
    assert API_KEY not in response.content.decode()
    assert response["Cache-Control"] == "no-store"


async def test_the_key_creates_a_call_that_can_then_be_registered(
    local_engine: RunningEngine,
    sign_in_async: SignIn,
    observer_inbox: Callable[[], Awaitable[dict[str, object]]],
) -> None:
    """The whole direct transport: key → the browser's own create-call → POST /api/calls."""
    staff = await sign_in_async()
    secret = (await staff.client.post("/api/realtime/client-secret")).json()["value"]
    created = await local_engine.http.post(
        f"{local_engine.base_url}/realtime/calls",
        content=await make_offer(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/sdp"},
    )
    assert created.status_code == 201, created.text
    provider_call_id = created.headers["Location"].rsplit("/", 1)[-1]

    response = await staff.client.post(
        "/api/calls",
        data={"provider_call_id": provider_call_id, "mode": "webcam"},
        content_type="application/json",
    )

    assert response.status_code == 201
    call = await Call.objects.aget(provider_call_id=provider_call_id)
    assert response.json() == {"id": str(call.id), "provider_call_id": provider_call_id}
    assert (call.transport, call.mode, call.status, call.user_id) == (
        "direct",
        "webcam",
        "connecting",
        staff.user.pk,
    )
    assert await observer_inbox() == {"type": "observe.start", "call_id": str(call.id), "reason": ""}


async def test_client_secrets_are_rate_limited_per_user(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    busy = await sign_in_async()
    other = await sign_in_async()
    statuses = [
        (await busy.client.post("/api/realtime/client-secret")).status_code
        for _ in range(CLIENT_SECRET_RATE_PER_MINUTE)
    ]
    refused = await busy.client.post("/api/realtime/client-secret")
    others = await other.client.post("/api/realtime/client-secret")

    assert statuses == [200] * CLIENT_SECRET_RATE_PER_MINUTE
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert 1 <= int(refused["Retry-After"]) <= 61
    assert others.status_code == 200


async def test_client_secret_is_for_staff_only(local_engine: RunningEngine, sign_in_async: SignIn) -> None:
    visitor = await sign_in_async(staff=False)
    assert (await visitor.client.post("/api/realtime/client-secret")).status_code == 403
    assert (await AsyncClient().post("/api/realtime/client-secret")).status_code == 401


async def test_client_secret_needs_the_csrf_token(local_engine: RunningEngine, sign_in_async: SignIn) -> None:
    staff = await sign_in_async()
    strict = AsyncClient(enforce_csrf_checks=True)
    await strict.aforce_login(staff.user)
    refused = await strict.post("/api/realtime/client-secret", headers={"Origin": "http://testserver"})
    await strict.get("/")
    accepted = await strict.post(
        "/api/realtime/client-secret", headers={"X-CSRFToken": strict.cookies["csrftoken"].value}
    )

    assert (refused.status_code, accepted.status_code) == (403, 200)


@pytest.mark.parametrize(
    "body",
    [
        {"provider_call_id": "rtc_../../client_secrets", "mode": "audio"},
        {"provider_call_id": "..%2F..%2Fclient_secrets", "mode": "audio"},
        {"provider_call_id": "rtc_abcdef\n", "mode": "audio"},
        {"provider_call_id": 12345678, "mode": "audio"},
        {"provider_call_id": "rtc_abcdef123", "mode": "hologram"},
        {"mode": "audio"},
    ],
    ids=["dots", "encoded-slash", "newline", "number", "mode", "missing"],
)
async def test_register_refuses_malformed_ids_and_modes(
    sign_in_async: SignIn, body: dict[str, object]
) -> None:
    staff = await sign_in_async()
    response = await staff.client.post("/api/calls", data=json.dumps(body), content_type="application/json")

    assert response.status_code == 400
    assert await Call.objects.acount() == 0


async def test_register_refuses_a_call_already_on_record(sign_in_async: SignIn) -> None:
    owner = await sign_in_async()
    other = await sign_in_async()
    existing = await sync_to_async(CallFactory.create)(user=owner.user)

    response = await other.client.post(
        "/api/calls",
        data={"provider_call_id": existing.provider_call_id, "mode": "audio"},
        content_type="application/json",
    )

    assert response.status_code == 409
    assert await Call.objects.acount() == 1


async def test_register_is_for_staff_only(sign_in_async: SignIn) -> None:
    visitor = await sign_in_async(staff=False)
    body = {"provider_call_id": "rtc_abcdef123", "mode": "audio"}
    response = await visitor.client.post("/api/calls", data=body, content_type="application/json")
    assert response.status_code == 403
    assert await Call.objects.acount() == 0
