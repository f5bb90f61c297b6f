"""Semantic turn detection (OpenAI's `semantic_vad`): end the turn when what was said is complete.

OpenAI's `semantic_vad` ends a turn sooner when the user's words form a complete thought and waits
longer when they trail off ("so I was thinking that…"); `eagerness` (low, medium, high; auto =
medium) trades interruptions for latency. OpenAI runs a model over the audio; here the judge is
the transcript of the pause, which the call's `StreamingTranscription` already computes at the first
silent Silero window (for `finish()` to reuse), so the judgement costs no extra Whisper pass.

`SemanticVadTurnDetector` is `ServerVadTurnDetector` (same Silero windows, hysteresis, prefix
padding, snapshots, `speech_stopped.audio_ms` = end of speech) with the fixed `silence_duration_ms`
replaced by a wait chosen per pause from the transcript up to it:

| verdict | rule | high | medium / auto | low |
|---|---|---|---|---|
| complete | ends in `.`, `?` or `!`, last word not a dangling one | 160 ms | 250 ms | 400 ms |
| uncertain | no sentence punctuation, or no transcript to judge | 300 ms | 500 ms | 800 ms |
| incomplete | ends in `,` `…` `-`, or on a conjunction, filler, article, … | 500 ms | 1000 ms | 2000 ms |

Why these values: a *complete* wait must outlast the gaps inside a sentence that Silero hears as
silence (stop consonants, breaths: 100-150 ms) so high stays above 150 ms; medium at 250 ms halves
server VAD's default 500 ms; low at 400 ms keeps a margin for speakers who append a clause after a
full stop. *Incomplete* waits are a quarter of OpenAI's documented maximum timeouts (8 s, 4 s, 2 s
for low, medium, high): long enough for a mid-sentence pause to search for a word (0.5-1.5 s),
short enough that a misjudged transcript costs one slow turn, not a stalled call. *Uncertain*
(Whisper wrote no punctuation, or the pause was not transcribed) falls back to server VAD's
defaults: without a judgement the detector is plain VAD.

Getting the transcript: when the silence reaches the *complete* wait and the pause has no verdict
yet, `feed` asks the attached transcription for the pause's transcript and blocks until it has it
(the streaming worker usually has it in flight since the first silent window; the call returns its
result rather than transcribing twice). The call happens outside the detector's lock, so the
streaming worker and `reset()` are never blocked behind Whisper. Blocking `feed` is what makes
the verdict independent of how fast audio arrives (paced WebRTC frames or a whole buffer appended
at once); while it blocks, the pipeline's input queue holds the next frames.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Literal

import numpy as np

from .base import INPUT_SAMPLE_RATE, Pcm16, TurnDetectionConfig, TurnEvent
from .vad import WINDOW, ServerVadTurnDetector, SileroModel, UtteranceSnapshot

Eagerness = Literal["low", "medium", "high", "auto"]
Verdict = Literal["complete", "uncertain", "incomplete"]

#: Silence (ms) needed to end the turn, per eagerness and verdict (see the module docstring).
WAIT_MS: dict[str, dict[Verdict, int]] = {
    "high": {"complete": 160, "uncertain": 300, "incomplete": 500},
    "medium": {"complete": 250, "uncertain": 500, "incomplete": 1000},
    "low": {"complete": 400, "uncertain": 800, "incomplete": 2000},
}

#: Words no turn ends on, even before a question mark: conjunctions, fillers, articles and
#: possessives. Whisper often writes "And I was thinking that." with a full stop when the speaker
#: merely paused, so the last word is checked before the punctuation.
CONNECTIVES = frozenset(
    """
    and but or nor so because although though unless whereas than
    um uh er erm ah hmm mm
    the a an my your our their
    """.split()  # noqa: SIM905 - a word list reads better as prose
)
#: Words a statement does not end on, though a question may ("Where are you from?"):
#: relative words, prepositions, hedges, contracted subjects. Particles that end phrasal verbs
#: ("turn it on", "log me in") and pronouns ("so do I") are deliberately absent.
STATEMENT_CONNECTIVES = frozenset(
    """
    that which whose where when whether if since while then like well
    to of with from into onto about at for through between during without within against
    toward towards upon via as
    also just really actually basically very some any every each
    i'm we're you're they're i've we've i'd let's gonna wanna
    """.split()  # noqa: SIM905 - a word list reads better as prose
)

_LAST_WORD = re.compile(r"([A-Za-z']+)\W*$")


def judge(text: str) -> Verdict:
    """Whether a transcript at a pause reads as a finished turn.

    >>> judge("What is the weather in Paris?")
    'complete'
    >>> judge("So I was thinking that.")
    'incomplete'
    >>> judge("I need a table for two and")
    'incomplete'
    >>> judge("Hello there")
    'uncertain'
    """
    stripped = text.strip()
    if not stripped:
        return "uncertain"
    if stripped.endswith(("...", "\u2026", ",", "-", "\u2014", ":", ";")):
        return "incomplete"
    match = _LAST_WORD.search(stripped)
    last = match.group(1).lower() if match else ""
    if last in CONNECTIVES or (last in STATEMENT_CONNECTIVES and not stripped.endswith("?")):
        return "incomplete"
    if stripped[-1] in ".?!":
        return "complete"
    return "uncertain"


PauseTranscriber = Callable[[UtteranceSnapshot], str]


class SemanticVadTurnDetector(ServerVadTurnDetector):
    """`semantic_vad`: Silero VAD whose end-of-turn silence depends on the pause's transcript.

    Contract (as `ServerVadTurnDetector`): `speech_stopped.audio_ms` is the end of speech (the first
    silent window), emitted once the verdict's wait has elapsed; speech resuming before that
    withdraws the pause and the utterance goes on. Without an attached transcription every pause
    is *uncertain* (server VAD timings for the eagerness).

    `transcript_timeout_s` bounds (in wall time) how long `feed` waits for a pause's transcript; a
    pause whose transcript did not come in time is judged *uncertain*.
    """

    def __init__(
        self,
        model: SileroModel,
        config: TurnDetectionConfig | None = None,
        *,
        eagerness: Eagerness | None = None,
        max_utterance_s: float = 30.0,
        tail_ms: int = 100,
        transcript_timeout_s: float = 3.0,
    ) -> None:
        base = config or TurnDetectionConfig(type="semantic_vad")
        level = eagerness or base.eagerness
        self.eagerness: Eagerness = level
        self.waits: dict[Verdict, int] = WAIT_MS["medium" if level == "auto" else level]
        # The base class stops by itself after the longest wait: an incomplete pause's timeout.
        super().__init__(
            model,
            TurnDetectionConfig(
                threshold=base.threshold,
                prefix_padding_ms=base.prefix_padding_ms,
                silence_duration_ms=self.waits["incomplete"],
                type="semantic_vad",
                eagerness=level,
            ),
            max_utterance_s=max_utterance_s,
            tail_ms=tail_ms,
        )
        self._wait_samples = {verdict: ms * INPUT_SAMPLE_RATE // 1000 for verdict, ms in self.waits.items()}
        self._transcribe_pause: PauseTranscriber | None = None
        self.transcript_timeout_s = transcript_timeout_s
        self._verdicts: dict[tuple[int, int], tuple[Verdict, str]] = {}
        self._wanted: UtteranceSnapshot | None = None
        self._generation = 0  # bumped by reset(): a transcript fetched before it is stale
        self.last_verdict: tuple[Verdict, str] | None = None  # of the last stopped utterance

    def attach_transcription(self, transcribe_pause: PauseTranscriber) -> None:
        """Where pause transcripts come from (the call's `StreamingTranscription.transcribe_pause`)."""
        self._transcribe_pause = transcribe_pause

    # -- TurnDetector ---------------------------------------------------------------------------
    def feed(self, pcm: Pcm16) -> list[TurnEvent]:
        events: list[TurnEvent] = []
        with self.changed:
            data = np.concatenate([self._pending, np.asarray(pcm, dtype=np.int16).reshape(-1)])
            usable = len(data) - len(data) % WINDOW
            self._pending = data[usable:].copy()
            generation = self._generation
        for index in range(0, usable, WINDOW):
            with self.changed:
                if self._generation != generation:
                    break  # reset() meanwhile: the rest of this chunk belongs to the cleared input
                event = self._window(data[index : index + WINDOW])
                wanted, self._wanted = self._wanted, None
            if wanted is not None:
                verdict = self._fetch_verdict(wanted)
                with self.changed:
                    if self._generation != generation:
                        break
                    if wanted.end_sample is not None:
                        self._verdicts[(wanted.utterance_id, wanted.end_sample)] = verdict
                    event = self._early_stop()
            if event is not None:
                events.append(event)
        return events

    def reset(self) -> None:
        with self.changed:
            self._generation += 1
            self._verdicts.clear()
            self._wanted = None
            super().reset()

    # -- internals ------------------------------------------------------------------------------
    def _fetch_verdict(self, snap: UtteranceSnapshot) -> tuple[Verdict, str]:
        """Transcribe the pause (outside the lock), bounded by `transcript_timeout_s`."""
        source = self._transcribe_pause
        if source is None:
            return "uncertain", ""
        box: list[str] = []

        def run() -> None:
            box.append(source(snap))

        worker = threading.Thread(target=run, name="semantic-vad-pause", daemon=True)
        worker.start()
        worker.join(self.transcript_timeout_s)
        if not box:
            return "uncertain", ""
        return judge(box[0]), box[0]

    def _window(self, window: Pcm16) -> TurnEvent | None:
        event = super()._window(window)
        if event is not None:
            if event.kind == "speech_stopped":
                self._remember_stop()
            return event
        return self._early_stop()

    def _early_stop(self) -> TurnEvent | None:
        """Stop at the current pause if its verdict's wait has elapsed (called under the lock)."""
        if not self._speaking or self._silence_from is None:
            return None
        elapsed = self._processed - self._silence_from
        if elapsed < self._wait_samples["complete"]:
            return None
        key = (self._utterance_id, self._silence_from - self._start_offset)
        known = self._verdicts.get(key)
        if known is None and self._transcribe_pause is not None:
            self._wanted = self.snapshot()
            return None
        if known is None:
            known = self._verdicts[key] = ("uncertain", "")
        if elapsed >= self._wait_samples[known[0]]:
            event = self._stop(self._silence_from)
            self._remember_stop()
            return event
        return None

    def _remember_stop(self) -> None:
        stopped = self._last_stopped
        if stopped is not None and stopped.end_sample is not None:
            self.last_verdict = self._verdicts.get((stopped.utterance_id, stopped.end_sample))
        self._verdicts.clear()  # the next utterance has new pauses
