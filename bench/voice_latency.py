"""Voice-to-voice latency of the offline speech stack: end of user speech -> first reply audio chunk.

Run: `.venv/bin/python bench/voice_latency.py` (see bench/README.md). Nothing is downloaded.

Each turn is an espeak-ng question with silence around it, streamed in 20 ms chunks paced in real
time through the call's turn detector, with partial transcripts computed in a worker thread (as
the session does), then `finish()` -> responder -> first TTS chunk, in a second thread while the
feeder keeps feeding silence. "End of speech" is the true end in the WAV: the last 10 ms frame
with audible energy, so the figures include Silero's detection lag and the deliberate
`silence_duration_ms` wait.

The baseline, measured on the same utterances in the same run, is the naive pipeline of the
prototype: after the turn is detected, transcribe the whole utterance with faster-whisper's 30 s
window, get the reply, synthesize the whole reply text, then play.

The same questions then run through each turn-detection mode of the comparison table
(server_vad 500 ms and 300 ms, semantic_vad auto and high), and each mode is also fed utterances
that pause 600 ms after a dangling "and" to count the turns it would wrongly split.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from realtime_local.speech.base import (
    INPUT_SAMPLE_RATE,
    ConversationTurn,
    Pcm16,
    TextReply,
    TurnDetectionConfig,
)
from realtime_local.speech.semantic import SemanticVadTurnDetector
from realtime_local.speech.stack import SpeechOptions, SpeechStack, load_speech_stack
from realtime_local.speech.tts import EspeakSynthesizer, resample

CHUNK = 320  # 20 ms at 16 kHz
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
#: (before the pause, after it): one turn each, with 600 ms of silence after a dangling word.
TRAILING = [
    ("I would like a table for two and", "a bottle of water please"),
    ("Can you check my order and", "tell me when it arrives"),
    ("So I was thinking that", "we could meet on Friday"),
    ("I need to book a flight to", "London next week"),
    ("Remind me to buy milk and um", "some bread"),
]
#: The comparison table's modes, measured on the same questions in the same run.
MODES: list[tuple[str, TurnDetectionConfig]] = [
    ("server_vad 500 ms", TurnDetectionConfig(silence_duration_ms=500)),
    ("server_vad 300 ms", TurnDetectionConfig(silence_duration_ms=300)),
    ("semantic_vad auto", TurnDetectionConfig(type="semantic_vad", eagerness="auto")),
    ("semantic_vad high", TurnDetectionConfig(type="semantic_vad", eagerness="high")),
]


@dataclass
class Turn:
    text: str
    transcript: str
    reply: str
    vad_ms: float  # true end of speech -> speech_stopped detected (includes silence_duration_ms)
    stt_ms: float  # finish(): post-turn transcription cost
    reused: bool  # finish() reused the run started at the pause
    responder_ms: float  # first reply piece
    tts_ms: float  # first audio chunk of that piece
    total_ms: float  # true end of speech -> first reply audio chunk ready
    after_detect_ms: float  # speech_stopped -> first reply audio chunk ready
    base_transcript: str
    base_stt_ms: float  # baseline: 30 s-window transcription after the turn
    base_tts_ms: float  # baseline: whole reply synthesized
    base_total_ms: float  # baseline: vad_ms + stt + responder + whole TTS
    base_after_detect_ms: float
    verdict: str = ""  # semantic_vad: how the pause that ended the turn was judged


def speech(text: str) -> Pcm16:
    """espeak-ng speech at 16 kHz, cut at its true end."""
    voice = EspeakSynthesizer()
    pcm = resample(voice.render(text), voice.sample_rate, INPUT_SAMPLE_RATE)
    return pcm[: speech_end(pcm)]


def speech_end(pcm: Pcm16) -> int:
    """Sample index just after the last 10 ms frame with audible energy."""
    frame = INPUT_SAMPLE_RATE // 100
    frames = np.abs(pcm[: len(pcm) - len(pcm) % frame].astype(np.int32)).reshape(-1, frame).max(axis=1)
    loud = np.flatnonzero(frames > 600)
    return int((loud[-1] + 1) * frame)


def run_turn(
    stack: SpeechStack, question: str, config: TurnDetectionConfig, first: bool, *, baseline: bool = True
) -> Turn:
    spoken = speech(question)
    lead = np.zeros(int(0.8 * INPUT_SAMPLE_RATE), dtype=np.int16)
    audio = np.concatenate([lead, spoken, np.zeros(int(1.5 * INPUT_SAMPLE_RATE), dtype=np.int16)])
    true_end = len(lead) + len(spoken)

    detector = stack.new_turn_detector(config)
    streaming = stack.new_streaming_transcription(detector)
    conversation: list[ConversationTurn] = []
    if not first:
        conversation += [ConversationTurn("user", "Hi"), ConversationTurn("assistant", "Hello!")]
    marks: dict[str, float] = {}
    result: dict[str, object] = {}
    done = threading.Event()

    def respond() -> None:
        started = time.perf_counter()
        transcript = streaming.finish()
        marks["stt"] = time.perf_counter()
        replies = stack.responder.reply(
            instructions="", conversation=[*conversation, ConversationTurn("user", transcript)], tools=[]
        )
        reply = next(iter(replies))
        assert isinstance(reply, TextReply)
        marks["responder"] = time.perf_counter()
        next(iter(stack.synthesizer.synthesize(reply.text)))
        marks["tts"] = time.perf_counter()
        result.update(transcript=transcript, reply=reply.text, started=started)
        done.set()

    threads: list[threading.Thread] = []
    t0 = time.perf_counter()
    for index, start in enumerate(range(0, len(audio), CHUNK)):
        # Real-time pacing: chunk i is "received" at t0 + its end time.
        due = t0 + (start + CHUNK) / INPUT_SAMPLE_RATE
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        for event in detector.feed(audio[start : start + CHUNK]):
            if event.kind == "speech_started":
                worker = threading.Thread(target=streaming.run_partials, args=(lambda _text: None,))
                worker.start()
                threads.append(worker)
            elif "detected" not in marks:
                marks["detected"] = time.perf_counter()
                responder = threading.Thread(target=respond)
                responder.start()
                threads.append(responder)
        if done.is_set() and index * CHUNK > true_end + 2 * INPUT_SAMPLE_RATE:
            break
    done.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=30)
    if "tts" not in marks:
        raise RuntimeError(f"no reply for {question!r}: the turn was not detected")

    end_at = t0 + true_end / INPUT_SAMPLE_RATE
    detected = marks["detected"]
    turn_audio = detector.speech_audio()

    verdict = ""
    if isinstance(detector, SemanticVadTurnDetector) and detector.last_verdict is not None:
        verdict = detector.last_verdict[0]
    vad_ms = (detected - end_at) * 1000
    if not baseline:
        return Turn(
            question, str(result["transcript"]), str(result["reply"]), vad_ms,
            (marks["stt"] - detected) * 1000, streaming.last_finish_reused,
            (marks["responder"] - marks["stt"]) * 1000, (marks["tts"] - marks["responder"]) * 1000,
            (marks["tts"] - end_at) * 1000, (marks["tts"] - detected) * 1000,
            "", 0.0, 0.0, 0.0, 0.0, verdict,
        )  # fmt: skip

    # Baseline on the same utterance: whole-utterance STT with the 30 s window, whole-text TTS.
    base_start = time.perf_counter()
    base_transcript = stack.transcriber.transcribe_full(turn_audio)
    base_stt = time.perf_counter()
    base_reply = next(
        iter(
            stack.responder.reply(
                instructions="",
                conversation=[*conversation, ConversationTurn("user", base_transcript)],
                tools=[],
            )
        )
    )
    base_responder = time.perf_counter()
    assert isinstance(base_reply, TextReply)
    list(stack.synthesizer.synthesize(base_reply.text))
    base_end = time.perf_counter()
    base_after = (base_end - base_start) * 1000
    return Turn(
        text=question,
        transcript=str(result["transcript"]),
        reply=str(result["reply"]),
        vad_ms=vad_ms,
        stt_ms=(marks["stt"] - detected) * 1000,
        reused=streaming.last_finish_reused,
        responder_ms=(marks["responder"] - marks["stt"]) * 1000,
        tts_ms=(marks["tts"] - marks["responder"]) * 1000,
        total_ms=(marks["tts"] - end_at) * 1000,
        after_detect_ms=(marks["tts"] - detected) * 1000,
        base_transcript=base_transcript,
        base_stt_ms=(base_stt - base_start) * 1000,
        base_tts_ms=(base_end - base_responder) * 1000,
        base_total_ms=vad_ms + base_after,
        base_after_detect_ms=base_after,
        verdict=verdict,
    )


def count_splits(stack: SpeechStack, config: TurnDetectionConfig, pause_s: float = 0.6) -> int:
    """How many `TRAILING` utterances the mode ends at the pause after the dangling word.

    Fed unpaced in 20 ms chunks with the streaming transcription attached (semantic_vad blocks
    for the pause's transcript, so pacing does not change its verdicts).
    """
    split = 0
    for before, after in TRAILING:
        gap = np.zeros(int(pause_s * INPUT_SAMPLE_RATE), dtype=np.int16)
        tail = np.zeros(int(2.5 * INPUT_SAMPLE_RATE), dtype=np.int16)
        audio = np.concatenate([gap, speech(before), gap, speech(after), tail])
        detector = stack.new_turn_detector(config)
        stack.new_streaming_transcription(detector)
        stops = sum(
            event.kind == "speech_stopped"
            for start in range(0, len(audio), CHUNK)
            for event in detector.feed(audio[start : start + CHUNK])
        )
        split += stops > 1
    return split


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = (len(ordered) - 1) * q
    low, high = int(index), min(int(index) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (index - low)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--silence-ms", type=int, default=500, help="silence_duration_ms of server VAD")
    parser.add_argument(
        "--tts", choices=["piper", "espeak"], default=None, help="override REALTIME_LOCAL_TTS"
    )
    parser.add_argument(
        "--no-compare", action="store_true", help="skip the server_vad / semantic_vad comparison table"
    )
    parser.add_argument("--json", type=Path, help="also write every turn's figures here")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each turn")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    options = SpeechOptions.from_env()
    if args.tts:
        options = SpeechOptions(**{**asdict(options), "tts": args.tts})
    load_started = time.perf_counter()
    stack = load_speech_stack(options)
    load_s = time.perf_counter() - load_started
    config = TurnDetectionConfig(silence_duration_ms=args.silence_ms)

    turns = []
    for index in range(args.turns):
        question = QUESTIONS[index % len(QUESTIONS)]
        turn = run_turn(stack, question, config, first=index == 0)
        turns.append(turn)
        if args.verbose:
            print(
                f"{index + 1:2d} {turn.total_ms:6.0f} ms (after detect {turn.after_detect_ms:4.0f}, "
                f"stt {turn.stt_ms:4.0f}{' reused' if turn.reused else ''}) "
                f"{question!r} -> {turn.transcript!r}"
            )

    rows = [
        ("VAD: true end -> speech_stopped", "vad_ms"),
        ("  of which silence_duration_ms", None),
        ("STT finish() after stop", "stt_ms"),
        ("responder (first piece)", "responder_ms"),
        ("TTS first chunk", "tts_ms"),
        ("after turn detected -> first audio", "after_detect_ms"),
        ("VOICE-TO-VOICE: end of speech -> first audio", "total_ms"),
    ]
    load = os.getloadavg()
    print(
        f"\nspeech stack: load+warm-up {load_s:.2f} s {stack.timings}; tts={options.tts}, "
        f"cpu_threads={options.cpu_threads}, short_context={options.stt_short_context}; "
        f"{os.cpu_count()} CPUs, load average {load[0]:.1f}"
    )
    print(f"{len(turns)} turns, silence_duration_ms={args.silence_ms}, 20 ms chunks paced in real time\n")
    print(f"{'streaming pipeline (ms)':46s} {'p50':>7s} {'p95':>7s}")
    for label, key in rows:
        if key is None:
            print(f"{label:46s} {args.silence_ms:7d} {args.silence_ms:7d}")
            continue
        values = [getattr(turn, key) for turn in turns]
        print(f"{label:46s} {pct(values, 0.5):7.0f} {pct(values, 0.95):7.0f}")
    reused = sum(turn.reused for turn in turns)
    print(f"finish() reused the transcription started at the pause in {reused}/{len(turns)} turns")

    print(f"\n{'baseline: whole-utterance STT (30 s window) + whole TTS':46s} {'p50':>7s} {'p95':>7s}")
    for label, key in [
        ("STT after stop", "base_stt_ms"),
        ("TTS whole reply", "base_tts_ms"),
        ("after turn detected -> first audio", "base_after_detect_ms"),
        ("VOICE-TO-VOICE: end of speech -> first audio", "base_total_ms"),
    ]:
        values = [getattr(turn, key) for turn in turns]
        print(f"{label:46s} {pct(values, 0.5):7.0f} {pct(values, 0.95):7.0f}")

    def ratio(key: str, base: str) -> float:
        return pct([getattr(t, base) for t in turns], 0.5) / pct([getattr(t, key) for t in turns], 0.5)

    print(
        f"\nbaseline / streaming, p50: voice-to-voice {ratio('total_ms', 'base_total_ms'):.1f}x, "
        f"after detection {ratio('after_detect_ms', 'base_after_detect_ms'):.1f}x"
    )

    def spoken_words(text: str) -> list[str]:
        return [word.strip(".,?!'\"").lower() for word in text.split()]

    said = [spoken_words(turn.text) for turn in turns]
    for label, attribute in [("streaming", "transcript"), ("baseline", "base_transcript")]:
        heard = [spoken_words(getattr(turn, attribute)) for turn in turns]
        found = sum(sum(word in set(h) for word in s) for s, h in zip(said, heard, strict=True))
        exact = sum(h == s for s, h in zip(said, heard, strict=True))
        print(
            f"{label} transcripts: {exact}/{len(turns)} word for word, "
            f"{found / sum(map(len, said)):.0%} of spoken words heard"
        )
    print("(Whisper writes numbers as digits: 'two' heard as '2' counts as missed)")
    compared: dict[str, list[Turn]] = {}
    if not args.no_compare:
        compared = compare_modes(stack, config, turns, args.turns, verbose=args.verbose)
    if args.json:
        everything = {"detailed": [asdict(t) for t in turns]} | {
            mode: [asdict(t) for t in mode_turns] for mode, mode_turns in compared.items()
        }
        args.json.write_text(json.dumps(everything, indent=1))


def compare_modes(
    stack: SpeechStack, config: TurnDetectionConfig, turns: list[Turn], count: int, *, verbose: bool
) -> dict[str, list[Turn]]:
    """The same questions through every mode of `MODES`; prints the comparison table."""
    results: dict[str, list[Turn]] = {}
    splits: dict[str, int] = {}
    for label, mode in MODES:
        if mode == config:
            results[label] = turns  # the detailed run above already measured this mode
        else:
            results[label] = [
                run_turn(stack, QUESTIONS[i % len(QUESTIONS)], mode, first=i == 0, baseline=False)
                for i in range(count)
            ]
        splits[label] = count_splits(stack, mode)
        if verbose:
            for turn in results[label]:
                print(f"{label}: {turn.total_ms:6.0f} ms {turn.verdict or '-':10s} {turn.transcript!r}")

    print(
        f"\nturn detection modes, same {count} questions, same run (ms; p50 / p95)\n"
        f"{'mode':18s} {'end of speech->stop':>20s} {'stop->first audio':>18s} "
        f"{'VOICE-TO-VOICE':>15s} {'complete':>9s} {'split':>6s}"
    )
    for label, mode_turns in results.items():

        def both(key: str, values: list[Turn] = mode_turns) -> str:
            figures = [getattr(t, key) for t in values]
            return f"{pct(figures, 0.5):.0f} / {pct(figures, 0.95):.0f}"

        complete = sum(t.verdict == "complete" for t in mode_turns)
        judged = "-" if not any(t.verdict for t in mode_turns) else f"{complete}/{len(mode_turns)}"
        print(
            f"{label:18s} {both('vad_ms'):>20s} {both('after_detect_ms'):>18s} "
            f"{both('total_ms'):>15s} {judged:>9s} {splits[label]:>3d}/{len(TRAILING)}"
        )
    print(
        "complete: questions whose pause semantic_vad judged complete (the others waited longer);\n"
        "split: utterances pausing 600 ms after a dangling word that the mode cut in two"
    )
    return results


if __name__ == "__main__":
    main()
