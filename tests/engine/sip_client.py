"""A tiny SIP UAC + RTP endpoint over real loopback UDP sockets, for the SIP front door's tests."""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np

from realtime_local.sip import message as sipmsg
from realtime_local.sip.g711 import ulaw_decode, ulaw_encode
from realtime_local.sip.message import SipMessage
from realtime_local.sip.rtp import build_rtp, parse_rtp


class _Queue(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, float]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector transports aren't subclasses

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.queue.put_nowait((data, time.monotonic()))


async def _bind() -> _Queue:
    _, protocol = await asyncio.get_running_loop().create_datagram_endpoint(
        _Queue, local_addr=("127.0.0.1", 0)
    )
    return protocol


@dataclass
class SipClient:
    """A caller: sends requests to the UAS, collects what comes back (SIP and RTP separately)."""

    server: tuple[str, int]
    sip: _Queue
    rtp: _Queue
    call_id: str = field(default_factory=lambda: secrets.token_hex(8) + "@127.0.0.1")
    from_tag: str = field(default_factory=sipmsg.new_tag)
    caller: str = "+15551230001"
    callee: str = "+15559870002"
    cseq: int = 1
    to_header: str | None = None

    @classmethod
    async def open(cls, server: tuple[str, int]) -> SipClient:
        return cls(server=server, sip=await _bind(), rtp=await _bind())

    def close(self) -> None:
        for protocol in (self.sip, self.rtp):
            assert protocol.transport is not None
            protocol.transport.close()

    @property
    def sip_port(self) -> int:
        assert self.sip.transport is not None
        return int(self.sip.transport.get_extra_info("sockname")[1])

    @property
    def rtp_port(self) -> int:
        assert self.rtp.transport is not None
        return int(self.rtp.transport.get_extra_info("sockname")[1])

    def offer(self, formats: str = "0 8") -> bytes:
        return (
            "v=0\r\no=caller 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP {formats}\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
            "a=ptime:20\r\n"
        ).encode()

    def request(
        self, method: str, *, cseq: int | None = None, body: bytes = b"", compact: bool = False
    ) -> bytes:
        number = self.cseq if cseq is None else cseq
        to = self.to_header or f"<sip:{self.callee}@127.0.0.1>"
        names = ("v", "f", "t", "i") if compact else ("Via", "From", "To", "Call-ID")
        headers = [
            (names[0], f"SIP/2.0/UDP 127.0.0.1:{self.sip_port};branch=z9hG4bK{number}{method.lower()};rport"),
            ("Max-Forwards", "70"),
            (names[1], f'"Caller" <sip:{self.caller}@127.0.0.1>;tag={self.from_tag}'),
            (names[2], to),
            (names[3], self.call_id),
            ("CSeq", f"{number} {method}"),
            ("Contact", f"<sip:caller@127.0.0.1:{self.sip_port}>"),
            ("X-Test-Header", "kept"),
        ]
        if body:
            headers.append(("Content-Type", "application/sdp"))
        return SipMessage(
            method=method, uri=f"sip:{self.callee}@127.0.0.1", headers=headers, body=body
        ).encode()

    def send(self, data: bytes) -> None:
        assert self.sip.transport is not None
        self.sip.transport.sendto(data, self.server)

    def invite(self, formats: str = "0 8") -> bytes:
        data = self.request("INVITE", body=self.offer(formats))
        self.send(data)
        return data

    async def next_sip(self, limit_s: float = 10.0) -> SipMessage:
        data, _ = await asyncio.wait_for(self.sip.queue.get(), limit_s)
        return sipmsg.parse(data)

    async def final_response(self, limit_s: float = 10.0) -> SipMessage:
        """Skip provisional responses; answer requests from the UAS (BYE/REFER/...) with 200."""
        while True:
            msg = await self.next_sip(limit_s)
            if msg.status is not None and msg.status >= 200:
                if msg.cseq[1] == "INVITE" and msg.status >= 200:
                    self.to_header = msg.get("To")
                return msg

    def ack(self) -> None:
        self.send(self.request("ACK"))

    def reply(self, request: SipMessage, status: int) -> None:
        self.send(sipmsg.response_to(request, status).encode())

    async def send_audio(self, pcm8k: np.ndarray, remote: tuple[str, int], *, payload_type: int = 0) -> None:
        """Send 8 kHz audio as PCMU RTP, 20 ms packets paced in real time."""
        assert self.rtp.transport is not None
        ssrc, seq, ts = secrets.randbits(32), secrets.randbits(16), secrets.randbits(32)
        start = time.monotonic()
        for index, offset in enumerate(range(0, len(pcm8k) - 159, 160)):
            packet = build_rtp(
                payload_type=payload_type,
                sequence=seq + index,
                timestamp=ts + offset,
                ssrc=ssrc,
                marker=index == 0,
                payload=ulaw_encode(pcm8k[offset : offset + 160].astype(np.int16)),
            )
            self.rtp.transport.sendto(packet, remote)
            delay = start + (index + 1) * 0.02 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    def received_audio(self) -> tuple[np.ndarray, list[float], int]:
        """Drain received RTP: (decoded PCMU audio, arrival times, packets with the marker bit)."""
        chunks: list[np.ndarray] = []
        arrivals: list[float] = []
        markers = 0
        while not self.rtp.queue.empty():
            data, at = self.rtp.queue.get_nowait()
            packet = parse_rtp(data)
            if packet is None:
                continue
            markers += packet.marker
            chunks.append(ulaw_decode(packet.payload))
            arrivals.append(at)
        return (np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)), arrivals, markers


def sdp_media_port(body: bytes) -> int:
    for line in body.decode().splitlines():
        if line.startswith("m=audio "):
            return int(line.split()[1])
    raise AssertionError("no m=audio in the answer")
