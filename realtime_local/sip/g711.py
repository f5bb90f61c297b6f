"""G.711 μ-law (PCMU) and A-law (PCMA) with numpy lookup tables.

The standard library's `audioop` is deprecated (removed in 3.13), so the codecs are the ITU-T G.711
reference algorithms (as in Sun's g711.c) evaluated once for every input value: decoding is a
256-entry table, encoding a 65536-entry table indexed by the int16 sample's bit pattern.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Pcm16 = npt.NDArray[np.int16]

_BIAS = 0x84


def _ulaw_decode_one(byte: int) -> int:
    u = ~byte & 0xFF
    sign = u & 0x80
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    value = (((mantissa << 3) + _BIAS) << exponent) - _BIAS
    return -value if sign else value


def _ulaw_encode_one(sample: int) -> int:
    # The 14-bit reference form (g711.c, as audioop): arithmetic shift first, then sign and bias.
    value = sample >> 2
    if value < 0:
        value, mask = -value, 0x7F
    else:
        mask = 0xFF
    value = min(value, 8159) + (_BIAS >> 2)
    for segment, limit in enumerate((0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF)):
        if value <= limit:
            return ((segment << 4) | ((value >> (segment + 1)) & 0x0F)) ^ mask
    return 0x7F ^ mask


def _alaw_decode_one(byte: int) -> int:
    a = byte ^ 0x55
    value = (a & 0x0F) << 4
    segment = (a & 0x70) >> 4
    if segment == 0:
        value += 8
    else:
        value = (value + 0x108) << (segment - 1)
    return value if a & 0x80 else -value


def _alaw_encode_one(sample: int) -> int:
    value = sample >> 3
    if value >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        value = -value - 1
    limits = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)
    segment = next((seg for seg, limit in enumerate(limits) if value <= limit), 8)
    if segment == 8:
        return 0x7F ^ mask
    code = segment << 4
    code |= (value >> 1) & 0x0F if segment < 2 else (value >> segment) & 0x0F
    return code ^ mask


_ALL_SAMPLES = range(-32768, 32768)
_ULAW_DECODE: Pcm16 = np.array([_ulaw_decode_one(b) for b in range(256)], dtype=np.int16)
_ALAW_DECODE: Pcm16 = np.array([_alaw_decode_one(b) for b in range(256)], dtype=np.int16)
# Indexed by the sample's bit pattern as uint16 (so -1 is index 65535): roll -32768..32767 into place.
_ULAW_ENCODE = np.roll(np.array([_ulaw_encode_one(s) for s in _ALL_SAMPLES], dtype=np.uint8), -32768)
_ALAW_ENCODE = np.roll(np.array([_alaw_encode_one(s) for s in _ALL_SAMPLES], dtype=np.uint8), -32768)


def ulaw_decode(payload: bytes) -> Pcm16:
    """PCMU bytes → int16 samples."""
    return _ULAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Pcm16:
    """PCMA bytes → int16 samples."""
    return _ALAW_DECODE[np.frombuffer(payload, dtype=np.uint8)]


def ulaw_encode(pcm: Pcm16) -> bytes:
    """int16 samples → PCMU bytes."""
    return bytes(_ULAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)])


def alaw_encode(pcm: Pcm16) -> bytes:
    """int16 samples → PCMA bytes."""
    return bytes(_ALAW_ENCODE[np.asarray(pcm, dtype=np.int16).view(np.uint16)])


#: RTP static payload type → (encoding name, encoder, decoder).
CODECS = {
    0: ("PCMU", ulaw_encode, ulaw_decode),
    8: ("PCMA", alaw_encode, alaw_decode),
}
