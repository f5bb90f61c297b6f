"""RTP (RFC 3550) with G.711 between a caller and a `LocalCall`'s audio bridge.

Inbound: each packet of the negotiated payload type is decoded (PCMU/PCMA), resampled 8 → 16 kHz
and fed to `LocalCall.feed_input_audio`; other payload types (comfort noise, DTMF) are ignored.
Outbound: `LocalCall.open_audio_output()` gives 48 kHz frames paced in real time (silence between
replies); they are resampled to 8 kHz, encoded and sent as 20 ms packets (160 samples) with a random
SSRC, sequence number and timestamp base, the marker bit on the first packet. RTP goes to the address
of the caller's SDP (no latching on the source address). Inbound interarrival jitter is computed as in
RFC 3550 §6.4.1 for the report and the bench.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import struct
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np

from realtime_local.sip.g711 import CODECS, Pcm16

if TYPE_CHECKING:
    from realtime_local.call import LocalCall

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000
SAMPLES_PER_PACKET = 160  # 20 ms at 8 kHz
PACKET_SECONDS = SAMPLES_PER_PACKET / SAMPLE_RATE
_HEADER = struct.Struct("!BBHII")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    marker: bool
    payload: bytes


def parse_rtp(data: bytes) -> RtpPacket | None:
    """One RTP packet, or None for anything else (RTCP, garbage, wrong version)."""
    if len(data) < _HEADER.size:
        return None
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != 2:
        return None
    payload_type = second & 0x7F
    if 72 <= payload_type <= 76:  # RTCP multiplexed on the same port (RFC 5761)
        return None
    offset = _HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(data) < offset + 4:
            return None
        (words,) = struct.unpack_from("!H", data, offset + 2)
        offset += 4 + 4 * words
    end = len(data)
    if first & 0x20:  # padding
        end -= data[-1]
    if offset > end:
        return None
    return RtpPacket(payload_type, sequence, timestamp, ssrc, bool(second & 0x80), data[offset:end])


def build_rtp(
    *, payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool, payload: bytes
) -> bytes:
    return (
        _HEADER.pack(
            0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
        )
        + payload
    )


@dataclass
class RtpStats:
    packets_in: int = 0
    packets_out: int = 0
    ignored_in: int = 0
    jitter_ms: float = 0.0
    """RFC 3550 interarrival jitter of inbound packets, in milliseconds."""


class RtpBridge(asyncio.DatagramProtocol):
    """One call's RTP socket. `await RtpBridge.open(...)`, then `start(call)`, finally `close()`."""

    def __init__(self, *, remote: tuple[str, int], payload_type: int) -> None:
        self.remote = remote
        self.payload_type = payload_type
        _, self._encode, self._decode = CODECS[payload_type]
        self.stats = RtpStats()
        self.transport: asyncio.DatagramTransport | None = None
        self._call: LocalCall | None = None
        self._sender: asyncio.Task[None] | None = None
        self._inbound_resampler: object | None = None
        self._transit: float | None = None
        self._jitter = 0.0

    @classmethod
    async def open(cls, *, host: str, remote: tuple[str, int], payload_type: int) -> RtpBridge:
        """Bind a fresh UDP port on `host` for this call's media."""
        loop = asyncio.get_running_loop()
        _, bridge = await loop.create_datagram_endpoint(
            lambda: cls(remote=remote, payload_type=payload_type), local_addr=(host, 0)
        )
        return bridge

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector transports aren't subclasses

    def start(self, call: LocalCall) -> None:
        """Bridge media both ways with `call` (after it was accepted)."""
        from realtime_local.media import Resampler

        self._call = call
        self._inbound_resampler = Resampler(SAMPLE_RATE, 16_000)
        self._sender = asyncio.get_running_loop().create_task(
            self._send_loop(call), name=f"rtp-out-{call.id}"
        )

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        packet = parse_rtp(data)
        if packet is None or packet.payload_type != self.payload_type or not packet.payload:
            self.stats.ignored_in += 1
            return
        self.stats.packets_in += 1
        self._update_jitter(packet.timestamp)
        call = self._call
        if call is None or call.state != "active":
            return
        from realtime_local.media import Resampler

        assert isinstance(self._inbound_resampler, Resampler)
        pcm16k = self._inbound_resampler.convert(self._decode(packet.payload))
        if len(pcm16k):
            call.feed_input_audio(pcm16k)

    def _update_jitter(self, rtp_timestamp: int) -> None:
        arrival = time.monotonic() * SAMPLE_RATE
        transit = arrival - rtp_timestamp
        if self._transit is not None:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16
        self._transit = transit
        self.stats.jitter_ms = self._jitter / SAMPLE_RATE * 1000

    async def _send_loop(self, call: LocalCall) -> None:
        from realtime_local.media import Resampler

        track = call.open_audio_output()
        resampler = Resampler(48_000, SAMPLE_RATE)
        ssrc = secrets.randbits(32)
        sequence = secrets.randbits(16)
        timestamp = secrets.randbits(32)
        pending: Pcm16 = np.zeros(0, dtype=np.int16)
        first = True
        loop = asyncio.get_running_loop()
        next_at: float | None = None
        try:
            while call.state != "ended":
                frame = await track.recv()
                pcm = resampler.convert(frame.to_ndarray().reshape(-1).astype(np.int16))
                pending = np.concatenate([pending, pcm])
                while len(pending) >= SAMPLES_PER_PACKET:
                    chunk, pending = pending[:SAMPLES_PER_PACKET], pending[SAMPLES_PER_PACKET:]
                    # The resampler hands out uneven pieces (0 or 2 packets' worth after a frame), so
                    # packets go out on their own 20 ms clock; after a stall (> 100 ms) it restarts.
                    now = loop.time()
                    if next_at is None or now - next_at > 0.1:
                        next_at = now
                    elif next_at > now:
                        await asyncio.sleep(next_at - now)
                    next_at += PACKET_SECONDS
                    if self.transport is None or self.transport.is_closing():
                        return
                    self.transport.sendto(
                        build_rtp(
                            payload_type=self.payload_type,
                            sequence=sequence,
                            timestamp=timestamp,
                            ssrc=ssrc,
                            marker=first,
                            payload=self._encode(chunk),
                        ),
                        self.remote,
                    )
                    self.stats.packets_out += 1
                    first = False
                    sequence = (sequence + 1) & 0xFFFF
                    timestamp = (timestamp + SAMPLES_PER_PACKET) & 0xFFFFFFFF
        except asyncio.CancelledError:
            raise
        except Exception:  # the track stops when the call ends; anything else is logged, not raised
            if call.state != "ended":
                logger.exception("RTP send loop of call %s failed", call.id)

    async def close(self) -> None:
        """Stop sending and release the port (idempotent)."""
        if self._sender is not None:
            self._sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sender
            self._sender = None
        if self.transport is not None:
            self.transport.close()
