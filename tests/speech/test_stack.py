"""Options come from REALTIME_LOCAL_* variables; the stack loads once and hands out per-call parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from realtime_local.speech.base import TurnDetectionConfig
from realtime_local.speech.responder import OpenAICompatibleResponder, RuleResponder
from realtime_local.speech.stack import (
    SpeechConfigurationError,
    SpeechOptions,
    SpeechStack,
    load_speech_stack,
)
from realtime_local.speech.tts import EspeakSynthesizer, PiperSynthesizer
from realtime_local.speech.weights import DEFAULT_MODEL_DIR

from .conftest import Say, silence


def test_defaults_without_variables() -> None:
    options = SpeechOptions.from_env({})
    assert options == SpeechOptions()
    assert (options.stt, options.tts, options.responder, options.cpu_threads) == (
        "whisper",
        "piper",
        "rules",
        2,
    )
    assert options.model_dir == DEFAULT_MODEL_DIR


def test_variables_choose_the_stages(tmp_path: Path) -> None:
    options = SpeechOptions.from_env(
        {
            "REALTIME_LOCAL_TTS": "espeak",
            "REALTIME_LOCAL_RESPONDER": "openai-compatible",
            "REALTIME_LOCAL_RESPONDER_URL": "http://127.0.0.1:8080/v1",
            "REALTIME_LOCAL_RESPONDER_MODEL": "smol",
            "REALTIME_LOCAL_RESPONDER_KEY": "k",
            "REALTIME_LOCAL_CPU_THREADS": "1",
            "REALTIME_LOCAL_MODEL_DIR": str(tmp_path),
            "REALTIME_LOCAL_STT_SHORT_CONTEXT": "0",
            "REALTIME_LOCAL_PARTIAL_INTERVAL_MS": "250",
        }
    )
    assert options.tts == "espeak" and options.responder == "openai-compatible"
    assert (options.responder_url, options.responder_model, options.responder_key) == (
        "http://127.0.0.1:8080/v1",
        "smol",
        "k",
    )
    assert options.cpu_threads == 1 and options.model_dir == tmp_path
    assert options.stt_short_context is False and options.partial_interval_ms == 250


@pytest.mark.parametrize(
    ("environ", "names"),
    [
        ({"REALTIME_LOCAL_TTS": "festival"}, "REALTIME_LOCAL_TTS"),
        ({"REALTIME_LOCAL_RESPONDER": "gpt"}, "REALTIME_LOCAL_RESPONDER"),
        ({"REALTIME_LOCAL_RESPONDER": "openai-compatible"}, "REALTIME_LOCAL_RESPONDER_URL"),
        ({"REALTIME_LOCAL_RESPONDER": "llama"}, "REALTIME_LOCAL_LLAMA_MODEL"),
        ({"REALTIME_LOCAL_CPU_THREADS": "two"}, "REALTIME_LOCAL_CPU_THREADS"),
    ],
)
def test_bad_values_name_the_variable(environ: dict[str, str], names: str) -> None:
    with pytest.raises(SpeechConfigurationError, match=names):
        SpeechOptions.from_env(environ)


@pytest.mark.speech
def test_the_default_stack_is_loaded_warm_with_its_timings(speech_stack: SpeechStack) -> None:
    assert isinstance(speech_stack.synthesizer, PiperSynthesizer)
    assert isinstance(speech_stack.responder, RuleResponder)
    assert {"vad", "stt_load", "stt_warm_up", "tts_load", "tts_warm_up", "total"} <= set(speech_stack.timings)


@pytest.mark.speech
def test_each_call_gets_its_own_turn_detector(speech_stack: SpeechStack, say: Say) -> None:
    first = speech_stack.new_turn_detector(TurnDetectionConfig(silence_duration_ms=300))
    second = speech_stack.new_turn_detector()
    assert first.config.silence_duration_ms == 300

    started = first.feed(np.concatenate([silence(0.5), say("Hello there")]))

    assert [event.kind for event in started] == ["speech_started"]
    assert second.feed(silence(0.5)) == [] and not second.speaking, "the other call's state is separate"


@pytest.mark.speech
def test_espeak_and_an_endpoint_responder_can_be_chosen(tmp_path: Path) -> None:
    options = SpeechOptions.from_env(
        {
            "REALTIME_LOCAL_TTS": "espeak",
            "REALTIME_LOCAL_RESPONDER": "openai-compatible",
            "REALTIME_LOCAL_RESPONDER_URL": "http://127.0.0.1:9/v1",
        }
    )
    stack = load_speech_stack(options)
    assert isinstance(stack.synthesizer, EspeakSynthesizer)
    assert isinstance(stack.responder, OpenAICompatibleResponder)
    assert stack.responder.url == "http://127.0.0.1:9/v1/chat/completions"
