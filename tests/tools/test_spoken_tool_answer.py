"""With the offline speech stack, the engine answers the tool's output in audio mode: the weather
question asked in text on a live call, our get_weather runs in the observer, and the audio reply's
transcript (`response.output_audio_transcript.done`) says the table's weather. The audio itself goes
to the call's media side, which this SIP-style call without RTP does not have; the browser e2e (mcp)
hears it through a real WebRTC track."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from aiohttp import web
from asgiref.sync import sync_to_async
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import ToolInvocation
from realtime_local.app import create_app
from realtime_local.call import EngineRuntime
from realtime_local.config import EngineConfig
from tests.engine.conftest import API_KEY, WEBHOOK_SECRET, RunningEngine
from tests.engine.fixtures_media import speech_stack
from tests.factories import AgentProfileFactory
from tests.web.conftest import point_settings_at
from tests.web.test_observer_calls import MakeLiveCall, driver, next_event, observing, say

__all__ = ["speech_stack"]

pytestmark = [pytest.mark.speech, pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]


@pytest.fixture
async def speaking_engine(speech_stack: Any, settings: SettingsWrapper) -> AsyncIterator[RunningEngine]:
    config = EngineConfig(
        host="127.0.0.1", port=0, api_key=API_KEY, webhook_secret=WEBHOOK_SECRET, speech=True
    )
    app = create_app(config, EngineRuntime(speech=speech_stack))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    running = RunningEngine(
        app=app,
        runner=runner,
        port=int(runner.addresses[0][1]),
        config=config,
        http=httpx.AsyncClient(timeout=10),
    )
    await asyncio.wait_for(running.state.ready.wait(), 10)
    point_settings_at(settings, base_url=running.base_url, api_key=API_KEY)
    yield running
    await running.http.aclose()
    await asyncio.wait_for(runner.cleanup(), 15)


async def test_the_spoken_answer_says_the_weather_from_the_table(
    speaking_engine: RunningEngine, observer_worker: object, make_live_call: MakeLiveCall
) -> None:
    agent = await sync_to_async(AgentProfileFactory.create)(tools=["get_weather"])
    live = await make_live_call(speaking_engine, agent=agent)
    await observing(live)
    await live.accept()
    seen: list[dict[str, Any]] = []
    async with driver(speaking_engine, live) as ws:
        await say(ws, "What is the weather in Paris?")
        first = await next_event(ws, "response.done", seen)
        assert first["response"]["output"][0]["name"] == "get_weather"
        spoken = await next_event(ws, "response.output_audio_transcript.done", seen)
        await next_event(ws, "response.done", seen)
    assert (
        "Paris" in spoken["transcript"] and "18" in spoken["transcript"] and "sunny" in spoken["transcript"]
    )
    invocation = await ToolInvocation.objects.aget(call=live.call)
    assert invocation.status == ToolInvocation.Status.COMPLETED
