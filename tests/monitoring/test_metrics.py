"""Our Prometheus series move when the code they describe runs: call set-ups through `/rtc` and
`/api/calls` against the local engine, webhook verifications, the SIP accept, an observed call with a
tool call (events stored, observer lag, tool calls); and several processes' counters add up in
multi-process mode. Counters are process-wide, so every assertion is on a difference between scrapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from prometheus_client import generate_latest

from calls.models import Event, ToolInvocation
from scripts.screenshots import REPO
from tests.engine.conftest import RunningEngine, make_offer
from tests.factories import AgentProfileFactory
from tests.monitoring.conftest import Scrape
from tests.telephony.conftest import Captured, post_webhook, signed_headers
from tests.telephony.test_webhook_refusals import _flip_last_char
from tests.web.conftest import FakeUpstream, Respond, SignedIn
from tests.web.test_observer_calls import MakeLiveCall, driver, eventually, next_event, observing, say
from voiceagent.monitoring.metrics import labelled_total

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(90)]

ScrapeNow = Callable[[], Awaitable[Scrape]]
SignIn = Callable[..., Awaitable[SignedIn]]

SETUPS = "voiceagent_call_setups_total"
SETUP_COUNT = "voiceagent_call_setup_seconds_count"
LIVE = "voiceagent_live_calls"


@pytest.mark.usefixtures("default_agent")
async def test_a_call_set_up_through_rtc_is_counted_timed_and_live_until_hung_up(
    local_engine: RunningEngine, sign_in_async: SignIn, scrape: ScrapeNow
) -> None:
    staff = await sign_in_async()
    before = await scrape()
    assert before(LIVE, source="web") == 0 and before(LIVE, source="sip") == 0

    response = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    assert response.status_code == 201, response.content
    during = await scrape()

    assert (
        during(SETUPS, transport="proxy", outcome="ok") == before(SETUPS, transport="proxy", outcome="ok") + 1
    )
    assert during(SETUP_COUNT, transport="proxy") == before(SETUP_COUNT, transport="proxy") + 1
    assert during("voiceagent_call_setup_seconds_sum", transport="proxy") > before(
        "voiceagent_call_setup_seconds_sum", transport="proxy"
    )
    assert during(LIVE, source="web") == 1

    hangup = await staff.client.post(
        f"{response['Location']}/hangup", headers={"Sec-Fetch-Site": "same-origin"}
    )
    assert hangup.status_code == 200, hangup.content
    after = await scrape()
    assert after(LIVE, source="web") == 0


@pytest.mark.usefixtures("default_agent")
async def test_failed_set_ups_are_counted_by_outcome_and_not_timed(
    fake_upstream: Callable[[Respond], Awaitable[FakeUpstream]], sign_in_async: SignIn, scrape: ScrapeNow
) -> None:
    async def broken(request: web.Request) -> web.StreamResponse:
        return web.json_response({"error": {"message": "boom"}}, status=500)

    await fake_upstream(broken)
    staff = await sign_in_async()
    before = await scrape()

    response = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    assert response.status_code == 502
    after = await scrape()

    assert after(SETUPS, transport="proxy", outcome="upstream_error") == (
        before(SETUPS, transport="proxy", outcome="upstream_error") + 1
    )
    assert after(SETUP_COUNT, transport="proxy") == before(SETUP_COUNT, transport="proxy")
    assert after(LIVE, source="web") == 0  # the call is on record as failed


@pytest.mark.usefixtures("default_agent")
async def test_direct_registrations_count_ok_and_conflict(sign_in_async: SignIn, scrape: ScrapeNow) -> None:
    staff = await sign_in_async()
    body = json.dumps({"provider_call_id": "rtc_metrics0000000000000001", "mode": "audio"})
    before = await scrape()

    first = await staff.client.post("/api/calls", data=body, content_type="application/json")
    again = await staff.client.post("/api/calls", data=body, content_type="application/json")
    assert (first.status_code, again.status_code) == (201, 409)
    after = await scrape()

    for outcome in ("ok", "conflict"):
        assert after(SETUPS, transport="direct", outcome=outcome) == (
            before(SETUPS, transport="direct", outcome=outcome) + 1
        )
    assert after(SETUP_COUNT, transport="direct") == before(SETUP_COUNT, transport="direct") + 1


@pytest.mark.usefixtures("default_agent")
async def test_webhook_verifications_by_outcome_and_the_sip_accept(
    signed_incoming_call: Callable[..., Awaitable[Captured]], scrape: ScrapeNow
) -> None:
    from telephony.services import wait_for_answers

    captured = await signed_incoming_call()
    headers = captured.webhook_headers
    altered = _flip_last_char(headers["webhook-signature"])
    stale_body = captured.body
    stale = signed_headers(stale_body, webhook_id="evt_stale000000000000000001", at=int(time.time()) - 3600)
    before = await scrape()

    assert (await post_webhook(captured.body, {**headers, "webhook-signature": altered})).status_code == 400
    assert (await post_webhook(stale_body, stale)).status_code == 400
    without = {k: v for k, v in headers.items() if k != "webhook-id"}
    assert (await post_webhook(captured.body, without)).status_code == 400
    assert (await post_webhook(captured.body, headers)).status_code == 200
    await wait_for_answers(grace_s=10)
    after = await scrape()

    def grew(outcome: str) -> float:
        name = "voiceagent_webhook_verifications_total"
        return after(name, outcome=outcome) - before(name, outcome=outcome)

    assert {o: grew(o) for o in ("ok", "bad_signature", "stale", "missing_header", "malformed")} == {
        "ok": 1,
        "bad_signature": 1,
        "stale": 1,
        "missing_header": 1,
        "malformed": 0,
    }
    assert after(SETUPS, transport="sip", outcome="ok") == before(SETUPS, transport="sip", outcome="ok") + 1
    assert after(SETUP_COUNT, transport="sip") == before(SETUP_COUNT, transport="sip") + 1
    assert after(LIVE, source="sip") == 1  # accepted: connecting until the observer sees it answered


async def test_an_observed_call_stores_events_with_lag_and_counts_its_tool_call(
    local_engine: RunningEngine,
    observer_worker: object,
    make_live_call: MakeLiveCall,
    scrape: ScrapeNow,
    json_logs: Callable[[], list[dict[str, Any]]],
) -> None:
    agent = await sync_to_async(AgentProfileFactory.create)(tools=["get_weather"])
    live = await make_live_call(local_engine, agent=agent)
    before = await scrape()
    await observing(live)
    await live.accept()
    seen: list[dict[str, Any]] = []
    async with driver(local_engine, live) as ws:
        await say(ws, "What is the weather in Paris?")
        await next_event(ws, "response.done", seen)  # the function call
        await next_event(ws, "response.done", seen)  # the answer with the tool's output

    async def completed() -> bool:
        return await ToolInvocation.objects.filter(call=live.call, status="completed").aexists()

    await eventually(completed)
    stored = await Event.objects.filter(call=live.call).acount()
    after = await scrape()

    tool = {"tool": "get_weather"}
    assert after("voiceagent_tool_calls_total", outcome="completed", **tool) == (
        before("voiceagent_tool_calls_total", outcome="completed", **tool) + 1
    )
    assert (
        after("voiceagent_tool_call_seconds_count", **tool)
        == before("voiceagent_tool_call_seconds_count", **tool) + 1
    )
    grown = after("voiceagent_events_stored_total") - before("voiceagent_events_stored_total")
    assert grown >= stored > 0
    lag = after("voiceagent_observer_lag_seconds_count") - before("voiceagent_observer_lag_seconds_count")
    assert lag >= grown  # a lag sample per stored event (observed before the count moves)
    assert after(LIVE, source="web") == 1  # answered: active
    # The observer's task logs with the call's id bound (docs/observability.md).
    observer_lines = [line for line in json_logs() if line["logger"] == "calls.observer.observer"]
    assert observer_lines and all(line.get("call_id") == str(live.call.id) for line in observer_lines)


def test_counters_of_several_processes_add_up_in_multiprocess_mode(tmp_path: Path) -> None:
    """Two processes (as two daphne or worker processes) count set-ups into one PROMETHEUS_MULTIPROC_DIR
    (made by the first if missing); a scrape of that directory reports their sum."""
    script = (
        "import time; from voiceagent.monitoring.metrics import record_call_setup, record_stored_events\n"
        "record_call_setup('proxy', 'ok', started=time.monotonic())\n"
        "record_call_setup('sip', 'missed')\n"
    )
    shared = tmp_path / "made-at-first-start"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    for _ in range(2):
        subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, check=True, timeout=60)
    assert sorted(p.name.split("_")[0] for p in shared.iterdir()) == [
        "counter",
        "counter",
        "histogram",
        "histogram",
    ]

    from voiceagent.monitoring.metrics import _scrape_registry

    text = generate_latest(_scrape_registry(str(shared), False)).decode()
    assert labelled_total(text, SETUPS, {"transport": "proxy", "outcome": "ok"}) == 2
    assert labelled_total(text, SETUPS, {"transport": "sip", "outcome": "missed"}) == 2
    assert labelled_total(text, SETUP_COUNT, {"transport": "proxy"}) == 2
    assert LIVE not in text  # a worker's own port leaves live calls to the web processes
    # A web process's /metrics: the directory's sums plus the live calls from the database.
    web = generate_latest(_scrape_registry(str(shared), True)).decode()
    assert labelled_total(web, SETUPS, {"transport": "proxy", "outcome": "ok"}) == 2
    assert labelled_total(web, LIVE, {"source": "web"}) == 0 and f"{LIVE}{{" in web


@pytest.mark.usefixtures("default_agent")
async def test_a_rate_limited_set_up_is_counted_as_such(
    local_engine: RunningEngine, sign_in_async: SignIn, scrape: ScrapeNow, settings: Any
) -> None:
    settings.RTC_RATE_LIMIT = "1/m"
    staff = await sign_in_async()
    before = await scrape()

    first = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    second = await staff.client.post("/rtc", data=await make_offer(), content_type="application/sdp")
    assert (first.status_code, second.status_code) == (201, 429)
    after = await scrape()

    for outcome in ("ok", "rate_limited"):
        assert after(SETUPS, transport="proxy", outcome=outcome) == (
            before(SETUPS, transport="proxy", outcome=outcome) + 1
        )
