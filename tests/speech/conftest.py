"""Speech test fixtures: real espeak-ng speech made at test time, models loaded once per session."""

from __future__ import annotations

import subprocess
import wave
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from realtime_local.speech.base import INPUT_SAMPLE_RATE, Pcm16
from realtime_local.speech.stack import SpeechOptions, SpeechStack, load_speech_stack
from realtime_local.speech.tts import resample

Say = Callable[[str], Pcm16]


def read_wav(path: Path) -> tuple[Pcm16, int]:
    with wave.open(str(path)) as wav:
        assert wav.getsampwidth() == 2 and wav.getnchannels() == 1
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16).copy(), wav.getframerate()


@pytest.fixture
def say(tmp_path: Path) -> Say:
    """Speech for `text` as 16 kHz int16, made by the espeak-ng program into a WAV under tmp_path."""
    counter = iter(range(1000))

    def make(text: str) -> Pcm16:
        path = tmp_path / f"say-{next(counter)}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-w", str(path), "--", text], check=True, timeout=30)
        pcm, rate = read_wav(path)
        return resample(pcm, rate, INPUT_SAMPLE_RATE)

    return make


def silence(seconds: float) -> Pcm16:
    return np.zeros(int(seconds * INPUT_SAMPLE_RATE), dtype=np.int16)


def speech_bounds_ms(pcm: Pcm16, rate: int = INPUT_SAMPLE_RATE) -> tuple[int, int]:
    """First and last 10 ms frame with audible energy: the true speech boundaries of a clip."""
    frame = rate // 100
    frames = np.abs(pcm[: len(pcm) - len(pcm) % frame].astype(np.int32)).reshape(-1, frame).max(axis=1)
    loud = np.flatnonzero(frames > 600)
    return int(loud[0] * 10), int((loud[-1] + 1) * 10)


def words(text: str) -> set[str]:
    return {word.strip(".,?!'\"").lower() for word in text.split()}


@pytest.fixture(scope="session")
def speech_stack() -> SpeechStack:
    """The default stack (Whisper, Piper, rules), loaded and warmed once for the whole session."""
    return load_speech_stack(SpeechOptions())
