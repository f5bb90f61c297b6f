"""Image payloads in stored events: the base64 frame is replaced by a small thumbnail.

A camera or a shared screen sends a frame every second or so as an `input_image` part
(`{"type": "input_image", "image_url": "data:image/jpeg;base64,…"}`), and the API echoes it in
`conversation.item.added`/`done`/`retrieved` (and whatever else carries the item). Stored as is, one
call would put tens of megabytes into the events table and into every live console replay. So before
an event is buffered, every such part's data URL is swapped for a JPEG thumbnail of at most
`THUMBNAIL_SIDE` px and `MAX_THUMBNAIL_BYTES` bytes, and the part says what the original was:

    {"type": "input_image", "image_url": "data:image/jpeg;base64,<thumbnail>",
     "voiceagent_image": {"thumbnail": true, "width": 1024, "height": 576, "bytes": 81234,
                          "media_type": "image/jpeg"}}

The transcript pages and the live console show that thumbnail where the frame was sent. An image
that cannot be decoded keeps no pixels at all (`image_url` null, `voiceagent_image.error`). The
function never mutates its argument (the observer's tool runner and transcript still read the
original event) and returns the very same object when there is nothing to replace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections import OrderedDict
from typing import Any, Final

#: Longest side of a stored thumbnail.
THUMBNAIL_SIDE: Final = 160
#: Largest stored thumbnail (bytes of JPEG); qualities are tried downwards until it fits.
MAX_THUMBNAIL_BYTES: Final = 20_000
#: Marker key added to a part whose image was replaced.
IMAGE_KEY: Final = "voiceagent_image"
#: Originals larger than this are not decoded (the engine and the API refuse them anyway).
MAX_ORIGINAL_BYTES: Final = 16 * 1024 * 1024
MAX_ORIGINAL_PIXELS: Final = 40_000_000

_QUALITIES: Final = (75, 60, 45, 30, 20)
_DATA_URL = re.compile(r"^data:(image/[a-z0-9.+-]+);base64,", re.IGNORECASE)

# The same frame arrives two or three times (item.added, item.done, a retrieve): thumbnail it once.
_CACHE_SIZE: Final = 16
_cache: OrderedDict[str, dict[str, Any]] = OrderedDict()


def strip_images(payload: dict[str, Any]) -> dict[str, Any]:
    """`payload` with every `input_image` data URL replaced by a thumbnail (see the module doc)."""
    replaced = _walk(payload)
    return replaced if isinstance(replaced, dict) else payload


def _walk(value: Any) -> Any:
    """The value with images replaced; the same object when nothing under it changed."""
    if isinstance(value, dict):
        if value.get("type") == "input_image" and isinstance(value.get("image_url"), str):
            if IMAGE_KEY in value:  # already ours (an event we stored and replay)
                return value
            return {**value, **_replacement(value["image_url"])}
        changed: dict[str, Any] | None = None
        for key, item in value.items():
            new = _walk(item)
            if new is not item:
                changed = changed if changed is not None else dict(value)
                changed[key] = new
        return changed if changed is not None else value
    if isinstance(value, list):
        items = [_walk(item) for item in value]
        return items if any(new is not old for new, old in zip(items, value, strict=True)) else value
    return value


def _replacement(url: str) -> dict[str, Any]:
    """The `image_url` and `voiceagent_image` fields that stand for the image at `url`."""
    key = hashlib.sha256(url.encode("utf-8", "surrogatepass")).hexdigest()
    cached = _cache.get(key)
    if cached is not None:
        _cache.move_to_end(key)
        return cached
    result = _thumbnail_fields(url)
    _cache[key] = result
    while len(_cache) > _CACHE_SIZE:
        _cache.popitem(last=False)
    return result


def _thumbnail_fields(url: str) -> dict[str, Any]:
    found = _DATA_URL.match(url)
    if found is None:
        # A remote URL (the API accepts data URLs only) keeps no pixels either way; keep the text.
        if url.startswith(("http://", "https://")) and len(url) <= 2048:
            return {IMAGE_KEY: {"thumbnail": False, "error": "not a data URL"}}
        return {"image_url": None, IMAGE_KEY: {"thumbnail": False, "error": "not a data URL"}}
    media_type = found.group(1).lower()
    encoded = url[found.end() :]
    if len(encoded) > MAX_ORIGINAL_BYTES * 4 // 3 + 4:
        return _unreadable(media_type, "too large", approx_bytes=len(encoded) * 3 // 4)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return _unreadable(media_type, "not base64", approx_bytes=len(encoded) * 3 // 4)
    try:
        thumbnail, width, height = make_thumbnail(data)
    except ValueError as exc:
        return _unreadable(media_type, str(exc), approx_bytes=len(data))
    return {
        "image_url": "data:image/jpeg;base64," + base64.b64encode(thumbnail).decode("ascii"),
        IMAGE_KEY: {
            "thumbnail": True,
            "width": width,
            "height": height,
            "bytes": len(data),
            "media_type": media_type,
        },
    }


def _unreadable(media_type: str, why: str, *, approx_bytes: int) -> dict[str, Any]:
    return {
        "image_url": None,
        IMAGE_KEY: {"thumbnail": False, "bytes": approx_bytes, "media_type": media_type, "error": why},
    }


def make_thumbnail(data: bytes, *, side: int = THUMBNAIL_SIDE) -> tuple[bytes, int, int]:
    """(JPEG thumbnail bytes, original width, original height); `ValueError` if undecodable.

    The thumbnail's longest side is at most `side` px and it is at most `MAX_THUMBNAIL_BYTES` long.
    JPEG originals are decoded at a reduced scale (`draft`), which makes this a millisecond or two.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > MAX_ORIGINAL_PIXELS:
                raise ValueError("too many pixels")
            image.draft("RGB", (side, side))
            small = image.convert("RGB")
            small.thumbnail((side, side))
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"cannot be decoded ({type(exc).__name__})") from None
    for quality in _QUALITIES:
        out = io.BytesIO()
        small.save(out, "JPEG", quality=quality, optimize=True)
        if out.tell() <= MAX_THUMBNAIL_BYTES:
            return out.getvalue(), width, height
    small.thumbnail((side // 2, side // 2))
    out = io.BytesIO()
    small.save(out, "JPEG", quality=_QUALITIES[-1])
    return out.getvalue(), width, height


def image_parts(payload: dict[str, Any]) -> list[dict[str, Any]]:
    """The `input_image` parts of a stored `conversation.item.*` event's user message."""
    item = payload.get("item")
    if not isinstance(item, dict) or item.get("type") != "message" or item.get("role") != "user":
        return []
    content = item.get("content")
    if not isinstance(content, list):
        return []
    return [part for part in content if isinstance(part, dict) and part.get("type") == "input_image"]
