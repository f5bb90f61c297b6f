"""Images a client sends as `input_image` content parts: validation and a few plain facts.

The engine has no vision model; what it can honestly say about a picture is what a few arithmetic
passes over its pixels give: its size, whether it is dark or bright, and its dominant colour. That is
enough for an offline end-to-end test of the camera path (a known picture goes in, its colour comes
back in the reply) and for a text-only chat model to be told something about the frame.

The data URL is validated the way the API documents it (`data:image/jpeg|png;base64,…`, PNG and JPEG
only) and bounded twice: by encoded bytes (`MAX_IMAGE_BYTES`) and by pixels (`MAX_IMAGE_PIXELS`, so a
small file cannot decompress into a huge bitmap). Decoding is CPU work: call `image_facts` off the
event loop.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Final

import numpy as np

#: Largest decoded image accepted (bytes). A 1024 px JPEG frame is 30-200 KB.
MAX_IMAGE_BYTES: Final = 8 * 1024 * 1024
#: Largest image accepted (width x height).
MAX_IMAGE_PIXELS: Final = 40_000_000
#: Side of the small copy the facts are computed on (the facts do not need more).
FACTS_SIDE: Final = 64
#: Mean luma (0..1) at or below which an image is called dark, and at or above which it is bright.
DARK_AT: Final = 0.3
BRIGHT_AT: Final = 0.6

_DATA_URL = re.compile(r"^data:(image/(?:jpeg|jpg|png));base64,", re.IGNORECASE)


class ImageError(ValueError):
    """The image is not a supported data URL or cannot be decoded; the message says why."""


@dataclass(frozen=True)
class ImageFacts:
    """What the engine knows about one image."""

    width: int
    height: int
    #: Mean luma, 0 (black) .. 1 (white).
    luma: float
    #: Name of the colour most pixels have (`red`, `green`, `blue`, … `black`, `white`, `grey`).
    colour: str
    media_type: str = "image/jpeg"
    size_bytes: int = 0

    @property
    def brightness(self) -> str:
        """`dark`, `bright` or `medium`."""
        if self.luma <= DARK_AT:
            return "dark"
        if self.luma >= BRIGHT_AT:
            return "bright"
        return "medium"

    def describe(self) -> str:
        """One spoken sentence: size, brightness and dominant colour."""
        light = "of medium brightness" if self.brightness == "medium" else self.brightness
        return (
            f"I see a {self.width} by {self.height} image. It is {light}, "
            f"and the main colour is {self.colour}."
        )


def decode_data_url(url: object) -> tuple[str, bytes]:
    """The media type and bytes of a `data:image/…;base64,…` URL; `ImageError` if it is not one."""
    if not isinstance(url, str) or not url:
        raise ImageError("image_url must be a data URL string")
    found = _DATA_URL.match(url)
    if found is None:
        raise ImageError("image_url must be a base64 data URL of a JPEG or PNG image")
    encoded = url[found.end() :]
    # base64 grows by 4/3: refuse before decoding anything far too large.
    if len(encoded) > (MAX_IMAGE_BYTES * 4) // 3 + 4:
        raise ImageError(f"the image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError("image_url is not valid base64") from None
    if not data:
        raise ImageError("the image is empty")
    media_type = found.group(1).lower().replace("image/jpg", "image/jpeg")
    return media_type, data


def image_facts(data: bytes, *, media_type: str = "image/jpeg") -> ImageFacts:
    """Decode `data` (JPEG or PNG) and measure it; `ImageError` if it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.format not in ("JPEG", "PNG"):
                raise ImageError(f"unsupported image format {image.format!r} (JPEG or PNG only)")
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(f"the image has more than {MAX_IMAGE_PIXELS} pixels")
            image.draft("RGB", (FACTS_SIDE, FACTS_SIDE))  # JPEG: decode at 1/2..1/8 scale
            small = image.convert("RGB")
            small.thumbnail((FACTS_SIDE, FACTS_SIDE))
            pixels = np.asarray(small, dtype=np.float32) / 255.0
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageError(f"the image cannot be decoded: {exc}") from None
    rgb = pixels.reshape(-1, 3)
    luma = float(np.mean(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)))
    return ImageFacts(
        width=width,
        height=height,
        luma=round(luma, 3),
        colour=dominant_colour(rgb),
        media_type=media_type,
        size_bytes=len(data),
    )


#: Hue ranges (degrees, upper bound exclusive) and their names; red wraps around 360.
_HUES: Final = (
    (15.0, "red"),
    (45.0, "orange"),
    (70.0, "yellow"),
    (170.0, "green"),
    (200.0, "cyan"),
    (260.0, "blue"),
    (290.0, "purple"),
    (335.0, "pink"),
    (360.0, "red"),
)


def colour_names(rgb: np.ndarray) -> list[str]:
    """The colour name of each RGB row (floats 0..1): greys by value, colours by hue."""
    high = rgb.max(axis=1)
    low = rgb.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.maximum(high, 1e-6), 0.0)
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    safe = np.maximum(chroma, 1e-6)
    hue = (
        np.where(
            high == r,
            ((g - b) / safe) % 6,
            np.where(high == g, (b - r) / safe + 2, (r - g) / safe + 4),
        )
        * 60.0
    )
    names: list[str] = []
    for value, sat, h in zip(high.tolist(), saturation.tolist(), hue.tolist(), strict=True):
        if value < 0.2:
            names.append("black")
        elif sat < 0.25:
            names.append("white" if value > 0.8 else "grey")
        else:
            names.append(next(name for bound, name in _HUES if h < bound))
    return names


def dominant_colour(rgb: np.ndarray) -> str:
    """The most common colour name among the pixels (first in order of appearance on ties)."""
    names = colour_names(rgb)
    if not names:
        return "black"
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return max(counts, key=lambda name: counts[name])
