"""Vision path costs per frame: the engine's checks and facts, the observer's thumbnail.

Frames are 1024x576 JPEGs (quality 70, what the console sends for a 16:9 camera or screen) of a
photo-like picture (smooth gradients with noise, so they compress like real frames, not like a
solid colour). Prints `name: value unit` lines; nothing is asserted.

    .venv/bin/python bench/vision.py [--frames 50]
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import statistics
import time

import numpy as np
from PIL import Image


def frame(seed: int, size: tuple[int, int] = (1024, 576), quality: int = 70) -> str:
    rng = np.random.default_rng(seed)
    width, height = size
    x = np.linspace(0, 1, width)[None, :, None]
    y = np.linspace(0, 1, height)[:, None, None]
    ones = np.ones((height, width, 1))
    base = np.concatenate([x * 200 + 30 * ones, y * 180 + 40 * ones, (1 - x) * 150 + 60 * ones], axis=2)
    pixels = np.clip(base + rng.normal(0, 12, (height, width, 3)), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=50)
    args = parser.parse_args()

    from calls.observer.images import strip_images
    from realtime_local.vision import decode_data_url, image_facts

    urls = [frame(seed) for seed in range(args.frames)]
    facts_ms, thumb_ms, thumb_bytes = [], [], []
    for url in urls:
        started = time.perf_counter()
        media_type, data = decode_data_url(url)
        image_facts(data, media_type=media_type)
        facts_ms.append((time.perf_counter() - started) * 1000)
        event = {
            "type": "conversation.item.added",
            "item": {
                "id": "i",
                "type": "message",
                "role": "user",
                "content": [{"type": "input_image", "image_url": url}],
            },
        }
        started = time.perf_counter()
        stored = strip_images(event)
        thumb_ms.append((time.perf_counter() - started) * 1000)
        thumb_bytes.append(len(stored["item"]["content"][0]["image_url"]))
    sizes = [len(url) for url in urls]
    print(f"cpus: {os.cpu_count()} load1: {os.getloadavg()[0]:.2f}")
    print(f"vision_frame_data_url_median: {statistics.median(sizes) / 1024:.1f} KiB")
    print(f"vision_engine_facts_median: {statistics.median(facts_ms):.2f} ms")
    print(f"vision_engine_facts_p95: {sorted(facts_ms)[int(len(facts_ms) * 0.95) - 1]:.2f} ms")
    print(f"vision_observer_thumbnail_median: {statistics.median(thumb_ms):.2f} ms")
    print(f"vision_observer_thumbnail_p95: {sorted(thumb_ms)[int(len(thumb_ms) * 0.95) - 1]:.2f} ms")
    print(f"vision_stored_thumbnail_median: {statistics.median(thumb_bytes) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
