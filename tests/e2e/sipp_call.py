"""sipp as the caller: a UAC scenario and a pcap of G.711 RTP for its `play_pcap_audio`.

sipp does the signalling and sends the caller's voice (a pcap of PCMU RTP packets built here from
espeak-ng audio: Ethernet/IPv4/UDP headers written with `struct`, one packet per 20 ms with pcap
timestamps that pace sipp's replay). The SDP offer's `m=audio` port is a UDP socket of the test, so the
engine's RTP (the agent's voice) is counted and decoded in Python: sipp itself cannot report what
it receives beyond packet statistics, and tshark is not installed.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from realtime_local.sip.g711 import ulaw_encode
from realtime_local.sip.rtp import build_rtp

CALLER = "+15551234567"
CALLEE = "+15559876543"


def write_rtp_pcap(path: Path, pcm8k: np.ndarray, *, src_port: int = 6000, dst_port: int = 6002) -> int:
    """Write `pcm8k` (8 kHz int16) as PCMU RTP in a pcap (link type Ethernet); returns packets."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    count = 0
    for index, offset in enumerate(range(0, len(pcm8k) - 159, 160)):
        rtp = build_rtp(
            payload_type=0,
            sequence=1000 + index,
            timestamp=160 * index,
            ssrc=0x5EED5EED,
            marker=index == 0,
            payload=ulaw_encode(pcm8k[offset : offset + 160].astype(np.int16)),
        )
        udp = struct.pack("!HHHH", src_port, dst_port, 8 + len(rtp), 0) + rtp
        total = 20 + len(udp)
        header = struct.pack(
            "!BBHHHBBH4s4s",
            0x45,
            0,
            total,
            index & 0xFFFF,
            0,
            64,
            17,
            0,
            bytes([127, 0, 0, 1]),
            bytes([127, 0, 0, 1]),
        )
        checksum = _ip_checksum(header)
        header = header[:10] + struct.pack("!H", checksum) + header[12:]
        frame = b"\x00" * 6 + b"\x00" * 6 + b"\x08\x00" + header + udp
        micros = index * 20_000
        out.append(
            struct.pack("<IIII", micros // 1_000_000, micros % 1_000_000, len(frame), len(frame)) + frame
        )
        count += 1
    path.write_bytes(b"".join(out))
    return count


def _ip_checksum(header: bytes) -> int:
    total: int = sum(struct.unpack(f"!{len(header) // 2}H", header))
    while total > 0xFFFF:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def scenario(*, pcap: Path, rtp_port: int, talk_ms: int) -> str:
    """A UAC: INVITE (PCMU, media at the test's `rtp_port`) → 200 → ACK → play `pcap` → wait (at
    most `talk_ms`) for the test's OPTIONS in the dialog, answer it → BYE → 200. 100/180 optional;
    anything else fails the call (sipp exits non-zero)."""
    return f"""<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="voiceagent phone call">
  <send retrans="500">
    <![CDATA[
      INVITE sip:{CALLEE}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:{CALLER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{CALLEE}@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:{CALLER}@[local_ip]:[local_port]>
      Max-Forwards: 70
      User-Agent: sipp e2e
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP[local_ip_type] [local_ip]
      s=-
      c=IN IP[media_ip_type] [media_ip]
      t=0 0
      m=audio {rtp_port} RTP/AVP 0
      a=rtpmap:0 PCMU/8000
      a=ptime:20

    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="200" rtd="true"/>
  <send>
    <![CDATA[
      ACK sip:{CALLEE}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:{CALLER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{CALLEE}@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Contact: <sip:{CALLER}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <nop>
    <action>
      <exec play_pcap_audio="{pcap}"/>
    </action>
  </nop>
  <!-- The test releases the caller once the agent has answered, with an OPTIONS in this dialog. -->
  <recv request="OPTIONS" timeout="{talk_ms}"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
  <send retrans="500">
    <![CDATA[
      BYE sip:{CALLEE}@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:{CALLER}@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:{CALLEE}@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Contact: <sip:{CALLER}@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Length: 0

    ]]>
  </send>
  <recv response="200" crlf="true"/>
</scenario>
"""


def sipp_command(*, scenario_path: Path, server_port: int, sip_port: int, media_port: int) -> list[str]:
    """One call, then exit (status 0 when the scenario completed)."""
    return [
        "sipp",
        f"127.0.0.1:{server_port}",
        "-sf",
        str(scenario_path),
        "-i",
        "127.0.0.1",
        "-p",
        str(sip_port),
        "-mi",
        "127.0.0.1",
        "-mp",
        str(media_port),
        "-m",
        "1",
        "-l",
        "1",
        "-timeout",
        "120s",
        "-timeout_error",
        "-nostdin",
        "-trace_err",
    ]


def release_options(*, call_id: str, sipp_port: int) -> bytes:
    """The OPTIONS that ends sipp's wait: same Call-ID as its call, sent to its SIP port."""
    lines = [
        f"OPTIONS sip:{CALLER}@127.0.0.1:{sipp_port} SIP/2.0",
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKrelease",
        "From: <sip:test@127.0.0.1>;tag=release",
        f"To: <sip:{CALLER}@127.0.0.1>",
        f"Call-ID: {call_id}",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
