"""Server VAD finds real speech boundaries with OpenAI's server_vad semantics."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_local.speech import weights
from realtime_local.speech.base import INPUT_SAMPLE_RATE, Pcm16, TurnDetectionConfig, TurnEvent
from realtime_local.speech.vad import ServerVadTurnDetector, SileroModel, SileroVad

from .conftest import Say, silence, speech_bounds_ms

CHUNK = 320  # 20 ms, as the session receives it after resampling


@pytest.fixture(scope="module")
def silero() -> SileroModel:
    return SileroModel(weights.silero_vad_path())


def feed_all(detector: ServerVadTurnDetector, audio: Pcm16) -> list[tuple[TurnEvent, int]]:
    """Feed in 20 ms chunks; each event with the ms of audio fed when it came out."""
    seen = []
    for start in range(0, len(audio), CHUNK):
        for event in detector.feed(audio[start : start + CHUNK]):
            seen.append((event, (start + CHUNK) * 1000 // INPUT_SAMPLE_RATE))
    return seen


def test_silero_scores_speech_high_and_silence_low(silero: SileroModel, say: Say) -> None:
    vad = SileroVad(silero)
    speech = say("What is the weather in Paris")
    scores = [vad.probability(speech[i : i + 512]) for i in range(0, len(speech) - 512, 512)]
    vad.reset()
    quiet = [vad.probability(np.zeros(512, dtype=np.int16)) for _ in range(20)]
    assert max(scores) > 0.9
    assert max(quiet) < 0.1


def test_start_and_stop_are_reported_at_the_speech_boundaries(silero: SileroModel, say: Say) -> None:
    speech = say("What is the weather in Paris")
    first_ms, last_ms = speech_bounds_ms(speech)
    audio = np.concatenate([silence(1.0), speech, silence(1.5)])
    detector = ServerVadTurnDetector(silero, TurnDetectionConfig(silence_duration_ms=500))

    events = feed_all(detector, audio)

    assert [event.kind for event, _ in events] == ["speech_started", "speech_stopped"]
    (started, _), (stopped, stopped_fed_ms) = events
    assert abs(started.audio_ms - (1000 + first_ms)) <= 100
    assert -150 <= stopped.audio_ms - (1000 + last_ms) <= 200
    # The stop is declared once silence_duration_ms of silence has been heard, not before.
    assert 500 <= stopped_fed_ms - stopped.audio_ms <= 500 + 32 + 20


def test_speech_audio_holds_the_prefix_padding_and_the_speech(silero: SileroModel, say: Say) -> None:
    speech = say("Hello there")
    detector = ServerVadTurnDetector(silero, TurnDetectionConfig(prefix_padding_ms=300))
    events = feed_all(detector, np.concatenate([silence(1.0), speech, silence(1.0)]))

    utterance = detector.speech_audio()

    started, stopped = (event for event, _ in events)
    expected_ms = (
        300 + (stopped.audio_ms - started.audio_ms) + detector.tail_samples * 1000 // INPUT_SAMPLE_RATE
    )
    assert abs(len(utterance) * 1000 // INPUT_SAMPLE_RATE - expected_ms) <= 40
    first_ms, _ = speech_bounds_ms(utterance)
    assert 200 <= first_ms <= 400, "speech begins after about prefix_padding_ms of lead-in"
    assert abs(detector.utterance_start_ms - (started.audio_ms - 300)) <= 32


def test_silence_alone_starts_nothing(silero: SileroModel) -> None:
    detector = ServerVadTurnDetector(silero)
    assert feed_all(detector, silence(3.0)) == []


def test_a_pause_shorter_than_silence_duration_does_not_end_the_turn(silero: SileroModel, say: Say) -> None:
    one, two = say("Book a table"), say("for two people")
    audio = np.concatenate([silence(0.5), one, silence(0.25), two, silence(1.0)])
    detector = ServerVadTurnDetector(silero, TurnDetectionConfig(silence_duration_ms=800))

    kinds = [event.kind for event, _ in feed_all(detector, audio)]

    assert kinds == ["speech_started", "speech_stopped"]


def test_separate_utterances_give_separate_turns(silero: SileroModel, say: Say) -> None:
    audio = np.concatenate([silence(0.5), say("Hello"), silence(1.2), say("Goodbye"), silence(1.0)])
    detector = ServerVadTurnDetector(silero, TurnDetectionConfig(silence_duration_ms=500))

    kinds = [event.kind for event, _ in feed_all(detector, audio)]

    assert kinds == ["speech_started", "speech_stopped"] * 2


def test_an_endless_utterance_is_stopped_at_the_cap(silero: SileroModel, say: Say) -> None:
    speech = np.concatenate([say("This sentence goes on and on without a pause at all")] * 2)
    detector = ServerVadTurnDetector(silero, max_utterance_s=1.5)

    events = [event for event, _ in feed_all(detector, np.concatenate([silence(0.5), speech]))]

    assert events[0].kind == "speech_started" and events[1].kind == "speech_stopped"
    assert events[1].audio_ms - events[0].audio_ms <= 1500 + 32
    assert len(detector.speech_audio()) <= int((1.5 + 0.3 + 0.1) * INPUT_SAMPLE_RATE)


def test_snapshot_shows_a_candidate_end_before_the_stop(silero: SileroModel, say: Say) -> None:
    speech = say("What time is it")
    speech = speech[: speech_bounds_ms(speech)[1] * INPUT_SAMPLE_RATE // 1000]  # espeak trails silence
    detector = ServerVadTurnDetector(silero, TurnDetectionConfig(silence_duration_ms=500))
    feed_all(detector, np.concatenate([silence(0.5), speech, silence(0.3)]))

    snap = detector.snapshot()

    assert not snap.stopped and detector.speaking
    assert snap.end_sample is not None, "300 ms into the silence the end is a candidate"
    feed_all(detector, silence(0.3))
    assert detector.snapshot().stopped and detector.snapshot().end_sample == snap.end_sample


def test_chunk_size_does_not_change_the_result(silero: SileroModel, say: Say) -> None:
    audio = np.concatenate([silence(0.7), say("Count to three"), silence(1.0)])
    small, large = ServerVadTurnDetector(silero), ServerVadTurnDetector(silero)
    by_20ms = [event for event, _ in feed_all(small, audio)]
    by_700 = [
        event for start in range(0, len(audio), 700) for event in large.feed(audio[start : start + 700])
    ]
    assert by_20ms == by_700


@pytest.mark.parametrize("noise_rms", [0, 150])
def test_the_end_of_speech_is_where_the_sound_stops_not_where_silero_notices(
    silero: SileroModel, say: Say, noise_rms: int
) -> None:
    """Silero's probability falls one to three windows after the speech; the silence (and
    `audio_end_ms`) is counted from the last loud 10 ms frame instead, also over steady noise."""
    from realtime_local.speech import vad as vad_module

    speech = say("Can you tell me a joke")
    _first_ms, last_ms = speech_bounds_ms(speech)
    rng = np.random.default_rng(7)
    clean = np.concatenate([silence(1.0), speech, silence(1.2)]).astype(np.float64)
    audio = np.clip(clean + rng.standard_normal(len(clean)) * noise_rms, -32768, 32767).astype(np.int16)
    ends = {}
    for refine in (False, True):
        vad_module.REFINE_END_WITH_ENERGY = refine
        try:
            detector = ServerVadTurnDetector(silero, TurnDetectionConfig(silence_duration_ms=500))
            stops = [(e, fed) for e, fed in feed_all(detector, audio) if e.kind == "speech_stopped"]
        finally:
            vad_module.REFINE_END_WITH_ENERGY = True
        assert len(stops) == 1
        (stopped, fed_ms) = stops[0]
        assert 500 <= fed_ms - stopped.audio_ms <= 500 + 32 + 20  # the wait is still a full 500 ms
        ends[refine] = stopped.audio_ms - (1000 + last_ms)
    # At the sound's end (10 ms frames); over noise, a faint release may count as noise.
    assert -30 <= ends[True] <= 15, ends
    assert ends[True] <= ends[False]  # never later than Silero's own window
