"""Voice-to-voice latency from a real browser: end of the user's speech → first agent audio heard.

Run: .venv/bin/python -m bench.voice_to_voice_browser [--turns 20] [--modes server_vad:500 semantic_vad:auto]
     [--compare-before] [--gap-s 6] [--profile DIR] [-v]

Each mode is one call (a fresh engine and Chromium) through the same WAV, in order; the default is
the product's default profile (`server_vad` 500 ms). `--compare-before` follows each mode with the
same call on the engine as it was before the latency work (`BEFORE`: aiortc's stock inbound jitter
buffer, no speculative reply, the end of speech at Silero's window), so both arms run under the
same load.

Loopback only, nothing downloaded. The local engine runs in this process with the real speech stack
(`SpeechOptions.from_env()`, so `REALTIME_LOCAL_*` apply); a same-origin page server forwards the
browser's offer to `POST /v1/realtime/calls` with a session config (the product's `/rtc` role).
Headless Chromium (/usr/bin/chromium, the e2e tests' flags) plays one WAV as its microphone: 1.5 s
of silence, then `--turns` espeak-ng questions, each followed by `--gap-s` of silence (room for the
answer). The page (bench/voice_page.html) runs two WebAudio analysers, on the microphone and on the
agent's remote track, and stamps when each turns loud, and stamps every data-channel event on
arrival, all on the wall clock.

Per turn: the WAV's known offsets (where each question turns loud by the page's own RMS rule, and
where it ends: the last 10 ms frame with audible energy) are placed on the browser clock by the
microphone analyser's onsets (median offset over all questions); the clock runs from that end of
speech to the first loud agent audio after it. The split comes from the events' arrival times:

- *VAD end of turn*: end of speech → `input_audio_buffer.speech_stopped` (contains the deliberate
  silence wait: `silence_duration_ms`, or semantic_vad's verdict);
- *STT finish*: `speech_stopped` → `response.created` (the engine answers once the transcript is
  final);
- *responder*: `response.created` → `response.output_item.added` (the first reply piece);
- *TTS first chunk*: `output_item.added` → `output_audio_buffer.started` (synthesis of the first
  chunk, resampling, the first frame sent);
- *media + playout*: `output_audio_buffer.started` → loud audio at the analyser (RTP/Opus, the
  jitter buffer, and any quiet start of the synthesized audio); of which *browser jitter buffer*:
  Chromium's own average jitter-buffer delay (getStats `jitterBufferDelay / jitterBufferEmittedCount`)
  over the half second after the agent turned loud.

The engine's own log lines (`transcribed in`, `turn latency`) are counted too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.profiling import py_spy  # noqa: E402

PAGE = Path(__file__).with_name("voice_page.html")
RATE = 48000
LEAD_S = 1.5
THRESHOLD = 0.01  # RMS (full scale 1.0) that counts as sound, on both sides
WINDOW = 256  # the analyser's fftSize
QUESTIONS = [
    "What is the weather in Paris",
    "Hello there",
    "Can you tell me a joke",
    "What time is it in Tokyo",
    "Please book a table for two at seven",
    "Can you check the status of my order",
    "Turn on the lights in the kitchen",
    "What is the capital of France",
    "How far is the moon from the earth",
    "I would like to change my delivery address",
    "Do you know any good restaurants nearby",
    "Remind me to call my mother tomorrow",
    "What is two plus two",
    "Play some relaxing music",
    "How do I reset my password",
    "Is the store open on Sunday",
    "Send a message to Alice",
    "What is the exchange rate for euros",
    "Thank you very much",
    "Goodbye",
]
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
    "--allow-loopback-in-peer-connection",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass(frozen=True)
class Utterance:
    text: str
    onset_s: float  # where the page's RMS rule first hears it, in the WAV
    end_s: float  # just after its last 10 ms frame with audible energy


def espeak_48k(text: str) -> np.ndarray:
    from tests.engine.fixtures_media import espeak

    return espeak(text, rate=RATE)


def onset_s(pcm: np.ndarray) -> float:
    """Where a 256-sample RMS first reaches the threshold (the page's rule), in seconds."""
    x = pcm.astype(np.float64) / 32768
    energy = np.convolve(x * x, np.ones(WINDOW) / WINDOW, mode="valid")
    loud = np.flatnonzero(np.sqrt(energy) >= THRESHOLD)
    return float((loud[0] + WINDOW) / RATE) if len(loud) else 0.0


def end_s(pcm: np.ndarray) -> float:
    """Just after the last 10 ms frame with audible energy (bench/voice_latency.py's definition)."""
    frame = RATE // 100
    frames = np.abs(pcm[: len(pcm) - len(pcm) % frame].astype(np.int32)).reshape(-1, frame).max(axis=1)
    loud = np.flatnonzero(frames > 600)
    return float((loud[-1] + 1) * frame / RATE)


def build_wav(path: Path, questions: list[str], gap_s: float) -> list[Utterance]:
    pieces = [np.zeros(int(LEAD_S * RATE), dtype=np.int16)]
    at = LEAD_S
    utterances = []
    for text in questions:
        spoken = espeak_48k(text)
        utterances.append(Utterance(text, at + onset_s(spoken), at + end_s(spoken)))
        pieces += [spoken, np.zeros(int(gap_s * RATE), dtype=np.int16)]
        at += (len(spoken) + int(gap_s * RATE)) / RATE
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(np.concatenate(pieces).tobytes())
    return utterances


class EngineLog(logging.Handler):
    """The engine's per-turn log figures."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.stt_ms: list[float] = []
        self.turn_ms: list[float] = []
        self.speculation: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if " transcribed in " in message:
            self.stt_ms.append(float(message.split(" transcribed in ")[1].split(" ms")[0]))
        elif message.startswith("turn latency "):
            self.turn_ms.append(float(message.split()[2]))
            if "speculative reply: " in message:
                outcome = message.split("speculative reply: ")[1].rstrip(")")
                self.speculation[outcome] = self.speculation.get(outcome, 0) + 1


@asynccontextmanager
async def page_server(engine_base: str, session: dict[str, Any]) -> AsyncIterator[str]:
    from aiohttp import web

    from tests.engine.fixtures_media import API_KEY

    async def index(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(encoding="utf-8"), content_type="text/html")

    async def offer(request: web.Request) -> web.Response:
        sdp = await request.text()
        async with httpx.AsyncClient(timeout=15.0) as http:
            answer = await http.post(
                f"{engine_base}/realtime/calls",
                files={"sdp": (None, sdp), "session": (None, json.dumps(session))},
                headers={"Authorization": f"Bearer {API_KEY}"},
            )
        return web.Response(status=answer.status_code, text=answer.text, content_type="application/sdp")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_post("/session", offer)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=2.0, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/"
    finally:
        await runner.cleanup()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def first_after(times: list[float], start: float, end: float) -> float | None:
    return next((t for t in times if start <= t < end), None)


def jitter_buffer_ms(samples: list[dict[str, float]], at: float, span_s: float = 0.5) -> float | None:
    """Chromium's average jitter-buffer delay (ms) over the `span_s` after `at` (seconds, browser clock)."""
    before = [x for x in samples if x["at"] / 1000 <= at]
    after = [x for x in samples if x["at"] / 1000 >= at + span_s]
    if not before or not after:
        return None
    emitted = after[0]["emitted"] - before[-1]["emitted"]
    if emitted <= 0:
        return None
    return float((after[0]["delay"] - before[-1]["delay"]) / emitted * 1000)


def analyse(
    utterances: list[Utterance],
    onsets: dict[str, list[float]],
    events: list[dict[str, Any]],
    jitter: list[dict[str, float]] | None = None,
) -> tuple[list[dict[str, float]], int]:
    """Per-turn figures (ms) and how many microphone onsets anchored the WAV on the browser clock."""
    mic = [t / 1000 for t in onsets["mic"]]
    agent = [t / 1000 for t in onsets["agent"]]
    # Each question's onset in the WAV, placed on the browser clock: take the mic onset nearest to
    # where the first onset says it should be, and the median of the differences.
    first = mic[0] - utterances[0].onset_s
    anchors = []
    for utterance in utterances:
        expected = first + utterance.onset_s
        nearest = min(mic, key=lambda t: abs(t - expected))
        if abs(nearest - expected) < 0.5:
            anchors.append(nearest - utterance.onset_s)
    zero = statistics.median(anchors)
    by_type: dict[str, list[float]] = {}
    for event in events:
        by_type.setdefault(event["type"], []).append(event["at"] / 1000)
    turns = []
    for index, utterance in enumerate(utterances):
        end = zero + utterance.end_s
        limit = zero + utterances[index + 1].onset_s if index + 1 < len(utterances) else end + 30
        heard = first_after(agent, end, limit)
        marks = {
            name: first_after(by_type.get(name, []), end - 0.3, limit)
            for name in (
                "input_audio_buffer.speech_stopped",
                "response.created",
                "response.output_item.added",
                "output_audio_buffer.started",
            )
        }
        if heard is None or any(value is None for value in marks.values()):
            continue
        stopped, created, added, started = (float(marks[name] or 0) for name in marks)
        if not stopped <= created <= added <= started <= heard:  # events of another turn (a lagging engine)
            continue
        turn = {
            "voice_to_voice": (heard - end) * 1000,
            "vad": (stopped - end) * 1000,
            "stt": (created - stopped) * 1000,
            "responder": (added - created) * 1000,
            "tts_first_chunk": (started - added) * 1000,
            "media_playout": (heard - started) * 1000,
        }
        buffered = jitter_buffer_ms(jitter or [], heard)
        if buffered is not None:
            turn["browser_jitter_buffer"] = buffered
        turns.append(turn)
    return turns, len(anchors)


#: Engine settings of the "before" arm (`--compare-before`): the engine as it was before the
#: voice-latency work, for an A/B in one run. Names are module attributes of realtime_local.
BEFORE: dict[str, Any] = {
    "realtime_local.media.INBOUND_AUDIO_BUFFER": "aiortc",
    "realtime_local.session.SPECULATIVE_REPLY": False,
    "realtime_local.speech.vad.REFINE_END_WITH_ENERGY": False,
}


def set_knobs(knobs: dict[str, Any]) -> dict[str, Any]:
    """Set module attributes named `package.module.NAME`; returns the previous values."""
    import importlib

    previous = {}
    for dotted, value in knobs.items():
        module_name, name = dotted.rsplit(".", 1)
        module = importlib.import_module(module_name)
        previous[dotted] = getattr(module, name)
        setattr(module, name, value)
    return previous


def parse_mode(spec: str) -> tuple[str, dict[str, Any]]:
    """`server_vad:500` or `semantic_vad:auto` -> (label, turn_detection)."""
    kind, _, value = spec.partition(":")
    if kind == "server_vad":
        ms = int(value or 500)
        return f"server_vad_{ms}", {"type": "server_vad", "silence_duration_ms": ms}
    if kind == "semantic_vad":
        eagerness = value or "auto"
        return f"semantic_vad_{eagerness}", {"type": "semantic_vad", "eagerness": eagerness}
    raise ValueError(f"unknown mode {spec!r}: server_vad:<ms> or semantic_vad:<eagerness>")


async def run_arm(
    stack: Any,
    wav: Path,
    utterances: list[Utterance],
    turn_detection: dict[str, Any],
    options: argparse.Namespace,
    label: str,
) -> dict[str, Any]:
    """One call from a fresh Chromium through the whole WAV; the page's stamps and the engine log."""
    from playwright.async_api import async_playwright

    from realtime_local.call import EngineRuntime
    from tests.engine.fixtures_media import serve_engine

    session = {
        "type": "realtime",
        "instructions": "Answer briefly.",
        "audio": {"input": {"turn_detection": turn_detection}},
    }
    log = EngineLog()
    logging.getLogger("realtime_local").addHandler(log)
    duration = utterances[-1].end_s + options.gap_s
    try:
        async with (
            serve_engine(EngineRuntime(speech=stack, loopback_candidates=True)) as engine,
            page_server(engine.base_url, session) as url,
            async_playwright() as playwright,
        ):
            browser = await playwright.chromium.launch(
                executable_path="/usr/bin/chromium",
                args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}%noloop"],
                timeout=30_000,
            )
            try:
                page = await browser.new_page()
                await page.goto(f"{url}?threshold={THRESHOLD}")
                with py_spy(os.getpid(), options.profile, f"engine-{label}"):
                    await asyncio.sleep(duration)
                    # A loaded machine answers late: wait until no event came for 5 s (60 s at most).
                    deadline, count = time.monotonic() + 60, -1
                    while time.monotonic() < deadline:
                        now = await page.evaluate("window.events.length")
                        if now == count:
                            break
                        count = now
                        await asyncio.sleep(5)
                return {
                    "state": await page.evaluate("window.state"),
                    "onsets": await page.evaluate("window.onsets"),
                    "events": await page.evaluate("window.events"),
                    "jitter": await page.evaluate("window.jitter"),
                    "log": log,
                }
            finally:
                await browser.close()
    finally:
        logging.getLogger("realtime_local").removeHandler(log)


