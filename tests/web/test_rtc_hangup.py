"""`POST /rtc/<id>/hangup`: the owner ends the call upstream and on record; nobody else can."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable

import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from django.test import AsyncClient

from calls.models import Call
from tests.engine.conftest import RunningEngine, make_offer
from tests.factories import CallFactory
from tests.web.conftest import FakeUpstream, Respond, SignedIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("default_agent")]

SignIn = Callable[..., Awaitable[SignedIn]]
StartUpstream = Callable[[Respond], Awaitable[FakeUpstream]]
SAME_ORIGIN = {"Origin": "http://testserver"}


async def start_call(staff: SignedIn) -> Call:
    response = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    assert response.status_code == 201, response.content
    return await Call.objects.aget(pk=response["Location"].rsplit("/", 1)[-1])


async def test_hangup_ends_the_call_upstream_and_on_record(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    staff = await sign_in_async()
    call = await start_call(staff)
    assert call.provider_call_id in local_engine.state.calls

    response = await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert response.status_code == 200
    assert response.json() == {"id": str(call.id), "status": "ended", "end_reason": "hung up by the user"}
    assert call.provider_call_id not in local_engine.state.calls
    await call.arefresh_from_db()
    assert call.status == "ended" and call.ended_at is not None


async def test_hangup_is_idempotent(local_engine: RunningEngine, sign_in_async: SignIn) -> None:
    staff = await sign_in_async()
    call = await start_call(staff)
    first = await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)
    await call.arefresh_from_db()
    ended_at = call.ended_at

    second = await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.json()["status"] == "ended"
    await call.arefresh_from_db()
    assert call.ended_at == ended_at


async def test_a_call_already_gone_upstream_is_still_marked_ended(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    staff = await sign_in_async()
    call = await start_call(staff)
    assert call.provider_call_id is not None
    assert (await local_engine.control(call.provider_call_id, "hangup")).status_code == 200

    response = await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert response.status_code == 200
    await call.arefresh_from_db()
    assert call.status == "ended"


async def test_user_a_cannot_hang_up_user_bs_call(local_engine: RunningEngine, sign_in_async: SignIn) -> None:
    owner = await sign_in_async()
    intruder = await sign_in_async()
    call = await start_call(owner)

    response = await intruder.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert response.status_code == 404
    assert call.provider_call_id in local_engine.state.calls
    await call.arefresh_from_db()
    assert call.status == "connecting"


async def test_unknown_call_is_404(sign_in_async: SignIn) -> None:
    staff = await sign_in_async()
    response = await staff.client.post(f"/rtc/{uuid.uuid4()}/hangup", headers=SAME_ORIGIN)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


async def test_other_actions_do_not_exist(sign_in_async: SignIn) -> None:
    staff = await sign_in_async()
    call = await sync_to_async(CallFactory.create)(user=staff.user, status=Call.Status.ACTIVE)
    for action in ("accept", "refer", "..%2F..%2Fclient_secrets", "hangup/extra"):
        response = await staff.client.post(f"/rtc/{call.id}/{action}", headers=SAME_ORIGIN)
        assert response.status_code == 404, action


async def test_anonymous_hangup_is_401(transactional_db: None) -> None:
    response = await AsyncClient().post(f"/rtc/{uuid.uuid4()}/hangup", headers=SAME_ORIGIN)
    assert response.status_code == 401


async def test_cross_site_hangup_without_a_csrf_token_is_refused(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    upstream = await fake_upstream(ok)
    staff = await sign_in_async()
    staff.client = AsyncClient(enforce_csrf_checks=True)
    await staff.client.aforce_login(staff.user)
    call = await sync_to_async(CallFactory.create)(user=staff.user, status=Call.Status.ACTIVE, ended_at=None)

    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {}):
        response = await staff.client.post(f"/rtc/{call.id}/hangup", headers=headers)
        assert response.status_code == 403, headers

    assert upstream.seen == []
    await call.arefresh_from_db()
    assert call.status == "active"


async def test_same_origin_fetch_metadata_or_a_csrf_token_is_accepted(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(status=200)

    upstream = await fake_upstream(ok)
    staff = await sign_in_async()
    staff.client = AsyncClient(enforce_csrf_checks=True)
    await staff.client.aforce_login(staff.user)
    by_fetch_metadata, by_token = [
        await sync_to_async(CallFactory.create)(user=staff.user, status=Call.Status.ACTIVE, ended_at=None)
        for _ in range(2)
    ]
    await staff.client.get("/")  # the console page sets the CSRF cookie
    token = staff.client.cookies["csrftoken"].value

    first = await staff.client.post(
        f"/rtc/{by_fetch_metadata.id}/hangup", headers={"Sec-Fetch-Site": "same-origin"}
    )
    second = await staff.client.post(f"/rtc/{by_token.id}/hangup", headers={"X-CSRFToken": token})

    assert (first.status_code, second.status_code) == (200, 200)
    assert sorted(seen.path for seen in upstream.seen) == sorted(
        f"/v1/realtime/calls/{call.provider_call_id}/hangup" for call in (by_fetch_metadata, by_token)
    )


async def test_upstream_failure_leaves_the_call_live_for_a_retry(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=503, text="upstream connect error")

    await fake_upstream(broken)
    staff = await sign_in_async()
    call = await sync_to_async(CallFactory.create)(user=staff.user, status=Call.Status.ACTIVE, ended_at=None)

    response = await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert response.status_code == 502
    assert "HTTP 503" in response.json()["error"]["message"]
    await call.arefresh_from_db()
    assert call.status == "active"


async def test_hangup_asks_the_observer_to_stop(
    local_engine: RunningEngine,
    sign_in_async: SignIn,
    observer_inbox: Callable[[], Awaitable[dict[str, object]]],
) -> None:
    staff = await sign_in_async()
    call = await start_call(staff)
    assert (await observer_inbox())["type"] == "observe.start"

    await staff.client.post(f"/rtc/{call.id}/hangup", headers=SAME_ORIGIN)

    assert await observer_inbox() == {
        "type": "observe.stop",
        "call_id": str(call.id),
        "reason": "hung up by the user",
    }
