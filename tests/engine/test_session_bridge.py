"""A SIP-style call's media bridge: caller audio in through `feed_input_audio`, the reply read from
`open_audio_output()`, events observed through an attached sink (as the sideband does)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from realtime_local.call import CallStateError, EngineRuntime, new_incoming_call
from realtime_local.events import new_rtc_call_id
from realtime_local.schemas import validate_session
from tests.engine.fixtures_media import (
    espeak,
    rms,
    speech_stack,  # noqa: F401 - the session-scoped fixture, used by name below
    to_16k,
)

pytestmark = [pytest.mark.speech, pytest.mark.timeout(90)]


class Recorder:
    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    async def send_event(self, event: dict[str, Any]) -> None:
        self.events.append(event)
        self.changed.set()

    async def wait_for(self, kind: str, timeout: float = 30.0) -> dict[str, Any]:  # noqa: ASYNC109
        async with asyncio.timeout(timeout):
            while True:
                for event in self.events:
                    if event["type"] == kind:
                        return event
                self.changed.clear()
                await self.changed.wait()


async def test_bridged_call_hears_the_caller_and_answers_on_the_output_track(
    speech_stack: Any,  # noqa: F811
) -> None:
    call = new_incoming_call(
        call_id=new_rtc_call_id(),
        runtime=EngineRuntime(speech=speech_stack),
        sip_headers=[{"name": "From", "value": "sip:+15550100@example.com"}],
    )
    recorder = Recorder()
    detach = call.attach(recorder)
    try:
        with pytest.raises(CallStateError):
            await call.refer("tel:+15550101")  # not active yet
        await call.accept(validate_session({"type": "realtime"}))
        await recorder.wait_for("session.created", timeout=5)
        output = call.open_audio_output()
        silence = np.zeros(16_000, dtype=np.int16)
        caller = np.concatenate([silence, to_16k(espeak("Hello there how are you")), silence, silence])
        for i in range(0, len(caller), 320):  # 20 ms packets, faster than real time
            call.feed_input_audio(caller[i : i + 320])
            await asyncio.sleep(0.002)
        await recorder.wait_for("input_audio_buffer.speech_stopped")
        played: list[np.ndarray] = []
        async with asyncio.timeout(30):
            while not any(e["type"] == "output_audio_buffer.stopped" for e in recorder.events):
                frame = await output.recv()
                played.append(frame.to_ndarray().reshape(-1))
        done = await recorder.wait_for("response.done")
        assert done["response"]["status"] == "completed"
        audio = np.concatenate(played)
        assert rms(audio) > 300
        assert call.state == "active"
    finally:
        detach()
        await call.hangup()
    assert call.ended.is_set()
