"""The console's call modules in a real Chromium, without an engine: transcript assembly (partials,
interruptions, latency), the event log filter, and how a refused call is shown.

Runs `manage.py serve --no-engine` (the DemoServer harness); the engine port points at a closed
port, so `POST /rtc` fails upstream exactly as it does when the engine is down.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from scripts.screenshots import DemoServer, chromium, demo_server, free_port, new_page, sign_in

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


@pytest.fixture(scope="module")
def server() -> Iterator[DemoServer]:
    with demo_server(extra_env={"REALTIME_LOCAL_PORT": str(free_port())}) as running:
        yield running


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    wav = tmp_path_factory.mktemp("mic") / "silence.wav"
    subprocess.run(
        ["sox", "-n", "-r", "48000", "-b", "16", "-c", "1", str(wav), "trim", "0", "2"], check=True
    )
    with chromium(fake_microphone=wav) as launched:
        yield launched


@pytest.fixture
def console(server: DemoServer, browser: Browser) -> Iterator[Page]:
    page = new_page(browser)
    sign_in(page, server)
    yield page
    page.context.close()


def run_model(page: Page, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Feed server events to a TranscriptModel (with latency from arrival times) in the page."""
    turns: list[dict[str, Any]] = page.evaluate(
        """async (events) => {
            const { TranscriptModel } = await import('/static/console/transcript.js');
            const { LatencyTracker } = await import('/static/console/latency.js');
            const model = new TranscriptModel();
            const latency = new LatencyTracker();
            for (const [at, event] of events) {
                model.apply(event);
                const measured = latency.observe(event, at);
                if (measured) model.attachLatency(measured);
            }
            return model.turns;
        }""",
        [[index * 100, event] for index, event in enumerate(events)],
    )
    return turns


def test_user_partials_grow_and_the_final_transcript_replaces_them(console: Page) -> None:
    turns = run_model(
        console,
        [
            # The engine may send transcription deltas before the user item's conversation.item.added.
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_u1",
                "delta": "What ti",
            },
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_u1",
                "delta": "me is",
            },
            {"type": "conversation.item.added", "item": {"id": "item_u1", "type": "message", "role": "user"}},
        ],
    )
    assert [(t["role"], t["text"], t["final"]) for t in turns] == [("user", "What time is", False)]
    turns = run_model(
        console,
        [
            {"type": "input_audio_buffer.committed", "item_id": "item_u1"},
            {
                "type": "conversation.item.input_audio_transcription.delta",
                "item_id": "item_u1",
                "delta": "What ti",
            },
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": "item_u1",
                "transcript": "What time is it?",
            },
        ],
    )
    assert [(t["text"], t["final"]) for t in turns] == [("What time is it?", True)]


def test_a_reply_gets_its_latency_and_a_barge_in_marks_it_interrupted(console: Page) -> None:
    reply = {"response_id": "resp_1", "item_id": "item_a1"}
    turns = run_model(
        console,
        [
            {"type": "input_audio_buffer.speech_stopped", "item_id": "item_u1"},  # t = 0
            {"type": "input_audio_buffer.committed", "item_id": "item_u1"},
            {"type": "response.created", "response": {"id": "resp_1"}},
            {"type": "output_audio_buffer.started", "response_id": "resp_1"},  # t = 300: before any text
            {"type": "response.output_audio_transcript.delta", **reply, "delta": "The library opens"},
            {"type": "input_audio_buffer.speech_started", "item_id": "item_u2"},
            # Barge-in order of the engine: cleared, response.done(cancelled), item truncated.
            {"type": "output_audio_buffer.cleared", "response_id": "resp_1"},
            {
                "type": "response.done",
                "response": {"id": "resp_1", "status": "cancelled", "output": [{"id": "item_a1"}]},
            },
            {"type": "conversation.item.truncated", "item_id": "item_a1", "audio_end_ms": 800},
        ],
    )
    assistant = next(t for t in turns if t["role"] == "assistant")
    assert assistant["latencyMs"] == 300
    assert assistant["interrupted"] is True and assistant["final"] is True
    assert assistant["text"] == "The library opens"
    assert [t["role"] for t in turns] == ["user", "assistant"]


def test_the_event_log_filters_by_type_and_counts(console: Page) -> None:
    result = console.evaluate(
        """async () => {
            const { EventLog } = await import('/static/console/event-log.js');
            const list = document.createElement('div');
            const filter = document.createElement('input');
            const count = document.createElement('span');
            const log = new EventLog({ list, filter, count });
            const types = ['session.created', 'response.output_audio_transcript.delta',
                           'response.output_audio_transcript.delta', 'response.done'];
            types.forEach((type, i) => log.add({ sequence: i + 1, event: { type } }));
            const all = count.textContent;
            filter.value = 'TRANSCRIPT';
            filter.dispatchEvent(new Event('input'));
            const visible = Array.from(list.children).filter((row) => !row.hidden).length;
            return { all, filtered: count.textContent, visible };
        }"""
    )
    assert result == {"all": "4 events", "filtered": "2 of 4", "visible": 2}


def test_a_call_the_server_cannot_place_is_reported_and_can_be_retried(console: Page) -> None:
    console.click("#launch")
    error = console.locator("#activity .activity-item.error")
    expect(error).to_contain_text("POST /rtc failed")
    expect(console.locator("#status-text")).to_have_text("Error")
    expect(console.locator("#launch")).to_be_enabled()
    expect(console.locator("#end")).to_be_disabled()
    assert console.evaluate("window.voiceagentConsole.peerState") in {"closed", "new"}
    assert console.evaluate("window.voiceagentConsole.callId") is None
