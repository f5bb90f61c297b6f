"""SDP offer/answer for one G.711 audio stream (RFC 4566 / 3264 subset).

The offer's first `m=audio` line with RTP/AVP is taken; the first of its payload types we speak
(0 PCMU, 8 PCMA, both 8 kHz) wins, in the caller's order of preference. Telephone-event (RFC 4733)
is not negotiated: DTMF is not used by the agent.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

SUPPORTED = {0: "PCMU", 8: "PCMA"}


class SdpError(ValueError):
    """No usable audio stream in the offer (answered with 488 Not Acceptable Here)."""


@dataclass(frozen=True)
class AudioOffer:
    """Where the caller wants our RTP and which codec we chose from its list."""

    host: str
    port: int
    payload_type: int
    ptime_ms: int = 20


def parse_offer(body: bytes) -> AudioOffer:
    """The caller's audio address and our codec choice. Raises `SdpError`."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    session_host: str | None = None
    media_host: str | None = None
    port: int | None = None
    formats: list[int] = []
    rtpmap: dict[int, str] = {}
    in_audio = False
    seen_audio = False
    for raw in text.splitlines():
        line = raw.strip()
        if len(line) < 2 or line[1] != "=":
            continue
        kind, value = line[0], line[2:]
        if kind == "m":
            in_audio = False
            parts = value.split()
            if not seen_audio and len(parts) >= 4 and parts[0] == "audio" and parts[2].startswith("RTP/AVP"):
                if not parts[1].isdigit():
                    raise SdpError("bad media port")
                port = int(parts[1].split("/")[0])
                formats = [int(fmt) for fmt in parts[3:] if fmt.isdigit()]
                in_audio = seen_audio = True
        elif kind == "c":
            parts = value.split()
            if len(parts) >= 3 and parts[0] == "IN" and parts[1] == "IP4":
                host = parts[2].split("/")[0]
                if in_audio:
                    media_host = host
                elif not seen_audio:
                    session_host = host
        elif kind == "a" and in_audio and value.startswith("rtpmap:"):
            pt_text, _, encoding = value[len("rtpmap:") :].partition(" ")
            if pt_text.isdigit():
                rtpmap[int(pt_text)] = encoding.strip().upper()
    if port is None:
        raise SdpError("no RTP/AVP audio stream in the offer")
    if not 0 < port < 65536:
        raise SdpError("audio stream port is 0 or invalid (stream disabled)")
    address = media_host or session_host
    if not address:
        raise SdpError("no IPv4 connection address")
    for fmt in formats:
        expected = SUPPORTED.get(fmt)
        if expected is None:
            continue
        mapped = rtpmap.get(fmt)
        if mapped is None or mapped.split("/")[0] == expected:
            return AudioOffer(host=address, port=port, payload_type=fmt)
    raise SdpError(f"no supported codec (PCMU/PCMA) among payload types {formats}")


def build_answer(*, host: str, port: int, payload_type: int) -> bytes:
    """Our SDP answer: one sendrecv audio stream with the chosen codec, 20 ms packets."""
    session_id = int(time.time())
    name = SUPPORTED[payload_type]
    lines = [
        "v=0",
        f"o=realtime_local {session_id} {session_id} IN IP4 {host}",
        "s=realtime_local",
        f"c=IN IP4 {host}",
        "t=0 0",
        f"m=audio {port} RTP/AVP {payload_type}",
        f"a=rtpmap:{payload_type} {name}/8000",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
