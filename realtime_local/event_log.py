"""Opt-in log of every server event the engine emits: ``REALTIME_LOCAL_EVENT_LOG=<path>``.

One JSON object per line, appended as events are emitted (same order as the fan-out):
- ``{"kind": "event", "t", "call", "event_id", "type", "sinks": [...]}``: the ids of the sideband
  sinks attached when the event was emitted (empty: no sideband saw it, and the API never replays it);
- ``{"kind": "attach" | "detach", "t", "call", "sink", "label"}``: a sideband sink came or went
  (`label` is the socket's User-Agent, e.g. ``voiceagent-observer/<worker>``).

Why: tests and bench/takeover.py compare what the engine sent with what the observers stored, to
prove that no event reaching an attached observer is lost across a worker's death and takeover. Off
by default (a line per event costs a write); never holds event payloads (audio, text).
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import IO, Any

ENV_VAR = "REALTIME_LOCAL_EVENT_LOG"

_lock = threading.Lock()
_file: IO[str] | None = None
_path: str | None = None


def enabled() -> bool:
    return bool(os.environ.get(ENV_VAR))


def write(record: dict[str, Any]) -> None:
    """Append one record (no-op unless the environment variable names a file)."""
    global _file, _path
    path = os.environ.get(ENV_VAR)
    if not path:
        return
    line = json.dumps({"t": time.time(), **record}, separators=(",", ":")) + "\n"
    with _lock:
        if _file is None or _path != path:
            _file = open(path, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 (kept open)
            _path = path
        _file.write(line)