def report(label: str, utterances: list[Utterance], result: dict[str, Any], verbose: bool) -> int:
    """Print one arm's lines (`voice.<label>.<figure>: value unit`); returns the turns measured."""
    if result["state"]["error"]:
        print(f"# {label}: page error: {result['state']['error']}", file=sys.stderr)
        return 0
    events = result["events"]
    turns, anchored = analyse(utterances, result["onsets"], events, result["jitter"])
    log: EngineLog = result["log"]
    transcripts = [e["transcript"] for e in events if e["type"].endswith("transcription.completed")]
    print(f"voice.{label}.turns_measured: {len(turns)} of {len(utterances)} turns")
    print(f"voice.{label}.mic_anchors: {anchored} onsets")
    names = ["voice_to_voice", "vad", "stt", "responder", "tts_first_chunk", "media_playout"]
    for name in [*names, "browser_jitter_buffer"]:
        values = [turn[name] for turn in turns if name in turn]
        print(f"voice.{label}.{name}.p50: {pct(values, 50):.0f} ms")
        print(f"voice.{label}.{name}.p95: {pct(values, 95):.0f} ms")
    print(f"voice.{label}.engine_log.stt_finish.p50: {pct(log.stt_ms, 50):.0f} ms")
    print(f"voice.{label}.engine_log.speech_stopped_to_first_frame.p50: {pct(log.turn_ms, 50):.0f} ms")
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(log.speculation.items())) or "none logged"
    print(f"voice.{label}.engine_log.speculative_reply: {outcomes}")
    if verbose:
        for turn, text in zip(turns, transcripts, strict=False):
            print("# " + " ".join(f"{k}={v:.0f}" for k, v in turn.items()) + f"  {text!r}")
    return len(turns)


