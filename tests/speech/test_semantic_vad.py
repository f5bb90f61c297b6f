"""semantic_vad ends a complete turn sooner than server VAD and holds one that trails off.

Real espeak-ng speech, real Silero and Whisper (the session's stack). Audio is fed in 20 ms chunks
as fast as the detector takes it: the detector blocks for the pause's transcript, so its verdicts
do not depend on pacing. Times are compared in audio ms (where in the input the detector decided),
never in wall-clock time.
"""

from __future__ import annotations

import numpy as np
import pytest

from realtime_local.speech.base import INPUT_SAMPLE_RATE, Pcm16, TurnDetectionConfig, TurnEvent
from realtime_local.speech.semantic import WAIT_MS, Eagerness, SemanticVadTurnDetector, judge
from realtime_local.speech.stack import SpeechStack
from realtime_local.speech.stt import StreamingTranscription
from realtime_local.speech.vad import ServerVadTurnDetector

from .conftest import Say, silence, speech_bounds_ms

CHUNK = 320  # 20 ms


def feed_all(detector: ServerVadTurnDetector, audio: Pcm16) -> list[tuple[TurnEvent, int]]:
    """Feed in 20 ms chunks; each event with the ms of audio fed when it came out."""
    seen = []
    for start in range(0, len(audio), CHUNK):
        for event in detector.feed(audio[start : start + CHUNK]):
            seen.append((event, (start + CHUNK) * 1000 // INPUT_SAMPLE_RATE))
    return seen


def trimmed(say: Say, text: str) -> Pcm16:
    """espeak speech without its own leading/trailing silence, so pauses are exactly ours."""
    pcm = say(text)
    first, last = speech_bounds_ms(pcm)
    return pcm[first * 16 : last * 16]


def semantic(
    stack: SpeechStack, eagerness: Eagerness
) -> tuple[SemanticVadTurnDetector, StreamingTranscription]:
    detector = stack.new_turn_detector(TurnDetectionConfig(type="semantic_vad", eagerness=eagerness))
    assert isinstance(detector, SemanticVadTurnDetector)
    return detector, stack.new_streaming_transcription(detector)


@pytest.mark.parametrize(
    ("text", "verdict"),
    [
        ("What is the weather in Paris?", "complete"),
        ("Turn the lights on.", "complete"),
        ("Where are you from?", "complete"),
        ("So I was thinking that.", "incomplete"),
        ("I would like a table for two and", "incomplete"),
        ("I would like a table for two, and...", "incomplete"),
        ("Um.", "incomplete"),
        ("Can I get the", "incomplete"),
        ("I need to talk to", "incomplete"),
        ("Hello there", "uncertain"),
        ("", "uncertain"),
    ],
)
def test_judge_reads_complete_and_trailing_transcripts(text: str, verdict: str) -> None:
    assert judge(text) == verdict


@pytest.mark.speech
def test_a_complete_question_ends_the_turn_sooner_than_server_vad(
    speech_stack: SpeechStack, say: Say
) -> None:
    speech = trimmed(say, "What is the weather in Paris")
    true_end_ms = 1000 + len(speech) * 1000 // INPUT_SAMPLE_RATE
    audio = np.concatenate([silence(1.0), speech, silence(1.5)])
    detector, stream = semantic(speech_stack, "auto")
    server = speech_stack.new_turn_detector(TurnDetectionConfig(silence_duration_ms=500))

    events = feed_all(detector, audio)
    server_events = feed_all(server, audio)

    assert [e.kind for e, _ in events] == ["speech_started", "speech_stopped"]
    (stopped, decided_ms), (server_stopped, server_decided_ms) = events[1], server_events[1]
    # speech_stopped still marks the end of speech, as server VAD's does
    assert -150 <= stopped.audio_ms - true_end_ms <= 200
    assert stopped.audio_ms == server_stopped.audio_ms
    assert detector.last_verdict is not None and detector.last_verdict[0] == "complete", detector.last_verdict
    # medium ends 250 ms after the end of speech (+ one Silero window and one chunk), server VAD 500 ms
    assert WAIT_MS["medium"]["complete"] <= decided_ms - stopped.audio_ms <= 250 + 32 + 20
    assert server_decided_ms - decided_ms >= 200
    # the verdict's transcription is the one finish() returns: no second Whisper pass after the stop
    assert "paris" in stream.finish().lower()
    assert stream.last_finish_reused


@pytest.mark.speech
def test_a_pause_after_and_stays_one_turn_where_server_vad_splits_it(
    speech_stack: SpeechStack, say: Say
) -> None:
    first = trimmed(say, "I would like a table for two and")
    second = trimmed(say, "a bottle of sparkling water please")
    audio = np.concatenate([silence(1.0), first, silence(0.6), second, silence(2.0)])
    detector, stream = semantic(speech_stack, "medium")
    server = speech_stack.new_turn_detector(TurnDetectionConfig(silence_duration_ms=500))

    kinds = [e.kind for e, _ in feed_all(detector, audio)]
    server_kinds = [e.kind for e, _ in feed_all(server, audio)]

    assert server_kinds == ["speech_started", "speech_stopped"] * 2
    assert kinds == ["speech_started", "speech_stopped"], kinds
    text = stream.finish().lower()
    assert "table" in text and "water" in text, text
    assert detector.last_verdict is not None and detector.last_verdict[0] == "complete"


@pytest.mark.speech
def test_high_eagerness_ends_sooner_than_low(speech_stack: SpeechStack, say: Say) -> None:
    audio = np.concatenate([silence(1.0), trimmed(say, "Can you tell me a joke"), silence(2.5)])
    waited: dict[Eagerness, int] = {}
    high_low: tuple[Eagerness, Eagerness] = ("high", "low")
    for eagerness in high_low:
        detector, _stream = semantic(speech_stack, eagerness)
        (_, _), (stopped, decided_ms) = feed_all(detector, audio)
        waited[eagerness] = decided_ms - stopped.audio_ms
        assert detector.last_verdict is not None and detector.last_verdict[0] == "complete"
    assert WAIT_MS["high"]["complete"] <= waited["high"] <= WAIT_MS["high"]["complete"] + 52
    assert WAIT_MS["low"]["complete"] <= waited["low"] <= WAIT_MS["low"]["complete"] + 52
    assert waited["high"] < waited["low"]


@pytest.mark.speech
def test_without_a_transcription_the_pause_gets_server_vad_timing(
    speech_stack: SpeechStack, say: Say
) -> None:
    detector = SemanticVadTurnDetector(speech_stack.vad_model, eagerness="medium")
    audio = np.concatenate([silence(1.0), trimmed(say, "Hello there"), silence(1.5)])
    (_, _), (stopped, decided_ms) = feed_all(detector, audio)
    assert WAIT_MS["medium"]["uncertain"] <= decided_ms - stopped.audio_ms <= 500 + 52
    assert detector.last_verdict == ("uncertain", "")


@pytest.mark.speech
def test_reset_mid_pause_forgets_the_utterance(speech_stack: SpeechStack, say: Say) -> None:
    detector, _stream = semantic(speech_stack, "high")
    speech = trimmed(say, "Hello there")
    events = feed_all(detector, np.concatenate([silence(1.0), speech, silence(0.1)]))
    assert [e.kind for e, _ in events] == ["speech_started"]
    detector.reset()
    assert feed_all(detector, silence(1.0)) == []
    assert not detector.speaking
