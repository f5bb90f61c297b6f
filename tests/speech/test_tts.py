"""Speech synthesis: audible, at the stated rate, early first chunk, and intelligible to Whisper."""

from __future__ import annotations

import numpy as np
import pytest

from realtime_local.speech import weights
from realtime_local.speech.base import INPUT_SAMPLE_RATE
from realtime_local.speech.stack import SpeechStack
from realtime_local.speech.tts import (
    EspeakSynthesizer,
    PiperSynthesizer,
    resample,
    split_for_speech,
    trim_lead_in,
)

from .conftest import words


def test_the_first_sentence_is_split_at_a_clause_when_long() -> None:
    assert split_for_speech("Here is what I found in the city: sunny and warm. Anything else?") == [
        "Here is what I found in the city:",
        "sunny and warm.",
        "Anything else?",
    ]
    assert split_for_speech("Hello there! How are you?") == ["Hello there!", "How are you?"]
    assert split_for_speech("  ") == []


def test_espeak_speaks_each_sentence_audibly_at_its_rate() -> None:
    synthesizer = EspeakSynthesizer()
    chunks = list(synthesizer.synthesize("Hello there. How are you?"))
    assert synthesizer.sample_rate == 22050
    assert len(chunks) == 2
    for chunk in chunks:
        assert chunk.dtype == np.int16
        assert 0.3 < len(chunk) / synthesizer.sample_rate < 3.0
        assert np.abs(chunk).max() > 3000


def test_text_that_looks_like_an_option_is_spoken_not_parsed() -> None:
    chunk = EspeakSynthesizer().render("--help me")
    assert len(chunk) > 0.3 * 22050


@pytest.mark.speech
def test_piper_streams_audible_audio_at_its_rate(speech_stack: SpeechStack) -> None:
    synthesizer = speech_stack.synthesizer
    chunks = list(synthesizer.synthesize("Here is what I found: sunny, twenty one degrees. Anything else?"))
    assert synthesizer.sample_rate == 22050
    assert len(chunks) >= 2, "one chunk per sentence or clause, so playback starts early"
    audio = np.concatenate(chunks)
    assert audio.dtype == np.int16
    assert 2.0 < len(audio) / synthesizer.sample_rate < 8.0
    assert np.sqrt(np.mean(audio.astype(np.float64) ** 2)) > 1000


@pytest.mark.speech
def test_piper_speech_is_transcribed_back_to_its_words(speech_stack: SpeechStack) -> None:
    synthesizer = speech_stack.synthesizer
    audio = np.concatenate(list(synthesizer.synthesize("The weather in Paris is sunny.")))
    heard = speech_stack.transcriber.transcribe(resample(audio, synthesizer.sample_rate, INPUT_SAMPLE_RATE))
    assert {"weather", "paris", "sunny"} <= words(heard), heard


@pytest.mark.speech
def test_speed_changes_the_duration(speech_stack: SpeechStack) -> None:
    synthesizer = speech_stack.synthesizer
    normal = sum(len(chunk) for chunk in synthesizer.synthesize("Counting one two three four."))
    fast = sum(len(chunk) for chunk in synthesizer.synthesize("Counting one two three four.", speed=1.5))
    assert fast < 0.8 * normal


@pytest.mark.speech
def test_piper_renders_the_same_text_the_same_way_unless_variation_is_asked_for(
    speech_stack: SpeechStack,
) -> None:
    text = "The weather in Paris is sunny."
    first = np.concatenate(list(speech_stack.synthesizer.synthesize(text)))
    again = np.concatenate(list(speech_stack.synthesizer.synthesize(text)))
    assert np.array_equal(first, again)

    varied = PiperSynthesizer(*weights.piper_voice_paths(), threads=1, variation=True)
    renderings = {np.concatenate(list(varied.synthesize(text))).tobytes() for _ in range(3)}
    assert len(renderings) > 1


def test_the_quiet_start_of_a_reply_is_cut_to_10_ms() -> None:
    rate = 22050
    quiet, voice = np.zeros(rate * 30 // 1000, dtype=np.int16), np.full(rate // 10, 5000, dtype=np.int16)
    trimmed = trim_lead_in(np.concatenate([quiet, voice]), rate)
    assert len(trimmed) == len(voice) + rate * 10 // 1000
    assert np.array_equal(trim_lead_in(quiet, rate), quiet)  # nothing audible: left alone