async def run(options: argparse.Namespace) -> int:
    from realtime_local.speech.stack import SpeechOptions, load_speech_stack

    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} at start")
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(options.turns)]
    folder = Path(tempfile.mkdtemp(prefix="va-voice-bench-"))
    wav = folder / "questions.wav"
    utterances = build_wav(wav, questions, options.gap_s)
    logging.getLogger("realtime_local").setLevel(logging.INFO)
    started = time.monotonic()
    stack = await asyncio.to_thread(load_speech_stack, SpeechOptions.from_env())
    print(f"voice.speech_stack_load: {time.monotonic() - started:.1f} s")
    arms: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    for spec in options.modes:
        label, turn_detection = parse_mode(spec)
        arms.append((label, turn_detection, {}))
        if options.compare_before:
            arms.append((f"{label}.before", turn_detection, BEFORE))
    measured = 0
    for label, turn_detection, knobs in arms:
        print(f"voice.{label}.turn_detection: {json.dumps(turn_detection)}")
        previous = set_knobs(knobs)
        try:
            result = await run_arm(stack, wav, utterances, turn_detection, options, label)
        finally:
            set_knobs(previous)
        measured += report(label, utterances, result, options.verbose)
        print(f"machine: load average {os.getloadavg()[0]:.2f} after {label}")
    return 0 if measured else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["server_vad:500"],
        help="turn detection per call, in order: server_vad:<silence ms> or semantic_vad:<eagerness> "
        "(default: the product's default profile, server_vad:500)",
    )
    parser.add_argument(
        "--compare-before",
        action="store_true",
        help="after each mode, the same call with the engine as before the latency work (BEFORE)",
    )
    parser.add_argument("--gap-s", type=float, default=6.0, help="silence after each question")
    parser.add_argument("--profile", type=Path, help="py-spy this process (the engine) into this folder")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per turn")
    options = parser.parse_args()
    subprocess.run(["espeak-ng", "--version"], check=True, capture_output=True)
    return asyncio.run(run(options))


if __name__ == "__main__":
    sys.exit(main())
