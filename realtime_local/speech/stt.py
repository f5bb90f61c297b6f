"""Speech to text with faster-whisper (Whisper base, CTranslate2 int8) and streaming transcription.

Two facts measured on the 2-core machine drive this module:

1. Whisper's encoder always reads a 30 s window in faster-whisper's `transcribe`: ~0.55 s of the
   ~0.75 s a short utterance costs, whatever its length. CTranslate2 accepts a shorter mel input
   (the `audio_ctx` trick of whisper.cpp): encoding max(8 s, the utterance) + 0.5 s costs about a
   third and transcribed 17 espeak test phrases better than the 30 s path (5 vs 7 misses, mostly
   "20" for "twenty"); contexts under ~5 s misread short words ("Good morning" -> "George
   Martin"). `WhisperTranscriber` uses that short context for audio up to 28 s and falls back to
   faster-whisper's own `transcribe` beyond (or when `short_context=False`: the baseline).
2. The end of a turn is only declared `silence_duration_ms` (500 ms by default) after the speaker
   went silent. `StreamingTranscription` starts the final transcription at the *candidate* end (the
   first silent VAD window), so it is normally finished before the turn detector declares the stop;
   `finish()` then returns it without any work.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.tokenizer import Tokenizer

from .base import INPUT_SAMPLE_RATE, Pcm16
from .vad import ServerVadTurnDetector, UtteranceSnapshot

logger = logging.getLogger(__name__)

_HOP = 160  # samples per mel frame
_SHORT_CONTEXT_MAX_S = 28.0
_PAD_S = 0.5  # silence appended before encoding: Whisper drops the last word without it
_MIN_S = 8.0  # shorter contexts misread short words ("Good morning" -> "George Martin")


@dataclass(frozen=True)
class TranscriptionResult:
    text: str
    no_speech_prob: float
    seconds: float  # wall time spent


class WhisperTranscriber:
    """`Transcriber` backed by faster-whisper.

    Thread safety: safe to call from several threads (one per call); CTranslate2 runs one
    transcription at a time (`num_workers=1`: a second would only halve each one's cores) and
    queues the others, so a busy engine adds queueing, not errors.
    """

    def __init__(
        self,
        model_dir: Path,
        *,
        cpu_threads: int = 2,
        language: str = "en",
        short_context: bool = True,
    ) -> None:
        self.language = language
        self.short_context = short_context
        self.model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=1,
            local_files_only=True,
        )
        self._tokenizers: dict[str, Tokenizer] = {}

    def warm_up(self) -> None:
        """Transcribe once: the first CTranslate2 call allocates its buffers and is several times slower.

        Only the path used for utterances up to 28 s is warmed (the 30 s path would add ~1 s to the
        engine's start for a case that is rare in conversation).
        """
        rng = np.random.default_rng(0)
        noise = (rng.standard_normal(INPUT_SAMPLE_RATE) * 300).astype(np.int16)
        if self.short_context:
            self.transcribe(noise)
        else:
            self.transcribe_full(noise)

    # -- Transcriber ----------------------------------------------------------------------------
    def transcribe(self, pcm: Pcm16, *, language: str | None = None, prompt: str | None = None) -> str:
        return self.transcribe_detailed(pcm, language=language, prompt=prompt).text

    # -- details --------------------------------------------------------------------------------
    def transcribe_detailed(
        self, pcm: Pcm16, *, language: str | None = None, prompt: str | None = None
    ) -> TranscriptionResult:
        started = time.perf_counter()
        audio = np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        if len(audio) < INPUT_SAMPLE_RATE // 10:
            return TranscriptionResult("", 1.0, time.perf_counter() - started)
        if self.short_context and len(audio) <= _SHORT_CONTEXT_MAX_S * INPUT_SAMPLE_RATE:
            text, no_speech = self._short(audio, language or self.language, prompt)
        else:
            text, no_speech = self._full(audio, language or self.language, prompt), 0.0
        return TranscriptionResult(text, no_speech, time.perf_counter() - started)

    def transcribe_full(self, pcm: Pcm16, *, language: str | None = None) -> str:
        """faster-whisper's own path (30 s window): the prototype's behaviour, kept for comparison."""
        audio = np.asarray(pcm, dtype=np.int16).astype(np.float32) / 32768.0
        return self._full(audio, language or self.language, None)

    def _tokenizer(self, language: str) -> Tokenizer:
        if language not in self._tokenizers:
            self._tokenizers[language] = Tokenizer(
                self.model.hf_tokenizer,
                self.model.model.is_multilingual,
                task="transcribe",
                language=language,
            )
        return self._tokenizers[language]

    def _full(self, audio: np.typing.NDArray[np.float32], language: str, prompt: str | None) -> str:
        segments, _info = self.model.transcribe(
            audio,
            language=language,
            beam_size=1,
            temperature=0.0,
            vad_filter=False,
            condition_on_previous_text=False,
            without_timestamps=True,
            initial_prompt=prompt,
        )
        return "".join(segment.text for segment in segments).strip()

    def _short(
        self, audio: np.typing.NDArray[np.float32], language: str, prompt: str | None
    ) -> tuple[str, float]:
        seconds = max(_MIN_S, len(audio) / INPUT_SAMPLE_RATE)
        total = int((seconds + _PAD_S) * INPUT_SAMPLE_RATE)
        padded = np.zeros(total, dtype=np.float32)
        padded[: len(audio)] = audio
        mel = self.model.feature_extractor(padded)
        frames = mel.shape[-1] - mel.shape[-1] % 2  # the encoder's conv has stride 2
        features = ctranslate2.StorageView.from_array(
            np.ascontiguousarray(mel[None, :, :frames], dtype=np.float32)
        )
        tokenizer = self._tokenizer(language)
        tokens: list[int] = []
        if prompt:
            tokens = [tokenizer.sot_prev, *tokenizer.encode(" " + prompt.strip())[-200:]]
        tokens += [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        encoded = self.model.model.encode(features, to_cpu=True)
        # Speech is 3-6 tokens/s: the cap bounds the time a hallucinated repetition loop can waste.
        max_length = min(448, int(len(tokens) + 12 + 8 * len(audio) / INPUT_SAMPLE_RATE))
        result = self.model.model.generate(
            encoded,
            [tokens],
            beam_size=1,
            max_length=max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )[0]
        ids = result.sequences_ids[0]
        avg_logprob = result.scores[0] / (len(ids) + 1) if result.scores else 0.0
        no_speech = float(result.no_speech_prob)
        # Whisper's own rule is "no_speech > 0.6 and avg_logprob < -1"; with a short context the
        # decode of noise is confident too (-0.3), while espeak and recorded speech measured 0.02-0.4
        # and silence or noise 0.7-0.92: the probability alone decides. Input is VAD-gated anyway.
        if no_speech > 0.6 or avg_logprob < -1.5:
            return "", no_speech
        return cut_repetition(tokenizer.decode(ids).strip()), no_speech


_WORD = re.compile(r"[^\w']+")


def cut_repetition(text: str) -> str:
    """Drop the loop a short-context decode sometimes falls into after the last word.

    With a short encoder input Whisper may not predict the end of text and starts the utterance
    again ("Hello there Hello there Hello"). The loop always restarts from the first words, so we
    cut at the first later position where the utterance's opening words (two or more, or the
    single dangling word at the end of a capped decode) come back.

    >>> cut_repetition("Tell me a long story. Tell me a long story. Tell me")
    'Tell me a long story.'
    >>> cut_repetition("What is the weather in Paris?")
    'What is the weather in Paris?'
    """
    raw = text.split()
    words = [_WORD.sub("", word).lower() for word in raw]
    for start in range(2, len(words)):
        span = min(4, len(words) - start)
        if (span >= 2 or start >= 3) and words[start : start + span] == words[:span]:
            return " ".join(raw[:start])
    return text


class StreamingTranscription:
    """Transcribes the current utterance while it is spoken, and finishes it fast.

    Bound to the call's `ServerVadTurnDetector`, from which it reads the utterance audio.

    Usage from a session (all methods block; call them via `asyncio.to_thread`):

    - after `speech_started`: run `run_partials(on_partial)` in a worker thread. It calls
      `on_partial(text)` (from that thread) whenever the partial transcript changes, roughly every
      `interval_s` while the user speaks, and returns once the detector reports `speech_stopped`.
      Alternatively call `partial()` yourself every 300-600 ms.
    - after `speech_stopped`: `finish()` returns the final transcript. If the transcription started
      at the candidate end of speech covers the same audio, it is returned at once (or after the
      in-flight run completes); otherwise the utterance is transcribed now.

    Thread safety: `partial()`, `run_partials()` and `finish()` may be called from different
    threads; transcriptions are serialized by an internal lock, so at most one runs at a time.
    `feed` of the detector may run concurrently on another thread (it publishes snapshots under
    its own lock).
    """

    def __init__(
        self,
        transcriber: WhisperTranscriber,
        detector: ServerVadTurnDetector,
        *,
        interval_s: float = 0.4,
        min_partial_s: float = 0.6,
        language: str | None = None,
    ) -> None:
        self._transcriber = transcriber
        self._detector = detector
        self.interval_s = interval_s
        self.language = language
        self._lock = threading.Lock()
        # Below ~0.6 s Whisper guesses words from a syllable: not worth a partial.
        self._min_partial = int(min_partial_s * INPUT_SAMPLE_RATE)
        # (utterance id, samples covered, end sample or None) -> text of the last run
        self._last_key: tuple[int, int, int | None] | None = None
        self._last_text = ""
        self.last_finish_seconds = 0.0  # what finish() cost, for benchmarks and logs
        self.last_finish_reused = False

    def _run(self, snap: UtteranceSnapshot) -> str:
        audio = snap.audio
        if snap.end_sample is not None:
            audio = audio[: snap.end_sample + self._detector.tail_samples]
        key: tuple[int, int, int | None] = (snap.utterance_id, len(audio), snap.end_sample)
        with self._lock:
            last = self._last_key
            # At a pause, a run up to the same end counts whatever audio followed it (as finish()).
            if key == last or (last is not None and snap.end_sample is not None and last[::2] == key[::2]):
                return self._last_text
            text = self._transcriber.transcribe(audio, language=self.language)
            self._last_key, self._last_text = key, text
            return text

    def transcribe_pause(self, snap: UtteranceSnapshot) -> str:
        """Transcript of `snap` up to its candidate end, for `SemanticVadTurnDetector`'s verdict.

        The worker's run at that pause (in flight or done) is returned instead of a second run.
        """
        return self._run(snap)

    def partial(self) -> str:
        """Transcript of the utterance so far (up to the candidate end when the speaker paused)."""
        return self._run(self._detector.snapshot())

    def covers_pause(self) -> bool:
        """Whether the last transcription covers the utterance up to its current (candidate) end,
        i.e. whether `finish()` would return without transcribing if the turn stopped now."""
        snap = self._detector.snapshot()
        last = self._last_key
        return (
            last is not None
            and snap.end_sample is not None
            and last[::2] == (snap.utterance_id, snap.end_sample)
        )

    def finish(self) -> str:
        """Final transcript of the utterance the detector stopped last (even if the user has
        started speaking again since: that next utterance is left for the next `finish()`)."""
        started = time.perf_counter()
        snap = self._detector.last_stopped() or self._detector.snapshot()
        end = snap.end_sample
        with self._lock:  # waits for an in-flight partial
            last = self._last_key
            reused = last is not None and end is not None and last[0] == snap.utterance_id and last[2] == end
            text = self._last_text
        if not reused:
            text = self._run(snap)
        self.last_finish_seconds = time.perf_counter() - started
        self.last_finish_reused = reused
        return text

    def run_partials(
        self,
        on_partial: Callable[[str], None],
        *,
        stop: threading.Event | None = None,
        on_pause: Callable[[str], None] | None = None,
    ) -> None:
        """Worker loop for one utterance; returns when the detector stops it (or `stop` is set).

        Wakes on the detector's condition: at once when a candidate end appears (that run is the
        one `finish()` reuses), otherwise every `interval_s` (or twice the last run's cost, if
        more) when new audio arrived and speech is being heard. `on_pause(text)` gets the transcript
        of each candidate end (what `finish()` returns if the turn stops there): the session starts
        its reply from it speculatively.
        """
        changed = self._detector.changed
        utterance = self._detector.snapshot().utterance_id
        last_text = ""
        last_length = 0
        last_end: int | None = None
        last_run_at = 0.0
        last_cost = 0.0
        while stop is None or not stop.is_set():
            snap = self._detector.snapshot()
            if snap.utterance_id != utterance or snap.stopped:
                return
            if snap.end_sample is not None:
                should_run = snap.end_sample != last_end  # once per candidate end, at once
            else:
                # At most half the time transcribing: a long utterance's partials cost more, and the
                # media loop and other calls share the two cores.
                due = time.monotonic() - last_run_at >= max(self.interval_s, 2 * last_cost)
                grown = len(snap.audio) > last_length and len(snap.audio) >= self._min_partial
                # While the speech probability dips, a pause (and its run) may be a window away:
                # starting a periodic partial now would make that run, the one finish() reuses, wait.
                hearing = self._detector.last_probability >= self._detector.config.threshold
                should_run = due and grown and hearing
            if should_run:
                last_run_at = time.monotonic()
                last_length, last_end = len(snap.audio), snap.end_sample
                text = self._run(snap)
                last_cost = time.monotonic() - last_run_at
                if text != last_text:
                    last_text = text
                    on_partial(text)
                if on_pause is not None and last_end is not None:
                    on_pause(text)
                continue
            with changed:
                changed.wait(timeout=self.interval_s / 4)
