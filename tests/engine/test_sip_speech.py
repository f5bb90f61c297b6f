"""A phone call through the SIP front door with the real speech stack: the caller's G.711 RTP is
transcribed and the agent's spoken reply comes back as non-silent RTP, paced in real time."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import openai
import pytest
from aiohttp import web

from realtime_local.app import ENGINE, create_app
from realtime_local.call import EngineRuntime
from realtime_local.config import EngineConfig
from tests.engine.conftest import WEBHOOK_SECRET, WebhookReceiver
from tests.engine.fixtures_media import espeak, rms
from tests.engine.fixtures_media import speech_stack as speech_stack
from tests.engine.sip_client import SipClient, sdp_media_port

pytestmark = [pytest.mark.speech, pytest.mark.timeout(120)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)

    async def wait_for(self, kind: str, limit_s: float) -> dict[str, Any]:
        async with asyncio.timeout(limit_s):
            while True:
                for event in self.events:
                    if event["type"] == kind:
                        return event
                await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def sip_speech_engine(speech_stack: Any, webhook_url: str) -> AsyncIterator[web.Application]:
    config = EngineConfig(
        host="127.0.0.1",
        port=0,
        api_key="sk-local",
        webhook_url=webhook_url,
        webhook_secret=WEBHOOK_SECRET,
        sip_port=0,
    )
    app = create_app(config, runtime=EngineRuntime(speech=speech_stack))
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    config.port = int(runner.addresses[0][1])
    try:
        yield app
    finally:
        await asyncio.wait_for(runner.cleanup(), 15)


async def test_spoken_question_over_rtp_is_heard_and_answered(
    speech_stack: Any, webhook_receiver: WebhookReceiver
) -> None:
    async with sip_speech_engine(speech_stack, webhook_receiver.url) as app:
        engine = app[ENGINE]
        assert engine.sip is not None
        client = await SipClient.open(("127.0.0.1", engine.sip.port))
        http = httpx.AsyncClient(timeout=10.0, headers={"Authorization": "Bearer sk-local"})
        try:
            client.invite()
            hook = await webhook_receiver.next()
            openai.OpenAI(api_key="unused", webhook_secret=WEBHOOK_SECRET).webhooks.unwrap(
                hook.body, hook.headers
            )
            call_id = json.loads(hook.body)["data"]["call_id"]
            recorder = Recorder()
            engine.calls.get(call_id).attach(recorder)
            response = await http.post(
                f"{engine.config.base_url}/realtime/calls/{call_id}/accept",
                json={"type": "realtime", "instructions": "Be helpful."},
            )
            assert response.status_code == 200, response.text
            ok = await client.final_response()
            assert ok.status == 200
            client.ack()
            silence = np.zeros(8000, dtype=np.int16)
            question = espeak("What time does the library open on Sunday", rate=8000)
            await client.send_audio(
                np.concatenate([silence, question, silence]), ("127.0.0.1", sdp_media_port(ok.body))
            )
            completed = await recorder.wait_for("conversation.item.input_audio_transcription.completed", 40)
            heard = set(re.findall(r"[a-z]+", completed["transcript"].lower()))
            assert {"library", "open", "sunday"} <= heard, completed["transcript"]
            await recorder.wait_for("output_audio_buffer.stopped", 45)
            await asyncio.sleep(0.2)
            audio, arrivals, markers = client.received_audio()
            assert rms(audio) > 200 and markers == 1
            gaps = np.diff(arrivals)
            assert len(arrivals) > 100 and 0.015 < float(np.median(gaps)) < 0.025  # 20 ms packets, paced
            client.cseq += 1
            client.send(client.request("BYE"))
            assert (await client.final_response()).status == 200
            await asyncio.sleep(0.1)
            assert call_id not in engine.calls
        finally:
            client.close()
            await http.aclose()
