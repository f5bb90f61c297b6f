"""Text to speech: Piper with the bundled en_US-joe-medium voice, espeak-ng as a light fallback.

Both yield audio piece by piece so playback starts before the whole reply is synthesized: the text
is split into sentences, and the first sentence is split again at its first clause boundary when
it is long, because the first chunk is what the caller waits for (Piper's cost grows with the
phonemes of one inference call). Output is mono int16 at `sample_rate` (22050 Hz for both); the
session resamples to 48 kHz for WebRTC.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
import threading
import wave
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import onnxruntime as ort

from .base import Pcm16

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n+")
_CLAUSE = re.compile(r"(?<=[,;:])\s+")
#: A first sentence longer than this many words is cut at its first clause boundary (if any).
_FIRST_CHUNK_WORDS = 6


def split_for_speech(text: str) -> list[str]:
    """Sentences, with a long first sentence split at its first comma/colon/semicolon.

    >>> split_for_speech("Here is what I found: sunny, 21 degrees. Anything else?")
    ['Here is what I found:', 'sunny, 21 degrees.', 'Anything else?']
    """
    pieces = [piece.strip() for piece in _SENTENCE.split(text) if piece and piece.strip()]
    if pieces and len(pieces[0].split()) > _FIRST_CHUNK_WORDS:
        head, *rest = _CLAUSE.split(pieces[0], maxsplit=1)
        if rest and len(head.split()) >= 2:
            pieces[0:1] = [head, rest[0]]
    return pieces


#: The quiet kept before the first audible sample of a reply (a hard cut would click).
_LEAD_IN_MS = 10
#: Amplitude (int16) that counts as audible when trimming a reply's quiet start.
_AUDIBLE = 300


def trim_lead_in(pcm: Pcm16, sample_rate: int) -> Pcm16:
    """`pcm` without its quiet start but `_LEAD_IN_MS`: Piper starts each utterance with ~30 ms of
    near-silence, which a caller only hears as latency when it is the first audio of a reply."""
    loud = np.flatnonzero(np.abs(pcm.astype(np.int32)) > _AUDIBLE)
    if not len(loud):
        return pcm
    return pcm[max(0, int(loud[0]) - sample_rate * _LEAD_IN_MS // 1000) :]


def resample(pcm: Pcm16, from_rate: int, to_rate: int) -> Pcm16:
    """Mono int16 resampling with libswresample (PyAV), for tests and the benchmark."""
    if from_rate == to_rate or len(pcm) == 0:
        return np.asarray(pcm, dtype=np.int16)
    resampler = av.AudioResampler(format="s16", layout="mono", rate=to_rate)
    frame = av.AudioFrame.from_ndarray(
        np.asarray(pcm, dtype=np.int16).reshape(1, -1), format="s16", layout="mono"
    )
    frame.sample_rate = from_rate
    frame.time_base = Fraction(1, from_rate)
    frame.pts = 0
    out = [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
    out += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
    return np.concatenate(out).astype(np.int16) if out else np.zeros(0, dtype=np.int16)


class PiperSynthesizer:
    """`Synthesizer` with piper-tts 1.8 and the pinned joe voice (weights verified by the caller).

    The ONNX session is built here rather than by `PiperVoice.load` so its thread count is ours:
    by default onnxruntime takes every core, which would starve Whisper and the media loop.
    Thread safety: piper's phonemizer is espeak-ng's C library with global state, so pieces are
    synthesized under a lock; two calls speaking at once interleave piece by piece.
    """

    def __init__(
        self, model_path: Path, config_path: Path, *, threads: int = 2, variation: bool = False
    ) -> None:
        from piper import PiperVoice
        from piper.config import PiperConfig

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        # Idle pool threads must not spin: they would steal the cores Whisper is using.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        with config_path.open(encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        session = ort.InferenceSession(str(model_path), sess_options=opts, providers=["CPUExecutionProvider"])
        self._voice = PiperVoice(session=session, config=config)
        self._lock = threading.Lock()
        self.sample_rate: int = int(config.sample_rate)
        # Piper samples random noise for prosody; without it the same text always gives the same
        # audio (reproducible calls, tests and benchmarks: with it, about 1 in 12 renderings of a
        # short sentence was misheard by Whisper). `variation=True` keeps the voice's own noise scales.
        self._noise_scale: float | None = None if variation else 0.0

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello, warming up."):
            pass

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> Iterator[Pcm16]:
        """One chunk per piece of `split_for_speech(text)`; `voice` is ignored (one bundled voice)."""
        from piper.config import SynthesisConfig

        config = SynthesisConfig(
            length_scale=1.0 / max(0.25, min(4.0, speed)),
            noise_scale=self._noise_scale,
            noise_w_scale=self._noise_scale,
        )
        first = True
        for piece in split_for_speech(text):
            with self._lock:
                chunks = [
                    chunk.audio_int16_array.reshape(-1) for chunk in self._voice.synthesize(piece, config)
                ]
            if first and chunks:  # the reply's first audio: its quiet start is pure latency
                chunks[0] = trim_lead_in(chunks[0], self.sample_rate)
                first = False
            yield from chunks


class EspeakSynthesizer:
    """`Synthesizer` running the espeak-ng program (robotic, ~10 ms per sentence, no model file)."""

    sample_rate: int = 22050

    def __init__(self, executable: str = "espeak-ng", *, voice: str = "en-us") -> None:
        found = shutil.which(executable)
        if found is None:
            raise FileNotFoundError(f"{executable} not found; install the Debian package espeak-ng")
        self._executable = found
        self._voice = voice

    def warm_up(self) -> None:
        for _ in self.synthesize("Hello."):
            pass

    def synthesize(self, text: str, *, voice: str | None = None, speed: float = 1.0) -> Iterator[Pcm16]:
        for piece in split_for_speech(text):
            yield self.render(piece, speed=speed)

    def render(self, text: str, *, speed: float = 1.0) -> Pcm16:
        """The whole text as one array (also used by tests and the benchmark to make speech)."""
        words_per_minute = str(int(175 * max(0.25, min(4.0, speed))))
        # "--" ends options: text starting with "-" is spoken, never parsed as a flag.
        result = subprocess.run(
            [self._executable, "-v", self._voice, "-s", words_per_minute, "--stdout", "--", text],
            capture_output=True,
            check=True,
            timeout=30,
        )
        with wave.open(io.BytesIO(result.stdout)) as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise RuntimeError("espeak-ng returned an unexpected WAV format")
            rate = wav.getframerate()
            # espeak-ng streams a WAV whose header announces an unknown length: read what is there.
            frames = wav.readframes(wav.getnframes() or len(result.stdout))
        pcm = np.frombuffer(frames, dtype=np.int16).copy()
        return resample(pcm, rate, self.sample_rate)
