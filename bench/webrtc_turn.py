"""Turn latency of the local engine over real WebRTC, as a caller hears it.

Starts the engine in process (HTTP app, real speech stack), connects an aiortc client through
`POST /v1/realtime/calls`, speaks N espeak-ng questions and prints, per turn:
- offer->answer (ms, client side, once),
- speech_stopped -> output_audio_buffer.started (ms, client-side event arrival),
- voice-to-voice: last frame of the question sent -> first loud frame of the answer received (ms;
  includes the VAD's silence_duration_ms, Opus and the jitter buffer).

Run: .venv/bin/python -m bench.webrtc_turn [--turns 5] [--silence-ms 500]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics

import numpy as np

from realtime_local.call import EngineRuntime
from realtime_local.speech.stack import SpeechOptions, load_speech_stack
from tests.engine.fixtures_media import connected_client, espeak, serve_engine

QUESTIONS = [
    "What time does the library open on Sunday",
    "Hello there how are you",
    "Can you count to twenty",
    "Where is the nearest train station",
    "Thank you very much",
]


async def main(turns: int, silence_ms: int) -> None:
    stack = await asyncio.to_thread(load_speech_stack, SpeechOptions.from_env())
    session = {
        "type": "realtime",
        "audio": {"input": {"turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms}}},
    }
    stopped_to_started: list[float] = []
    voice_to_voice: list[float] = []
    async with (
        serve_engine(EngineRuntime(speech=stack, loopback_candidates=True)) as engine,
        connected_client(engine, session) as (client, _, answer_ms),
    ):
        print(f"offer->answer: {answer_ms:.1f} ms")
        for turn in range(turns):
            question = QUESTIONS[turn % len(QUESTIONS)]
            mark = len(client.events)
            client.listen()
            speech = espeak(question)
            loud = np.flatnonzero(np.abs(speech) > 300)
            client.mic.say(speech[: loud[-1] + 1])  # ends at the last loud sample
            stopped = await client.wait_for("input_audio_buffer.speech_stopped", after=mark, timeout=30)
            started = await client.wait_for("output_audio_buffer.started", after=mark, timeout=60)
            await client.wait_for("output_audio_buffer.stopped", after=mark, timeout=120)
            a = client.seconds_between(stopped, started) * 1000
            v = ((client.first_voice_at or 0) - client.mic.last_speech_sent_at) * 1000
            stopped_to_started.append(a)
            voice_to_voice.append(v)
            print(f"turn {turn + 1}: speech_stopped->started {a:.0f} ms, voice-to-voice {v:.0f} ms")
            await asyncio.sleep(0.5)
    print(
        f"median: speech_stopped->started {statistics.median(stopped_to_started):.0f} ms, "
        f"voice-to-voice {statistics.median(voice_to_voice):.0f} ms over {turns} turns "
        f"(silence_duration_ms={silence_ms})"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--silence-ms", type=int, default=500)
    parser.add_argument("--verbose", action="store_true", help="log the engine's per-turn timings")
    args = parser.parse_args()
    if args.verbose:
        logging.basicConfig(level=logging.WARNING)
        logging.getLogger("realtime_local").setLevel(logging.INFO)
    asyncio.run(main(args.turns, args.silence_ms))
