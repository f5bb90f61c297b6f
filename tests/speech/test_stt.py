"""Whisper transcribes real speech; streaming partials grow and the final reuses the pause's work."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from realtime_local.speech.base import INPUT_SAMPLE_RATE
from realtime_local.speech.stack import SpeechStack
from realtime_local.speech.stt import cut_repetition
from realtime_local.speech.tts import resample

from .conftest import Say, silence, speech_bounds_ms, words

CHUNK = 320


def test_repetition_loops_are_cut_at_the_restart() -> None:
    assert cut_repetition("Hello there Hello there Hello there Hello") == "Hello there"
    assert cut_repetition("Turn on the light. Turn on the light. Turn on") == "Turn on the light."


def test_real_repeated_words_are_kept() -> None:
    assert cut_repetition("no no I said the red one") == "no no I said the red one"
    assert cut_repetition("What is the weather in Paris?") == "What is the weather in Paris?"


@pytest.mark.speech
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("What is the weather in Paris", {"weather", "paris"}),
        ("Please book a table for two people at seven", {"book", "table", "people"}),
        ("Tell me a long story", {"tell", "long", "story"}),
    ],
)
def test_transcript_contains_the_spoken_words(
    speech_stack: SpeechStack, say: Say, text: str, expected: set[str]
) -> None:
    audio = np.concatenate([silence(0.3), say(text), silence(0.3)])
    transcript = speech_stack.transcriber.transcribe(audio)
    assert expected <= words(transcript), transcript
    assert len(transcript) < 2 * len(text), f"no hallucinated repetition: {transcript!r}"


@pytest.mark.speech
def test_silence_transcribes_to_nothing(speech_stack: SpeechStack) -> None:
    assert speech_stack.transcriber.transcribe(silence(2.0)) == ""


@pytest.mark.speech
def test_the_thirty_second_path_agrees_on_long_audio(speech_stack: SpeechStack) -> None:
    # Piper's voice, not espeak's: espeak-ng's "jumps over the lazy dog" is misheard even in one
    # short clip ("jump, so verve lazy dog"), and repeated 12 times Whisper then repeats the mishearing.
    synthesizer = speech_stack.synthesizer
    spoken = np.concatenate(list(synthesizer.synthesize("The quick brown fox jumps over the lazy dog.")))
    sentence = resample(spoken, synthesizer.sample_rate, INPUT_SAMPLE_RATE)
    audio = np.concatenate([sentence, silence(0.5)] * 12)[: 30 * INPUT_SAMPLE_RATE]
    assert len(audio) > 28 * INPUT_SAMPLE_RATE, "beyond the short-context limit"
    transcript = speech_stack.transcriber.transcribe(audio)
    assert {"quick", "brown", "fox", "lazy", "dog"} <= words(transcript), transcript


@pytest.mark.speech
def test_streaming_partials_grow_while_speaking_and_the_final_reuses_the_pause(
    speech_stack: SpeechStack, say: Say
) -> None:
    speech = say("What is the weather like in Paris today")
    speech = speech[: speech_bounds_ms(speech)[1] * INPUT_SAMPLE_RATE // 1000]
    pause, rest = silence(0.3), silence(0.5)
    detector = speech_stack.new_turn_detector()
    streaming = speech_stack.new_streaming_transcription(detector)
    partials: list[str] = []
    worker: threading.Thread | None = None
    final = ""

    def play(audio: np.ndarray) -> None:
        nonlocal worker, final
        for start in range(0, len(audio), CHUNK):  # paced like a live call
            for event in detector.feed(audio[start : start + CHUNK]):
                if event.kind == "speech_started":
                    worker = threading.Thread(target=streaming.run_partials, args=(partials.append,))
                    worker.start()
                else:
                    final = streaming.finish()
            time.sleep(CHUNK / INPUT_SAMPLE_RATE)

    play(np.concatenate([silence(0.5), speech, pause]))
    # On a loaded machine the pause's run may need longer than the rest of the silence: wait for it,
    # so the test checks the contract (reuse), not the machine's speed (bench/ measures that).
    deadline = time.monotonic() + 10
    while not streaming.covers_pause() and time.monotonic() < deadline:
        time.sleep(0.02)
    play(rest)
    assert worker is not None
    worker.join(timeout=10)

    assert len(partials) >= 2, partials
    assert len(words(partials[0])) < len(words(partials[-1]))
    assert {"weather", "paris"} <= words(final)
    assert final == partials[-1]
    assert streaming.last_finish_reused, "the run started at the pause was reused"


@pytest.mark.speech
def test_finish_transcribes_when_no_partial_ran(speech_stack: SpeechStack, say: Say) -> None:
    detector = speech_stack.new_turn_detector()
    streaming = speech_stack.new_streaming_transcription(detector)
    events = detector.feed(np.concatenate([silence(0.5), say("Good morning"), silence(1.0)]))

    assert [event.kind for event in events] == ["speech_started", "speech_stopped"]
    final = streaming.finish()

    assert "morning" in words(final)
    assert not streaming.last_finish_reused


@pytest.mark.speech
def test_finish_transcribes_the_stopped_utterance_even_after_the_next_began(
    speech_stack: SpeechStack, say: Say
) -> None:
    detector = speech_stack.new_turn_detector()
    streaming = speech_stack.new_streaming_transcription(detector)
    detector.feed(np.concatenate([silence(0.5), say("Good morning"), silence(0.8)]))
    events = detector.feed(np.concatenate([say("Goodbye"), silence(0.2)]))
    assert [event.kind for event in events] == ["speech_started"], "the next utterance is under way"

    assert "morning" in words(streaming.finish())


@pytest.mark.speech
def test_calls_from_several_threads_each_get_their_transcript(speech_stack: SpeechStack, say: Say) -> None:
    clips = {"weather": say("What is the weather in Paris"), "morning": say("Good morning to you")}
    results: dict[str, str] = {}

    def transcribe(key: str) -> None:
        results[key] = speech_stack.transcriber.transcribe(clips[key])

    threads = [threading.Thread(target=transcribe, args=(key,)) for key in clips]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert "weather" in words(results["weather"]) and "paris" in words(results["weather"])
    assert "morning" in words(results["morning"])
