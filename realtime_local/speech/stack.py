"""Choosing, loading and warming the speech stages once per engine process.

The engine calls `load_speech_stack(SpeechOptions.from_env())` at start; each call then gets its own
turn detector and streaming transcription from the stack's factories (cheap: the models are shared).

Environment variables (all optional):

| variable | default | meaning |
|---|---|---|
| `REALTIME_LOCAL_STT` | `whisper` | speech to text (only `whisper` for now) |
| `REALTIME_LOCAL_STT_LANGUAGE` | `en` | Whisper language code |
| `REALTIME_LOCAL_STT_SHORT_CONTEXT` | `1` | encode only the utterance, not 30 s (see `stt`) |
| `REALTIME_LOCAL_PARTIAL_INTERVAL_MS` | `400` | partial transcript period while the user speaks |
| `REALTIME_LOCAL_TTS` | `piper` | `piper` (natural) or `espeak` (robotic, tiny) |
| `REALTIME_LOCAL_TTS_VARIATION` | `0` | `1`: Piper samples prosody noise (varied, not reproducible) |
| `REALTIME_LOCAL_RESPONDER` | `rules` | `rules`, `openai-compatible` or `llama` |
| `REALTIME_LOCAL_RESPONDER_URL` | | base URL of a chat-completions server, e.g. `http://127.0.0.1:8080/v1` |
| `REALTIME_LOCAL_RESPONDER_MODEL` | `local` | model name sent to that server |
| `REALTIME_LOCAL_RESPONDER_KEY` | | bearer key for that server |
| `REALTIME_LOCAL_LLAMA_MODEL` / `_SHA256` | | GGUF file and its pinned sha256 for `llama` |
| `REALTIME_LOCAL_CPU_THREADS` | `2` | threads for Whisper and Piper |
| `REALTIME_LOCAL_MODEL_DIR` | `var/models` | cache for the joined Whisper model |
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from . import weights
from .base import Responder, Synthesizer, TurnDetectionConfig
from .responder import LlamaCppResponder, OpenAICompatibleResponder, RuleResponder
from .semantic import SemanticVadTurnDetector
from .stt import StreamingTranscription, WhisperTranscriber
from .tts import EspeakSynthesizer, PiperSynthesizer
from .vad import ServerVadTurnDetector, SileroModel

logger = logging.getLogger(__name__)

SttChoice = Literal["whisper"]
TtsChoice = Literal["piper", "espeak"]
ResponderChoice = Literal["rules", "openai-compatible", "llama"]


class SpeechConfigurationError(ValueError):
    """An option has a value the stack cannot use; the message names the variable."""


@dataclass(frozen=True)
class SpeechOptions:
    stt: SttChoice = "whisper"
    stt_language: str = "en"
    stt_short_context: bool = True
    partial_interval_ms: int = 400
    tts: TtsChoice = "piper"
    tts_variation: bool = False
    responder: ResponderChoice = "rules"
    responder_url: str = ""
    responder_model: str = "local"
    responder_key: str = ""
    llama_model: str = ""
    llama_sha256: str = ""
    cpu_threads: int = 2
    model_dir: Path = weights.DEFAULT_MODEL_DIR

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> SpeechOptions:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(f"REALTIME_LOCAL_{name}", default).strip() or default

        def choice(name: str, default: str, allowed: tuple[str, ...]) -> str:
            value = get(name, default).lower()
            if value not in allowed:
                raise SpeechConfigurationError(f"REALTIME_LOCAL_{name}={value!r}: expected one of {allowed}")
            return value

        def integer(name: str, default: int) -> int:
            raw = get(name, str(default))
            try:
                return int(raw)
            except ValueError:
                raise SpeechConfigurationError(
                    f"REALTIME_LOCAL_{name}={raw!r}: expected an integer"
                ) from None

        options = cls(
            stt=cast(SttChoice, choice("STT", "whisper", ("whisper",))),
            stt_language=get("STT_LANGUAGE", "en"),
            stt_short_context=get("STT_SHORT_CONTEXT", "1").lower() not in ("0", "false", "no", "off"),
            partial_interval_ms=integer("PARTIAL_INTERVAL_MS", 400),
            tts=cast(TtsChoice, choice("TTS", "piper", ("piper", "espeak"))),
            tts_variation=get("TTS_VARIATION", "0").lower() in ("1", "true", "yes", "on"),
            responder=cast(
                ResponderChoice, choice("RESPONDER", "rules", ("rules", "openai-compatible", "llama"))
            ),
            responder_url=get("RESPONDER_URL", ""),
            responder_model=get("RESPONDER_MODEL", "local"),
            responder_key=get("RESPONDER_KEY", ""),
            llama_model=get("LLAMA_MODEL", ""),
            llama_sha256=get("LLAMA_SHA256", ""),
            cpu_threads=max(1, integer("CPU_THREADS", 2)),
            model_dir=Path(get("MODEL_DIR", str(weights.DEFAULT_MODEL_DIR))),
        )
        if options.responder == "openai-compatible" and not options.responder_url:
            raise SpeechConfigurationError(
                "REALTIME_LOCAL_RESPONDER=openai-compatible needs REALTIME_LOCAL_RESPONDER_URL"
            )
        if options.responder == "llama" and not (options.llama_model and options.llama_sha256):
            raise SpeechConfigurationError(
                "REALTIME_LOCAL_RESPONDER=llama needs REALTIME_LOCAL_LLAMA_MODEL and _LLAMA_SHA256"
            )
        return options


@dataclass
class SpeechStack:
    """The loaded stages, shared by every call of the engine (see each class for thread safety)."""

    options: SpeechOptions
    vad_model: SileroModel
    transcriber: WhisperTranscriber
    synthesizer: Synthesizer
    responder: Responder
    timings: dict[str, float] = field(default_factory=dict)

    def new_turn_detector(self, config: TurnDetectionConfig | None = None) -> ServerVadTurnDetector:
        """A call's turn detector (its own recurrent state; the ONNX model is shared): server VAD,
        or `SemanticVadTurnDetector` when `config.type` is `semantic_vad`."""
        if config is not None and config.type == "semantic_vad":
            return SemanticVadTurnDetector(self.vad_model, config)
        return ServerVadTurnDetector(self.vad_model, config)

    def new_streaming_transcription(
        self, detector: ServerVadTurnDetector, *, language: str | None = None
    ) -> StreamingTranscription:
        """A call's streaming transcription, reading utterances from that call's detector.

        `language` (the session's `audio.input.transcription.language`) overrides the stack's.
        """
        stream = StreamingTranscription(
            self.transcriber,
            detector,
            interval_s=self.options.partial_interval_ms / 1000,
            language=language or self.options.stt_language,
        )
        if isinstance(detector, SemanticVadTurnDetector):
            detector.attach_transcription(stream.transcribe_pause)  # its verdicts reuse our runs
        return stream


def load_speech_stack(options: SpeechOptions | None = None) -> SpeechStack:
    """Verify weights, load every model once and warm it up; logs and returns the timings.

    Raises `weights.ModelIntegrityError` on a tampered or wrong model file (never falls back then),
    `SpeechConfigurationError` on bad options. See docs/speech.md for measured times.
    """
    options = options or SpeechOptions()
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def timed(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 3)
        return now

    def load_stt() -> WhisperTranscriber:
        mark = time.perf_counter()
        transcriber = WhisperTranscriber(
            weights.whisper_model_dir(options.model_dir),
            cpu_threads=options.cpu_threads,
            language=options.stt_language,
            short_context=options.stt_short_context,
        )
        mark = timed("stt_load", mark)
        transcriber.warm_up()
        timed("stt_warm_up", mark)
        return transcriber

    def load_tts() -> Synthesizer:
        mark = time.perf_counter()
        synthesizer: PiperSynthesizer | EspeakSynthesizer
        if options.tts == "piper":
            try:
                synthesizer = PiperSynthesizer(
                    *weights.piper_voice_paths(), threads=options.cpu_threads, variation=options.tts_variation
                )
            except (ImportError, weights.ModelNotInstalledError) as error:
                # Missing packages degrade to espeak; wrong weights (ModelIntegrityError) never do.
                logger.warning("piper unavailable (%s); speaking with espeak-ng", error)
                synthesizer = EspeakSynthesizer()
        else:
            synthesizer = EspeakSynthesizer()
        mark = timed("tts_load", mark)
        synthesizer.warm_up()
        timed("tts_warm_up", mark)
        return synthesizer

    # Whisper and Piper load and warm up in parallel: both spend most of it in native code that
    # releases the GIL, so the start costs about the slower of the two instead of their sum.
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix="speech-load") as pool:
        stt_future = pool.submit(load_stt)
        tts_future = pool.submit(load_tts)
        mark = time.perf_counter()
        vad_model = SileroModel(weights.silero_vad_path())
        mark = timed("vad", mark)
        responder: Responder
        if options.responder == "openai-compatible":
            responder = OpenAICompatibleResponder(
                options.responder_url, model=options.responder_model, api_key=options.responder_key
            )
        elif options.responder == "llama":
            responder = LlamaCppResponder(
                Path(options.llama_model), sha256=options.llama_sha256, threads=options.cpu_threads
            )
        else:
            responder = RuleResponder()
        timed("responder", mark)
        transcriber = stt_future.result()
        synthesizer = tts_future.result()
    timings["total"] = round(time.perf_counter() - started, 3)
    logger.info("speech stack loaded in %.2f s: %s", timings["total"], timings)
    return SpeechStack(options, vad_model, transcriber, synthesizer, responder, timings)
