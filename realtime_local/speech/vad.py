"""Voice activity detection (Silero, ONNX) and server-VAD turn detection on top of it.

`SileroVad` runs the `silero_vad.onnx` file shipped in the `silero-vad` wheel with onnxruntime alone
(the package's own loader needs torch). One instance per call: the model is recurrent and keeps its
state between 32 ms windows. The ONNX session itself is shared (onnxruntime sessions are
thread-safe for `run`), so a new call costs no model load.

`ServerVadTurnDetector` implements OpenAI's `server_vad` semantics: `threshold`,
`prefix_padding_ms` and `silence_duration_ms`. It also exposes what streaming transcription needs
to start the final transcription *before* the turn is declared over: the candidate end of speech
(first silent window after speech), published under a condition variable.
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .base import INPUT_SAMPLE_RATE, Pcm16, TurnDetectionConfig, TurnEvent

WINDOW = 512  # samples per Silero window at 16 kHz (32 ms)
_CONTEXT = 64  # Silero v5+ looks at the last 64 samples of the previous window
_WINDOW_MS = WINDOW * 1000 // INPUT_SAMPLE_RATE
#: Place the end of speech where the sound stops, not where Silero notices (see `_energy_end`).
#: A module switch for A/B benchmarks only.
REFINE_END_WITH_ENERGY = True
_FRAME = INPUT_SAMPLE_RATE // 100  # 10 ms: the resolution of the end-of-speech refinement
_REFINE_WINDOWS = 4  # how far back (in windows, 128 ms) the end may move: Silero's lag is 0-100 ms


def _session(path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    # One window is ~0.2 ms of work: more threads only add wake-up overhead and steal Whisper's cores.
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


class SileroModel:
    """The loaded ONNX model, shared by every call's `SileroVad`."""

    def __init__(self, path: Path) -> None:
        self.session = _session(path)

    def new_vad(self) -> SileroVad:
        return SileroVad(self)


class SileroVad:
    """Speech probability per 512-sample window at 16 kHz, with the model's recurrent state."""

    def __init__(self, model: SileroModel) -> None:
        self._session = model.session
        self.reset()

    def reset(self) -> None:
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros((1, _CONTEXT), dtype=np.float32)

    def probability(self, window: Pcm16) -> float:
        """Speech probability of exactly one 512-sample window."""
        if window.shape != (WINDOW,):
            raise ValueError(f"Silero needs windows of {WINDOW} samples, got {window.shape}")
        x = np.concatenate([self._context, (window.astype(np.float32) / 32768.0)[None, :]], axis=1)
        out, self._state = self._session.run(
            None, {"input": x, "state": self._state, "sr": np.array(INPUT_SAMPLE_RATE, dtype=np.int64)}
        )
        self._context = x[:, -_CONTEXT:]
        return float(out[0, 0])


def _rms(pcm: Pcm16) -> float:
    return float(np.sqrt(np.mean(np.square(pcm.astype(np.float32))))) if len(pcm) else 0.0


def _frame_rms(pcm: Pcm16) -> np.typing.NDArray[np.float32]:
    """RMS of each whole 10 ms frame of `pcm`."""
    frames = len(pcm) // _FRAME
    x = pcm[: frames * _FRAME].astype(np.float32).reshape(frames, _FRAME)
    levels: np.typing.NDArray[np.float32] = np.sqrt(np.mean(np.square(x), axis=1))
    return levels


@dataclass(frozen=True)
class UtteranceSnapshot:
    """A consistent view of the current utterance for a transcription worker.

    `audio` starts `prefix_padding_ms` before the speech start. `end_sample` (index into `audio`)
    is set while the speaker is silent after speech (a *candidate* end that becomes final when the
    silence lasts `silence_duration_ms`), and always once `stopped`.
    """

    utterance_id: int
    audio: Pcm16
    end_sample: int | None
    stopped: bool


