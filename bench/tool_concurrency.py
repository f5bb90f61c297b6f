"""Tool calls under concurrency: N calls (default 20) on the local engine each ask at the same
moment for a tool that sleeps 1 s in a thread; prints, per call, function call -> function_call_output
sent (ms) and how long an event sent while the tool runs takes to be stored (ms).

The scenario is the integration test `tests/tools/test_tool_concurrency.py` (real engine, real
PostgreSQL, the observer worker); this script runs it with its output shown, so the figures come
from the very code path the test checks.

Run: .venv/bin/python bench/tool_concurrency.py [--calls 20]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    options = parser.parse_args()
    env = {**os.environ, "TOOL_BENCH_CALLS": str(options.calls)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "--log-level=WARNING",
        "tests/tools/test_tool_concurrency.py",
    ]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


if __name__ == "__main__":
    raise SystemExit(main())
