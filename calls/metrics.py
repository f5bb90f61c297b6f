"""Pure figures computed from a call's events: turn latency, median and percentiles.

No database access here: selectors fetch the rows, these functions only count, so the rules are
unit-tested on plain values and shared by the history page, the comparison page and benchmarks.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence

#: The user stopped speaking: a turn's clock starts.
SPEECH_STOPPED = "input_audio_buffer.speech_stopped"
#: The first sign of the agent's answer: whichever of these arrives first stops the clock.
ANSWER_STARTED = frozenset({"response.output_audio_transcript.delta", "output_audio_buffer.started"})
#: Every event type the latency rule looks at (for filtering the query).
LATENCY_EVENT_TYPES = frozenset({SPEECH_STOPPED, *ANSWER_STARTED})


def turn_latencies_ms(events: Iterable[tuple[str, dt.datetime]]) -> list[float]:
    """Round-trip latency of each answered turn of one call, in milliseconds.

    `events` are (type, received_at) in arrival order. A turn's latency is from a speech_stopped to
    the first answer start after it; a second speech_stopped before any answer (the user went on
    speaking) restarts the clock, and answer events with no open turn (the greeting, later deltas of
    the same answer) are ignored. The same rule as static/console/latency.js.
    """
    latencies: list[float] = []
    stopped_at: dt.datetime | None = None
    for event_type, received_at in events:
        if event_type == SPEECH_STOPPED:
            stopped_at = received_at
        elif stopped_at is not None and event_type in ANSWER_STARTED:
            latencies.append(max(0.0, (received_at - stopped_at).total_seconds() * 1000.0))
            stopped_at = None
    return latencies


def percentile(values: Sequence[float], fraction: float) -> float | None:
    """The `fraction` (0 to 1) percentile by linear interpolation between closest ranks; None if empty.

    percentile(v, 0.5) is the median; with one value every percentile is that value.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be within [0, 1], not {fraction}")
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 0.5)
