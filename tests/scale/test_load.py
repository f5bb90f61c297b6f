"""The load acceptance: 200 concurrent web call set-ups (and 20 SIP webhooks) on 2 web + 2 worker
processes end with 0 errors, every call observed, accepted and hung up. Runs bench/load.py (which
prints the latency figures); only counts are asserted here, never times."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.scale.cluster import REPO

pytestmark = [pytest.mark.timeout(600)]


def test_200_concurrent_set_ups_on_two_web_and_two_workers_have_no_errors() -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load.py"), "--calls", "200", "--webhooks", "20"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=560,
    )
    lines = dict(
        line.split(": ", 1) for line in done.stdout.splitlines() if ": " in line and not line.startswith("#")
    )
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    assert lines["web set-up requests"] == "200 count"
    assert lines["web set-up errors"] == "0 count"
    assert lines["web set-up success rate"] == "100.0 %"
    assert lines["web calls observed"] == "200/200 count"
    assert lines["sip webhook errors"] == "0 count"
    assert lines["sip calls accepted"] == "20/20 count"
    assert lines["calls hung up"] == "220/220 count"
    assert lines["processes crashed"] == "0 count"
