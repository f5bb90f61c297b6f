"""Call recordings: how long making a recording playable takes (concatenate chunks, PyAV remux).

    .venv/bin/python bench/recording_remux.py [--minutes 1 10 30]

For each length, a streamed WebM/Opus tone (what MediaRecorder uploads: no duration, no cues) at
~48 kbit/s is remuxed into a seekable WebM by `calls.services.recordings.remux_seekable`, from a
temporary file to a temporary file, as `ensure_playable` does. Prints `name: value unit` lines.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import tempfile
import time
from typing import Any


def _setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceagent.test_settings")
    import django

    django.setup()


class _Pipe(io.RawIOBase):
    def __init__(self, target: Any) -> None:
        self.target = target

    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def write(self, b: Any) -> int:
        self.target.write(bytes(b))
        return len(b)


def streamed_webm(seconds: float, target: Any) -> None:
    """Write `seconds` of a 440 Hz Opus tone to `target` as a streamed (unseekable) WebM."""
    import av
    import numpy as np

    with av.open(_Pipe(target), mode="w", format="webm") as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        stream.bit_rate = 48000
        total, at = int(seconds * 48000), 0
        block = 48000  # one second per encode call; the encoder frames it into 20 ms packets
        tone = (0.3 * np.sin(2 * math.pi * 440 * np.arange(block) / 48000)).astype(np.float32)[None, :]
        while at < total:
            frame = av.AudioFrame.from_ndarray(tone, format="flt", layout="mono")
            frame.sample_rate = 48000
            frame.pts = at
            for packet in stream.encode(frame):
                out.mux(packet)
            at += block
        for packet in stream.encode(None):
            out.mux(packet)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, nargs="+", default=[1, 10, 30])
    args = parser.parse_args()
    _setup_django()
    from calls.services.recordings import remux_seekable

    print(f"cpu_count: {os.cpu_count()} cores")
    print(f"load_average_1m: {os.getloadavg()[0]:.2f}")
    for minutes in args.minutes:
        with tempfile.TemporaryFile() as raw, tempfile.TemporaryFile() as seekable:
            streamed_webm(minutes * 60, raw)
            size = raw.tell()
            raw.seek(0)
            started = time.perf_counter()
            duration = remux_seekable(raw, seekable)
            elapsed = time.perf_counter() - started
        label = f"{minutes:g}min"
        print(f"recording_bytes_{label}: {size} bytes")
        print(f"remux_duration_{label}: {duration:.2f} s")
        print(f"remux_time_{label}: {elapsed * 1000:.0f} ms")


if __name__ == "__main__":
    main()
