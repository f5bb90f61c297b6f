"""What logging and metrics cost per use: one log line through the production formatter (JSON and
console, with the redaction), one metric hook, one exposition of this process's series.

    .venv/bin/python -m bench.observability [--lines 20000]

Prints `name: value unit` lines; nothing is asserted. The exposition here leaves out the live-calls
count (a database query, whose cost is the database's).
"""

from __future__ import annotations

import argparse
import functools
import io
import logging
import os
import time

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceagent.test_settings")
os.environ.setdefault("OPENAI_API_KEY", "sk-proj-bench0123456789abcdefghijklmnop")

import django

django.setup()

from voiceagent.monitoring.logs import bind_call_id, formatter  # noqa: E402
from voiceagent.monitoring.metrics import (  # noqa: E402
    exposition,
    record_call_setup,
    record_stored_events,
)


def per_call_us(action: object, count: int) -> float:
    assert callable(action)
    started = time.perf_counter()
    for _ in range(count):
        action()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lines", type=int, default=20_000)
    lines = parser.parse_args().lines
    bind_call_id("5f0c2e1e-7c1a-4a0e-9a61-0d5cbb2a4f10")
    for log_format in ("json", "console"):
        handler = logging.StreamHandler(io.StringIO())
        handler.setFormatter(formatter(log_format))
        logger = logging.getLogger(f"bench.{log_format}")
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
        plain = per_call_us(functools.partial(logger.info, "call %s: observing call %s", "x", "rtc_1"), lines)
        secret = per_call_us(
            functools.partial(logger.info, "upstream: %s", "Authorization: Bearer sk-abcdefghijklmnopqrstu"),
            lines,
        )
        print(f"log_line_{log_format}: {plain:.1f} us")
        print(f"log_line_{log_format}_with_credential: {secret:.1f} us")

    hook = per_call_us(functools.partial(record_call_setup, "proxy", "ok", started=0.0), lines)
    print(f"metric_call_setup_hook: {hook:.2f} us")

    class Row:
        from django.utils import timezone

        received_at = timezone.now()

    batch = [Row()] * 10
    print(f"metric_stored_events_hook_10: {per_call_us(lambda: record_stored_events(batch), lines):.2f} us")
    body = exposition(live_calls=False)
    print(f"exposition: {per_call_us(lambda: exposition(live_calls=False), 200) / 1000:.2f} ms")
    print(f"exposition_size: {len(body) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
