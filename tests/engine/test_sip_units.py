"""SIP message parsing, SDP offer/answer, G.711 and RTP packets: the pieces of the SIP front door."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from realtime_local.sip import g711
from realtime_local.sip import message as sipmsg
from realtime_local.sip.message import SipMessage, SipParseError
from realtime_local.sip.rtp import build_rtp, parse_rtp
from realtime_local.sip.sdp import SdpError, build_answer, parse_offer

INVITE = (
    b"INVITE sip:+15559870002@127.0.0.1 SIP/2.0\r\n"
    b"v: SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK1\r\n"
    b"Via: SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2\r\n"
    b'f: "Alice" <sip:+15551230001@example.com>;tag=abc\r\n'
    b"t: <sip:+15559870002@example.com>\r\n"
    b"i: call-1@example.com\r\n"
    b"CSeq: 7 INVITE\r\n"
    b"m: <sip:alice@10.0.0.1:5061>\r\n"
    b"Subject: a folded\r\n  header\r\n"
    b"c: application/sdp\r\n"
    b"l: 5\r\n"
    b"\r\n"
    b"v=0\r\nTRAILING"
)


def test_parse_expands_compact_forms_folds_and_cuts_the_body() -> None:
    msg = sipmsg.parse(INVITE)
    assert msg.method == "INVITE" and msg.uri == "sip:+15559870002@127.0.0.1"
    assert msg.call_id == "call-1@example.com" and msg.cseq == (7, "INVITE")
    assert msg.get_all("via") == [
        "SIP/2.0/UDP 10.0.0.1:5061;branch=z9hG4bK1",
        "SIP/2.0/UDP 10.0.0.2:5060;branch=z9hG4bK2",
    ]
    assert msg.get("Subject") == "a folded header"
    assert msg.get("Content-Type") == "application/sdp"
    assert msg.body == b"v=0\r\n"  # Content-Length wins over what follows
    assert sipmsg.tag_of(msg.get("From") or "") == "abc"
    assert sipmsg.uri_of(msg.get("From") or "") == "sip:+15551230001@example.com"
    assert sipmsg.user_of(msg.get("From") or "") == "+15551230001"
    assert sipmsg.user_of("<tel:+1555;phone-context=x>") == "+1555"
    assert sipmsg.uri_of(msg.get("Contact") or "") == "sip:alice@10.0.0.1:5061"


def test_response_copies_the_transaction_headers_and_adds_one_tag() -> None:
    msg = sipmsg.parse(INVITE)
    response = sipmsg.response_to(msg, 180, to_tag="xyz")
    encoded = response.encode()
    assert encoded.startswith(b"SIP/2.0 180 Ringing\r\n")
    parsed = sipmsg.parse(encoded)
    assert parsed.status == 180 and parsed.get_all("Via") == msg.get_all("Via")
    assert parsed.get("To") == "<sip:+15559870002@example.com>;tag=xyz"
    assert parsed.get("Content-Length") == "0" and parsed.cseq == (7, "INVITE")
    again = sipmsg.response_to(
        sipmsg.parse(encoded.replace(b"SIP/2.0 180 Ringing", b"BYE sip:x SIP/2.0")), 200, to_tag="new"
    )
    assert sipmsg.tag_of(again.get("To") or "") == "xyz"  # an existing tag is kept


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"INVITE sip:x SIP/2.0\r\n",  # no end of headers
        b"HELLO\r\n\r\n",
        b"INVITE sip:x SIP/3.0\r\nCall-ID: a\r\n\r\n",
        b"SIP/2.0 2000 OK\r\n\r\n",
        INVITE.replace(b"i: call-1@example.com\r\n", b""),  # no Call-ID
        INVITE.replace(b"CSeq: 7 INVITE", b"CSeq: seven INVITE"),
        INVITE.replace(b"l: 5", b"l: 500"),  # body shorter than Content-Length
        INVITE.replace(b"l: 5", b"l: -1"),
        INVITE.replace(b"c: application/sdp", b"bad header line"),
        INVITE.replace(b"Alice", b"\xff\xfe"),
        INVITE + b"x" * 70_000,
        b"INVITE sip:x SIP/2.0\r\n" + b"X-A: b\r\n" * 200 + b"\r\n",
    ],
)
def test_parse_refuses_malformed_messages(data: bytes) -> None:
    with pytest.raises(SipParseError):
        sipmsg.parse(data)


def test_encode_sets_content_length() -> None:
    msg = SipMessage(method="OPTIONS", uri="sip:a@b", headers=[("Content-Length", "99")], body=b"abc")
    assert msg.encode().endswith(b"Content-Length: 3\r\n\r\nabc")


OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.1\r\ns=-\r\nc=IN IP4 10.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 9 8 0 101\r\nc=IN IP4 10.0.0.9\r\n"
    b"a=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
    b"m=video 40002 RTP/AVP 96\r\n"
)


def test_offer_takes_the_callers_first_g711_codec_and_the_media_address() -> None:
    offer = parse_offer(OFFER)
    assert (offer.host, offer.port, offer.payload_type) == ("10.0.0.9", 40000, 8)
    only_session_c = OFFER.replace(b"c=IN IP4 10.0.0.9\r\n", b"")
    assert parse_offer(only_session_c).host == "10.0.0.1"
    assert parse_offer(OFFER.replace(b"9 8 0 101", b"0 8")).payload_type == 0


@pytest.mark.parametrize(
    "body",
    [
        b"",
        OFFER.replace(b"9 8 0 101", b"9 18"),  # no G.711
        OFFER.replace(b"m=audio 40000", b"m=audio 0"),  # disabled stream
        OFFER.replace(b"RTP/AVP 9 8 0 101", b"RTP/SAVP 0"),  # SRTP is not offered by us
        OFFER.replace(b"a=rtpmap:8 PCMA/8000", b"a=rtpmap:8 OPUS/48000").replace(b"9 8 0 101", b"8"),
        b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n",  # no connection address
    ],
)
def test_offer_without_a_usable_stream_is_refused(body: bytes) -> None:
    with pytest.raises(SdpError):
        parse_offer(body)


def test_answer_names_the_chosen_codec_and_our_port() -> None:
    answer = build_answer(host="127.0.0.1", port=31000, payload_type=8).decode()
    assert "m=audio 31000 RTP/AVP 8\r\n" in answer and "a=rtpmap:8 PCMA/8000" in answer
    assert "c=IN IP4 127.0.0.1" in answer and "a=ptime:20" in answer
    assert parse_offer(answer.encode()).payload_type == 8  # a valid SDP by our own parser


def test_g711_known_values() -> None:
    assert g711.ulaw_decode(bytes([0xFF, 0x7F, 0x00, 0x80])).tolist() == [0, 0, -32124, 32124]
    assert g711.alaw_decode(bytes([0xD5, 0x55, 0x2A, 0xAA])).tolist() == [8, -8, -32256, 32256]
    samples = np.array([0, 1000, -1000, 32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(samples) == bytes([0xFF, 0xCE, 0x4E, 0x80, 0x00])
    assert g711.alaw_encode(samples) == bytes([0xD5, 0xFA, 0x7A, 0xAA, 0x2A])


def test_g711_matches_audioop_bit_for_bit() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    everything = np.arange(-32768, 32768, dtype=np.int16)
    assert g711.ulaw_encode(everything) == audioop.lin2ulaw(everything.tobytes(), 2)
    assert g711.alaw_encode(everything) == audioop.lin2alaw(everything.tobytes(), 2)
    codes = bytes(range(256))
    assert g711.ulaw_decode(codes).tobytes() == audioop.ulaw2lin(codes, 2)
    assert g711.alaw_decode(codes).tobytes() == audioop.alaw2lin(codes, 2)


def test_g711_round_trip_keeps_speech_within_its_quantisation() -> None:
    tone = (np.sin(np.arange(800) * 2 * np.pi * 300 / 8000) * 12000).astype(np.int16)
    for encode, decode in ((g711.ulaw_encode, g711.ulaw_decode), (g711.alaw_encode, g711.alaw_decode)):
        back = decode(encode(tone)).astype(np.int32)
        assert np.max(np.abs(back - tone)) <= 12000 // 16  # a few percent at this level


def test_rtp_round_trip_and_what_is_not_rtp() -> None:
    data = build_rtp(
        payload_type=0,
        sequence=65535,
        timestamp=2**32 - 1,
        ssrc=0xDEADBEEF,
        marker=True,
        payload=b"\xff" * 160,
    )
    packet = parse_rtp(data)
    assert packet is not None and len(data) == 12 + 160
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc, packet.marker) == (
        0,
        65535,
        2**32 - 1,
        0xDEADBEEF,
        True,
    )
    with_csrc_and_padding = bytes([0xA1, 0x08]) + data[2:12] + b"\x00" * 4 + b"\x01\x02" + b"\x00\x00\x03"
    packet = parse_rtp(with_csrc_and_padding)
    assert packet is not None and packet.payload == b"\x01\x02" and packet.payload_type == 8
    assert parse_rtp(b"\x80\x00") is None  # too short
    assert parse_rtp(b"\x40" + data[1:]) is None  # version 1
    assert parse_rtp(bytes([0x80, 200]) + data[2:]) is None  # RTCP sender report
