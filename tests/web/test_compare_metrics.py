"""calls.metrics: the turn-latency rule and percentiles, on plain values."""

from __future__ import annotations

import datetime as dt

import pytest

from calls.metrics import percentile, turn_latencies_ms

T0 = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def at(ms: int) -> dt.datetime:
    return T0 + dt.timedelta(milliseconds=ms)


def test_latency_runs_from_speech_stopped_to_the_first_transcript_delta() -> None:
    events = [
        ("input_audio_buffer.speech_stopped", at(1000)),
        ("response.created", at(1100)),
        ("response.output_audio_transcript.delta", at(1640)),
        ("response.output_audio_transcript.delta", at(1700)),
    ]
    assert turn_latencies_ms(events) == [640.0]


def test_audio_started_counts_when_it_comes_before_the_transcript() -> None:
    events = [
        ("input_audio_buffer.speech_stopped", at(0)),
        ("output_audio_buffer.started", at(420)),
        ("response.output_audio_transcript.delta", at(500)),
    ]
    assert turn_latencies_ms(events) == [420.0]


def test_the_greeting_and_unanswered_turns_are_not_counted() -> None:
    events = [
        ("response.output_audio_transcript.delta", at(10)),  # greeting: nobody spoke yet
        ("input_audio_buffer.speech_stopped", at(1000)),
        ("input_audio_buffer.speech_stopped", at(3000)),  # the user went on: the clock restarts
        ("response.output_audio_transcript.delta", at(3900)),
        ("input_audio_buffer.speech_stopped", at(8000)),  # never answered (call ended)
    ]
    assert turn_latencies_ms(events) == [900.0]


def test_each_turn_is_measured_separately() -> None:
    events = [
        ("input_audio_buffer.speech_stopped", at(0)),
        ("response.output_audio_transcript.delta", at(700)),
        ("input_audio_buffer.speech_stopped", at(5000)),
        ("output_audio_buffer.started", at(5300)),
    ]
    assert turn_latencies_ms(events) == [700.0, 300.0]


def test_percentile_interpolates_between_ranks() -> None:
    values = [100.0, 200.0, 300.0, 400.0]
    assert percentile(values, 0.5) == 250.0
    assert percentile(values, 0.0) == 100.0
    assert percentile(values, 1.0) == 400.0
    assert percentile(values, 0.95) == pytest.approx(385.0)
    assert percentile([42.0], 0.95) == 42.0
    assert percentile([], 0.5) is None


def test_percentile_rejects_a_fraction_outside_zero_to_one() -> None:
    with pytest.raises(ValueError, match="fraction"):
        percentile([1.0], 95)
