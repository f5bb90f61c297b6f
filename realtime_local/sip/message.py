"""SIP messages over UDP (RFC 3261): parse the subset a UAS needs, build responses and requests.

No maintained pure-Python SIP parser on PyPI fits (the candidates are unmaintained or bundle a whole
stack), so this is a small strict parser: start line, headers (compact forms expanded, folded lines
joined, names canonicalised), a body cut by Content-Length. Anything malformed raises `SipParseError`
and is dropped by the server (a UAS answers nothing it cannot parse).
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass, field

#: Largest datagram accepted; UDP SIP must fit a datagram, and 64 KiB is UDP's own limit.
MAX_MESSAGE_BYTES = 65_507
MAX_HEADERS = 128

COMPACT = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "r": "Refer-To",
    "o": "Event",
}
_CANONICAL = {
    name.lower(): name
    for name in (
        "Call-ID",
        "CSeq",
        "Contact",
        "Content-Length",
        "Content-Type",
        "Content-Encoding",
        "From",
        "To",
        "Via",
        "Max-Forwards",
        "Refer-To",
        "Event",
        "Subscription-State",
        "User-Agent",
        "Allow",
        "Supported",
        "Subject",
        "Record-Route",
        "Route",
        "WWW-Authenticate",
    )
}
REASONS = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    600: "Busy Everywhere",
    603: "Decline",
}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_TAG = re.compile(r";\s*tag=([^;>\s,]+)", re.IGNORECASE)
_URI_IN_BRACKETS = re.compile(r"<([^>]*)>")


class SipParseError(ValueError):
    """The datagram is not a SIP message this server can handle."""


def canonical_name(name: str) -> str:
    """`v` → `Via`, `call-id` → `Call-ID`, unknown names title-cased per dash-separated word."""
    lower = name.strip().lower()
    if lower in COMPACT:
        return COMPACT[lower]
    return _CANONICAL.get(lower) or "-".join(part.capitalize() for part in lower.split("-"))


@dataclass
class SipMessage:
    """A request (`method`, `uri`) or a response (`status`, `reason`), headers in order, raw body."""

    method: str | None = None
    uri: str | None = None
    status: int | None = None
    reason: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def get(self, name: str) -> str | None:
        """The first value of header `name` (any form), or None."""
        wanted = canonical_name(name)
        return next((value for key, value in self.headers if key == wanted), None)

    def get_all(self, name: str) -> list[str]:
        wanted = canonical_name(name)
        return [value for key, value in self.headers if key == wanted]

    @property
    def call_id(self) -> str:
        return self.get("Call-ID") or ""

    @property
    def cseq(self) -> tuple[int, str]:
        """(sequence number, method) from CSeq."""
        raw = (self.get("CSeq") or "").split()
        if len(raw) != 2 or not raw[0].isdigit():
            raise SipParseError(f"bad CSeq: {self.get('CSeq')!r}")
        return int(raw[0]), raw[1].upper()

    def encode(self) -> bytes:
        """Serialise, setting Content-Length from the body."""
        if self.is_request:
            start = f"{self.method} {self.uri} SIP/2.0"
        else:
            start = f"SIP/2.0 {self.status} {self.reason or REASONS.get(self.status or 0, 'Unknown')}"
        lines = [start]
        lines += [f"{name}: {value}" for name, value in self.headers if name != "Content-Length"]
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


def parse(data: bytes) -> SipMessage:
    """Parse one datagram. Raises `SipParseError` for anything malformed or oversized."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        head, sep, body = data.partition(b"\n\n")
        if not sep:
            raise SipParseError("no end of headers")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    raw_lines = text.replace("\r\n", "\n").split("\n")
    lines: list[str] = []
    for line in raw_lines:
        if line[:1] in (" ", "\t") and lines:  # folded continuation
            lines[-1] += " " + line.strip()
        else:
            lines.append(line)
    start, header_lines = lines[0], lines[1:]
    message = _start_line(start)
    if len(header_lines) > MAX_HEADERS:
        raise SipParseError("too many headers")
    for line in header_lines:
        if not line.strip():
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or not _TOKEN.match(name.strip()):
            raise SipParseError(f"bad header line: {line[:80]!r}")
        message.headers.append((canonical_name(name), value.strip()))
    for required in ("Call-ID", "CSeq", "From", "To", "Via"):
        if message.get(required) is None:
            raise SipParseError(f"missing {required}")
    length_text = message.get("Content-Length")
    if length_text is not None:
        if not length_text.isdigit():
            raise SipParseError("bad Content-Length")
        length = int(length_text)
        if length > len(body):
            raise SipParseError("body shorter than Content-Length")
        body = body[:length]
    message.body = body
    message.cseq  # noqa: B018 - validates CSeq now rather than at first use
    return message


def _start_line(line: str) -> SipMessage:
    parts = line.split(" ", 2)
    if len(parts) != 3:
        raise SipParseError(f"bad start line: {line[:80]!r}")
    if parts[0] == "SIP/2.0":
        if not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"bad status: {parts[1]!r}")
        return SipMessage(status=int(parts[1]), reason=parts[2])
    method, uri, version = parts
    if version != "SIP/2.0" or not _TOKEN.match(method) or not uri:
        raise SipParseError(f"bad request line: {line[:80]!r}")
    return SipMessage(method=method.upper(), uri=uri)


def tag_of(header_value: str) -> str | None:
    """The `tag` parameter of a From/To value."""
    match = _TAG.search(header_value)
    return match.group(1) if match else None


def uri_of(header_value: str) -> str:
    """The URI of a From/To/Contact value (`"Bob" <sip:b@h>;tag=x` → `sip:b@h`)."""
    match = _URI_IN_BRACKETS.search(header_value)
    if match:
        return match.group(1).strip()
    return header_value.split(";", 1)[0].strip()


def user_of(header_value: str) -> str:
    """The user part of a From/To value's URI (`<sip:+1555@h>` → `+1555`)."""
    uri = uri_of(header_value)
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "tel":
        return rest.split(";", 1)[0]
    return rest.split("@", 1)[0] if "@" in rest else ""


def new_tag() -> str:
    return secrets.token_hex(6)


def new_branch() -> str:
    """A Via branch with RFC 3261's magic cookie."""
    return "z9hG4bK" + secrets.token_hex(8)


def response_to(
    request: SipMessage, status: int, *, to_tag: str | None = None, reason: str = ""
) -> SipMessage:
    """A response copying Via, From, To (with `to_tag` added when it has none), Call-ID and CSeq."""
    headers: list[tuple[str, str]] = [("Via", via) for via in request.get_all("Via")]
    to = request.get("To") or ""
    if to_tag and tag_of(to) is None:
        to = f"{to};tag={to_tag}"
    headers += [
        ("From", request.get("From") or ""),
        ("To", to),
        ("Call-ID", request.call_id),
        ("CSeq", request.get("CSeq") or ""),
    ]
    headers += [("Record-Route", value) for value in request.get_all("Record-Route")]
    return SipMessage(status=status, reason=reason or REASONS.get(status, "Unknown"), headers=headers)