class ServerVadTurnDetector:
    """OpenAI-style server VAD over Silero probabilities.

    - `speech_started.audio_ms`: start of the first window whose probability reaches `threshold`.
    - `speech_stopped.audio_ms`: end of speech, i.e. the start of the first window that fell below
      `threshold - 0.15` (Silero's hysteresis) and stayed below `threshold` for
      `silence_duration_ms`; the event is emitted when that silence has elapsed.
    - `speech_audio()`: `prefix_padding_ms` before the start, the speech, and `tail_ms` after its end.
    - An utterance longer than `max_utterance_s` is stopped by force (bounded memory; Whisper reads
      at most 30 s at once anyway).

    `feed` may run on the event loop thread while a worker thread reads `snapshot()`: state changes
    happen under `self.changed` (a `threading.Condition`), which is notified on every change a
    transcription worker cares about (new audio, candidate end found or withdrawn, stop).
    """

    def __init__(
        self,
        model: SileroModel,
        config: TurnDetectionConfig | None = None,
        *,
        max_utterance_s: float = 30.0,
        tail_ms: int = 100,
    ) -> None:
        self.config = config or TurnDetectionConfig()
        self._vad = model.new_vad()
        self._max_samples = int(max_utterance_s * INPUT_SAMPLE_RATE)
        self._tail = tail_ms * INPUT_SAMPLE_RATE // 1000
        self._prefix_windows = max(0, -(-self.config.prefix_padding_ms // _WINDOW_MS))
        self._silence_samples = self.config.silence_duration_ms * INPUT_SAMPLE_RATE // 1000
        self.changed = threading.Condition(threading.RLock())
        self._pending = np.zeros(0, dtype=np.int16)
        self._processed = 0  # samples consumed by the VAD since the call started
        self._ring: deque[Pcm16] = deque(maxlen=self._prefix_windows or 1)
        self._utterance_id = 0
        self._chunks: list[Pcm16] = []
        self._length = 0  # samples in _chunks
        self._start_offset = 0  # call sample index of _chunks[0]
        self._speech_start = 0  # call sample index of the detected start
        self._speaking = False
        self._stopped = False
        self._silence_from: int | None = None  # call sample index of the candidate end
        self._last_stopped: UtteranceSnapshot | None = None
        self.last_probability = 0.0
        self._noise_rms = 0.0  # 10 ms frame RMS of the quiet before the utterance (low percentile)
        self._peak_rms = 0.0  # loudest speech window of the utterance

    # -- TurnDetector ---------------------------------------------------------------------------
    def feed(self, pcm: Pcm16) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        with self.changed:  # re-entrant: `reset()` from another thread waits for this chunk
            data = np.concatenate([self._pending, np.asarray(pcm, dtype=np.int16).reshape(-1)])
            usable = len(data) - len(data) % WINDOW
            self._pending = data[usable:].copy()
            for index in range(0, usable, WINDOW):
                event = self._window(data[index : index + WINDOW])
                if event is not None:
                    events.append(event)
        return events

    def speech_audio(self) -> Pcm16:
        snap = self.snapshot()
        audio = snap.audio
        if snap.end_sample is not None and snap.stopped:
            audio = audio[: min(len(audio), snap.end_sample + self._tail)]
        return audio

    def reset(self) -> None:
        with self.changed:
            self._vad.reset()
            self._pending = np.zeros(0, dtype=np.int16)
            self._ring.clear()
            self._chunks = []
            self._length = 0
            self._speaking = False
            self._stopped = False
            self._silence_from = None
            self._last_stopped = None
            self.changed.notify_all()

    # -- for streaming transcription ------------------------------------------------------------
    def snapshot(self) -> UtteranceSnapshot:
        with self.changed:
            audio = np.concatenate(self._chunks) if self._chunks else np.zeros(0, dtype=np.int16)
            end = None if self._silence_from is None else self._silence_from - self._start_offset
            return UtteranceSnapshot(self._utterance_id, audio, end, self._stopped)

    def last_stopped(self) -> UtteranceSnapshot | None:
        """The most recently stopped utterance, even if the next one has started since.

        `finish()` transcribes this one: the session may call it after the user spoke again.
        """
        with self.changed:
            return self._last_stopped

    @property
    def utterance_start_ms(self) -> int:
        """Where `speech_audio()` begins (speech start minus the prefix padding actually kept).

        OpenAI documents `speech_started.audio_start_ms` as including `prefix_padding_ms`; the
        session may send this value there, and `speech_started.audio_ms` (the detected onset)
        where it wants the onset itself.
        """
        return self._ms(self._start_offset)

    @property
    def tail_samples(self) -> int:
        """Samples kept after the end of speech in `speech_audio()`."""
        return self._tail

    @property
    def speaking(self) -> bool:
        return self._speaking

    @property
    def in_pause(self) -> bool:
        """Whether the speaker is silent after speech and the turn is not over yet (a candidate end
        stands). Read without the lock: a plain attribute read, for a caller that polls it."""
        return self._speaking and self._silence_from is not None

    # -- internals ------------------------------------------------------------------------------
    def _ms(self, sample: int) -> int:
        return sample * 1000 // INPUT_SAMPLE_RATE

    def _window(self, window: Pcm16) -> TurnEvent | None:
        probability = self._vad.probability(window)
        self.last_probability = probability
        window_start = self._processed
        self._processed += WINDOW
        threshold = self.config.threshold
        with self.changed:
            if not self._speaking:
                if probability >= threshold:
                    return self._start(window, window_start)
                self._ring.append(window)
                return None
            self._chunks.append(window)
            self._length += WINDOW
            if probability >= threshold:
                self._peak_rms = max(self._peak_rms, _rms(window))
                if self._silence_from is not None:
                    self._silence_from = None  # the speaker went on: withdraw the candidate end
                self.changed.notify_all()
                if self._length >= self._max_samples:
                    return self._stop(self._processed)
                return None
            if self._silence_from is None and probability < threshold - 0.15:
                self._silence_from = self._energy_end(window_start)
            self.changed.notify_all()
            if (
                self._silence_from is not None
                and self._processed - self._silence_from >= self._silence_samples
            ):
                return self._stop(self._silence_from)
            if self._length >= self._max_samples:
                return self._stop(self._processed)
            return None

    def _start(self, window: Pcm16, window_start: int) -> TurnEvent:
        prefix = list(self._ring) if self._prefix_windows else []
        self._ring.clear()
        self._utterance_id += 1
        self._chunks = [*prefix, window]
        self._length = WINDOW * len(self._chunks)
        self._start_offset = window_start - WINDOW * len(prefix)
        self._speech_start = window_start
        quiet = _frame_rms(np.concatenate(prefix)) if prefix else np.zeros(0)
        self._noise_rms = float(np.percentile(quiet, 10)) if len(quiet) else 0.0
        self._peak_rms = _rms(window)
        self._speaking = True
        self._stopped = False
        self._silence_from = None
        self.changed.notify_all()
        return TurnEvent("speech_started", self._ms(window_start))

    def _energy_end(self, window_start: int) -> int:
        """Where the sound of the speech stops, for the candidate end Silero found at `window_start`.

        Silero's probability falls below `threshold - 0.15` one to three windows after the speech
        (measured on the benchmark's 20 espeak questions: 64 ms median), so counting the silence
        from that window made every turn end that much after `silence_duration_ms` of real silence,
        and `audio_end_ms` came late by as much. The end is moved back to just after the last 10 ms
        frame of the last `_REFINE_WINDOWS` windows that is louder than the quiet before the
        utterance (3x its low-percentile RMS) and than 2 % of the utterance's loudest window: the
        frames after it are silence by any measure (with none, the sound had stopped before the
        look-back began). Never later than Silero's window, never before the speech start or the
        look-back.
        """
        if not REFINE_END_WITH_ENERGY:
            return window_start
        low = max(self._speech_start, window_start - _REFINE_WINDOWS * WINDOW)
        count = (self._processed - low) // WINDOW
        if count <= 0 or count > len(self._chunks):
            return window_start
        levels = _frame_rms(np.concatenate(self._chunks[-count:]))
        loud = np.flatnonzero(levels > max(3.0 * self._noise_rms, 0.02 * self._peak_rms, 20.0))
        if not len(loud):
            return low
        return min(window_start, low + int(loud[-1] + 1) * _FRAME)

    def _stop(self, end: int) -> TurnEvent:
        self._silence_from = end
        self._speaking = False
        self._stopped = True
        audio = np.concatenate(self._chunks)
        self._last_stopped = UtteranceSnapshot(self._utterance_id, audio, end - self._start_offset, True)
        self.changed.notify_all()
        return TurnEvent("speech_stopped", self._ms(end))
