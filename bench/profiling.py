"""py-spy around a benchmark's server process, and a text summary of where its time went.

The benchmarks profile a process they started (the web server, the observer worker, the engine)
while the load runs: `with py_spy(pid, out_dir, "server"):` writes `server.speedscope.json` (open
it in https://www.speedscope.app) and `server.txt`, the frames with the most inclusive samples
(self time in a second list), which is what the bench README quotes.
"""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def py_spy(pid: int, out_dir: Path | None, name: str, *, rate: int = 100) -> Iterator[None]:
    """Record `pid` with py-spy while the block runs (nothing when `out_dir` is None)."""
    if out_dir is None:
        yield
        return
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = out_dir / f"{name}.speedscope.json"
    spy = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "py-spy"),
            "record",
            "--pid",
            str(pid),
            "--format",
            "speedscope",
            "--rate",
            str(rate),
            "--nonblocking",
            "--output",
            str(raw),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        try:
            spy.wait(timeout=60)
        except subprocess.TimeoutExpired:
            spy.kill()
        summarize(raw, out_dir / f"{name}.txt")


def summarize(source: Path, target: Path, top: int = 45) -> None:
    """The frames with the most inclusive and the most self samples, as percentages, to `target`."""
    if not source.exists():
        return
    data: dict[str, Any] = json.loads(source.read_text())
    frames = data["shared"]["frames"]
    inclusive: dict[int, int] = {}
    own: dict[int, int] = {}
    total = 0
    for profile in data["profiles"]:
        for sample, weight in zip(profile["samples"], profile["weights"], strict=True):
            total += weight
            for frame in set(sample):
                inclusive[frame] = inclusive.get(frame, 0) + weight
            if sample:
                own[sample[-1]] = own.get(sample[-1], 0) + weight

    def line(frame: int, count: int) -> str:
        info = frames[frame]
        where = f"{Path(info.get('file') or '?').name}:{info.get('line', '?')}"
        return f"{100 * count / max(total, 1):5.1f}%  {info['name']}  ({where})"

    lines = [f"{total} samples (idle threads included); inclusive:"]
    lines += [line(f, c) for f, c in sorted(inclusive.items(), key=lambda item: -item[1])[:top]]
    lines.append("self:")
    lines += [line(f, c) for f, c in sorted(own.items(), key=lambda item: -item[1])[:top]]
    target.write_text("\n".join(lines) + "\n")
