"""`POST /rtc`: the SDP proxy, against the real local engine and against misbehaving upstreams."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest
from aiohttp import web

from calls.models import AgentProfile, Call
from tests.engine.conftest import RunningEngine, make_offer
from tests.web.conftest import FakeUpstream, Respond, SignedIn

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("default_agent")]

if TYPE_CHECKING:
    from django.test.client import _MonkeyPatchedASGIResponse as Response

SignIn = Callable[..., Awaitable[SignedIn]]
StartUpstream = Callable[[Respond], Awaitable[FakeUpstream]]

#: A minimal offer that passes our checks; only the misbehaving upstreams see it.
TINY_OFFER = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\n"


async def post_offer(signed_in: SignedIn, offer: str, *, query: str = "") -> Response:
    return await signed_in.client.post(f"/rtc{query}", data=offer, content_type="application/sdp")


async def only_call() -> Call:
    return await Call.objects.select_related("agent").aget()


async def test_offer_is_answered_by_the_engine_and_recorded(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    staff = await sign_in_async()
    response = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")

    assert response.status_code == 201, response.content
    assert response["Content-Type"] == "application/sdp"
    assert response.content.decode().startswith("v=0")
    call = await only_call()
    assert response["Location"] == f"/rtc/{call.id}"
    assert response["X-Provider-Call-Id"] == call.provider_call_id
    assert call.provider_call_id in local_engine.state.calls
    assert (call.status, call.source, call.transport, call.mode) == ("connecting", "web", "proxy", "audio")
    assert call.user_id == staff.user.pk
    assert call.agent.is_default


async def test_video_true_means_webcam_and_mode_is_read(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    staff = await sign_in_async()
    first = await staff.client.post(
        "/rtc?video=true", data=await make_offer(), content_type="application/sdp"
    )
    second = await staff.client.post(
        "/rtc?mode=screen", data=await make_offer(), content_type="application/sdp"
    )

    assert (first.status_code, second.status_code) == (201, 201)
    modes = {str(call.id): call.mode async for call in Call.objects.all()}
    assert modes[first["Location"].rsplit("/", 1)[-1]] == "webcam"
    assert modes[second["Location"].rsplit("/", 1)[-1]] == "screen"


async def test_anonymous_gets_json_401(local_engine: RunningEngine, transactional_db: None) -> None:
    from django.test import AsyncClient

    response = await AsyncClient().post("/rtc", data=TINY_OFFER, content_type="application/sdp")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert await Call.objects.acount() == 0


async def test_non_staff_gets_403(local_engine: RunningEngine, sign_in_async: SignIn) -> None:
    visitor = await sign_in_async(staff=False)
    response = await post_offer(visitor, TINY_OFFER)

    assert response.status_code == 403
    assert await Call.objects.acount() == 0


@pytest.mark.parametrize(
    ("content_type", "body", "status", "code"),
    [
        ("text/plain", TINY_OFFER, 415, "unsupported_media_type"),
        ("application/x-www-form-urlencoded", "sdp=v%3D0", 415, "unsupported_media_type"),
        ("application/sdp", TINY_OFFER + "a=x:" + "y" * 70_000 + "\r\n", 413, "body_too_large"),
        ("application/sdp", "<html>hello</html>", 400, "invalid_offer"),
        ("application/sdp", "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n", 400, "invalid_offer"),
    ],
    ids=["text-plain", "form", "oversized", "not-sdp", "no-audio"],
)
async def test_bad_requests_are_refused_before_any_upstream_request(
    fake_upstream: StartUpstream, sign_in_async: SignIn, content_type: str, body: str, status: int, code: str
) -> None:
    async def never(request: web.Request) -> web.Response:
        return web.Response(status=500)

    upstream = await fake_upstream(never)
    staff = await sign_in_async()
    response = await staff.client.post("/rtc", data=body, content_type=content_type)

    assert response.status_code == status
    assert response.json()["error"]["code"] == code
    assert upstream.seen == []
    assert await Call.objects.acount() == 0


async def test_unknown_mode_is_refused(fake_upstream: StartUpstream, sign_in_async: SignIn) -> None:
    async def never(request: web.Request) -> web.Response:
        return web.Response(status=500)

    upstream = await fake_upstream(never)
    staff = await sign_in_async()
    response = await staff.client.post("/rtc?mode=hologram", data=TINY_OFFER, content_type="application/sdp")

    assert response.status_code == 400
    assert upstream.seen == []


async def test_upstream_5xx_fails_the_call_with_the_api_message(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "error": {
                    "message": "The server had an error.",
                    "type": "server_error",
                    "code": None,
                    "param": None,
                }
            },
            status=500,
        )

    upstream = await fake_upstream(broken)
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 502
    error = response.json()["error"]
    assert "HTTP 500" in error["message"] and "The server had an error." in error["message"]
    call = await only_call()
    assert call.status == "failed" and "HTTP 500" in call.error and call.ended_at is not None
    assert call.provider_call_id is None
    assert [seen.path for seen in upstream.seen] == ["/v1/realtime/calls"]
    assert upstream.seen[0].headers["Authorization"] == "Bearer sk-fake"


async def test_upstream_timeout_gives_504_and_a_failed_call(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(3)
        return web.Response(status=201, text=TINY_OFFER, content_type="application/sdp")

    await fake_upstream(slow)
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 504
    assert "did not answer within 0.5 s" in response.json()["error"]["message"]
    call = await only_call()
    assert call.status == "failed" and "did not answer" in call.error


async def test_html_instead_of_an_answer_gives_502_and_a_failed_call(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def captive_portal(request: web.Request) -> web.Response:
        return web.Response(
            status=200, text="<!doctype html><h1>Sign in to Wi-Fi</h1>", content_type="text/html"
        )

    await fake_upstream(captive_portal)
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "without an SDP answer" in message and "text/html" in message
    call = await only_call()
    assert call.status == "failed" and "without an SDP answer" in call.error


async def test_an_answer_without_a_call_id_is_refused(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def no_location(request: web.Request) -> web.Response:
        return web.Response(status=201, text=TINY_OFFER, content_type="application/sdp")

    await fake_upstream(no_location)
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "invalid_location"
    assert (await only_call()).status == "failed"


async def test_upstream_rate_limit_becomes_503_with_retry_after(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    async def limited(request: web.Request) -> web.Response:
        error = {
            "message": "Rate limit reached.",
            "type": "requests",
            "code": "rate_limit_exceeded",
            "param": None,
        }
        return web.json_response({"error": error}, status=429, headers={"Retry-After": "7"})

    await fake_upstream(limited)
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 503
    assert response["Retry-After"] == "7"
    assert "Rate limit reached." in response.json()["error"]["message"]
    assert (await only_call()).status == "failed"


async def test_upstream_refusal_is_502_with_its_message(
    local_engine: RunningEngine, sign_in_async: SignIn
) -> None:
    """The engine itself refuses an offer it cannot parse; the browser sees why."""
    staff = await sign_in_async()
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert message.startswith("The Realtime API refused the request (HTTP 400): Invalid SDP offer")
    assert (await only_call()).status == "failed"


async def test_the_observer_is_asked_to_watch_the_new_call(
    local_engine: RunningEngine,
    sign_in_async: SignIn,
    observer_inbox: Callable[[], Awaitable[dict[str, object]]],
) -> None:
    staff = await sign_in_async()
    response = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")

    assert response.status_code == 201
    call = await only_call()
    assert await observer_inbox() == {"type": "observe.start", "call_id": str(call.id), "reason": ""}


async def test_a_failed_call_is_not_observed(
    fake_upstream: StartUpstream,
    sign_in_async: SignIn,
    observer_inbox: Callable[[], Awaitable[dict[str, object]]],
) -> None:
    async def broken(request: web.Request) -> web.Response:
        return web.Response(status=502, text="bad gateway")

    await fake_upstream(broken)
    staff = await sign_in_async()
    assert (await post_offer(staff, TINY_OFFER)).status_code == 502
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(observer_inbox(), 0.3)


async def test_an_answered_call_that_cannot_be_recorded_is_ended_upstream(
    fake_upstream: StartUpstream, sign_in_async: SignIn, default_agent: AgentProfile
) -> None:
    """The row is written once the API has answered; if that fails (here: the API names a call
    already on record), the call must not go on unrecorded and unobserved."""
    taken = "rtc_alreadyonrecord1"

    async def answer(request: web.Request) -> web.Response:
        if request.path.endswith("/hangup"):
            return web.Response(status=200)
        headers = {"Location": f"/v1/realtime/calls/{taken}"}
        return web.Response(status=201, text=TINY_OFFER, content_type="application/sdp", headers=headers)

    upstream = await fake_upstream(answer)
    staff = await sign_in_async()
    existing = await Call.objects.acreate(provider_call_id=taken, agent=default_agent, status="ended")
    response = await post_offer(staff, TINY_OFFER)

    assert response.status_code == 502
    assert response.json()["error"]["code"] == "duplicate_call_id"
    assert [seen.path for seen in upstream.seen] == [
        "/v1/realtime/calls",
        f"/v1/realtime/calls/{taken}/hangup",
    ]
    assert [call.pk async for call in Call.objects.all()] == [existing.pk]


async def test_a_browser_that_leaves_before_the_answer_leaves_a_failed_call(
    fake_upstream: StartUpstream, sign_in_async: SignIn
) -> None:
    upstream_reached = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        upstream_reached.set()
        await asyncio.sleep(0.3)
        headers = {"Location": "/v1/realtime/calls/rtc_neverseen1"}
        return web.Response(status=201, text=TINY_OFFER, content_type="application/sdp", headers=headers)

    await fake_upstream(slow)
    staff = await sign_in_async()
    request = asyncio.ensure_future(post_offer(staff, TINY_OFFER))
    await asyncio.wait_for(upstream_reached.wait(), 5)
    request.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await request

    call = await only_call()
    assert (call.status, call.error) == ("failed", "The browser disconnected before the answer.")
    assert call.provider_call_id is None and call.ended_at is not None
