"""The SIP UAS on UDP: INVITE → signed webhook → accept/reject through the API → RTP bridge.

One `Dialog` per SIP Call-ID. An INVITE gets 100 Trying at once; a `LocalCall` is created exactly as
`POST /v1/realtime/_local/incoming_calls` creates one (a registry slot, `new_incoming_call`, the signed
`realtime.call.incoming` webhook whose `sip_headers` are the INVITE's From, To, Call-ID and the rest),
then 180 Ringing. The dialog then waits on the call: `accept` → 200 OK with our SDP answer (retransmitted
until ACK, RFC 3261 timer G) and RTP both ways; `reject` → the status given; the registry's accept
timeout (or any other end before answer) → 480 Temporarily Unavailable; CANCEL → 487. Once answered,
a BYE from the caller hangs the call up (`end_reason` `caller_hangup`); a call ended through the API
(hangup, idle timeout, shutdown) sends BYE; `refer` sends REFER with `Refer-To: <target>` in the dialog
and, on its 202 (or NOTIFY, or after `REFER_TIMEOUT`), BYE — the engine ended the call as
`transferred` already when `refer` was called.

Retransmitted requests are answered from the transaction's last response (same Call-ID and CSeq), so
an INVITE sent twice creates one call. Everything is bounded: datagram size (`message`), live dialogs
(`max_dialogs`), calls (the engine registry → 486 Busy Here when full), and every wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from realtime_local.call import LocalCall, new_incoming_call
from realtime_local.errors import ApiError
from realtime_local.events import new_rtc_call_id
from realtime_local.sip import message as sipmsg
from realtime_local.sip.message import SipMessage, SipParseError
from realtime_local.sip.rtp import RtpBridge
from realtime_local.sip.sdp import AudioOffer, SdpError, build_answer, parse_offer

if TYPE_CHECKING:
    from realtime_local.app import Engine

logger = logging.getLogger(__name__)

T1 = 0.5
"""RFC 3261 round-trip estimate: first retransmission interval."""
T2 = 4.0
"""RFC 3261 cap on the retransmission interval of 200 OK and non-INVITE requests."""
ACK_TIMEOUT = 32.0
"""A 200 OK not ACKed within this (64*T1) ends the call (`end_reason` `no_ack`)."""
REQUEST_TIMEOUT = 4.0
"""How long our BYE/REFER waits for a final response (shorter than RFC's 32 s: the call is over)."""
REFER_TIMEOUT = 4.0
"""How long the REFER waits for 202/NOTIFY before the dialog is closed with BYE anyway."""
LINGER = 8.0
"""A finished dialog is kept this long to answer retransmissions from its last response."""
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, NOTIFY, REFER"
_MAX_WEBHOOK_HEADERS = 64
_NOT_FORWARDED = {"Via", "Content-Length", "Content-Type", "Max-Forwards", "Record-Route", "Route", "CSeq"}


class SipBindError(OSError):
    """The SIP port cannot be bound (taken, or not permitted below 1024)."""


@dataclass(frozen=True)
class CallFigures:
    """What one answered call measured, kept after it ends."""

    call_id: str
    end_reason: str | None
    invite_to_ok_s: float | None
    rtp_in: int
    rtp_out: int
    jitter_ms: float


@dataclass
class Dialog:
    """One incoming call's SIP state."""

    sip_call_id: str
    invite: SipMessage
    remote: tuple[str, int]
    offer: AudioOffer
    to_tag: str = field(default_factory=sipmsg.new_tag)
    state: Literal["proceeding", "answered", "confirmed", "terminated"] = "proceeding"
    call: LocalCall | None = None
    rtp: RtpBridge | None = None
    last_response: bytes | None = None
    answer_sdp: bytes = b""
    acked: asyncio.Event = field(default_factory=asyncio.Event)
    local_cseq: int = 0
    ended_by_caller: bool = False
    refer_answered: asyncio.Event = field(default_factory=asyncio.Event)
    """Set by a NOTIFY in the dialog (the transferee reports the transfer's progress)."""
    task: asyncio.Task[None] | None = None
    invite_received: float = field(default_factory=time.monotonic)
    answered_after: float | None = None
    """Seconds from INVITE to our 200 OK (for the report and the bench)."""

    @property
    def invite_cseq(self) -> int:
        return self.invite.cseq[0]


class SipServer(asyncio.DatagramProtocol):
    """The engine's SIP UAS on one UDP socket. `await start()`, finally `await close()`."""

    def __init__(self, engine: Engine, *, host: str, port: int, max_dialogs: int = 64) -> None:
        self.engine = engine
        self.host = host
        self.port = port
        self.max_dialogs = max_dialogs
        self.dialogs: dict[str, Dialog] = {}
        self.transport: asyncio.DatagramTransport | None = None
        self._pending: dict[tuple[str, int, str], asyncio.Future[SipMessage]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        #: Answered calls' figures, newest last (the last 100); for tests and bench/sip_answer.py.
        self.history: list[CallFigures] = []

    # ---- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Bind the UDP socket; raises `SipBindError` with a message for humans."""
        loop = asyncio.get_running_loop()
        try:
            await loop.create_datagram_endpoint(lambda: self, local_addr=(self.host, self.port))
        except OSError as exc:
            hint = " (ports below 1024 need privileges)" if 0 < self.port < 1024 else ""
            raise SipBindError(
                exc.errno,
                f"cannot listen for SIP on udp {self.host}:{self.port}: {exc.strerror or exc}{hint}; "
                "choose another with --sip-port or disable SIP with --no-sip",
            ) from exc
        assert self.transport is not None
        self.port = int(self.transport.get_extra_info("sockname")[1])
        logger.info("SIP: listening on udp %s:%d", self.host, self.port)

    async def close(self) -> None:
        """Stop answering; end dialogs' tasks and RTP sockets (calls are hung up by the registry)."""
        self._closing = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for dialog in list(self.dialogs.values()):
            if dialog.rtp is not None:
                await dialog.rtp.close()
        self.dialogs.clear()
        if self.transport is not None:
            self.transport.close()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # selector transports aren't subclasses

    # ---- receiving --------------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._closing or not data.strip():  # keep-alive CRLFs
            return
        try:
            msg = sipmsg.parse(data)
        except SipParseError as exc:
            logger.debug("SIP: dropping unparseable datagram from %s: %s", addr, exc)
            return
        try:
            if msg.is_request:
                self._on_request(msg, addr)
            else:
                self._on_response(msg)
        except SipParseError as exc:
            logger.debug("SIP: dropping %s from %s: %s", msg.method or msg.status, addr, exc)
        except Exception:  # one bad message must never take the socket down
            logger.exception("SIP: handling a message from %s failed", addr)

    def _on_request(self, msg: SipMessage, addr: tuple[str, int]) -> None:
        method = msg.method
        dialog = self.dialogs.get(msg.call_id)
        if method == "INVITE":
            self._on_invite(msg, addr, dialog)
        elif method == "ACK":
            if dialog is not None and dialog.state in ("answered", "confirmed"):
                dialog.state = "confirmed"
                dialog.acked.set()
        elif method == "CANCEL":
            self._on_cancel(msg, addr, dialog)
        elif method == "BYE":
            if dialog is None or dialog.state == "proceeding":
                self._respond(msg, 481, addr)
                return
            self._respond(msg, 200, addr, to_tag=dialog.to_tag)
            if dialog.state != "terminated":
                dialog.ended_by_caller = True
                dialog.state = "terminated"
                if dialog.call is not None:
                    self._spawn(dialog.call.hangup("caller_hangup"))
        elif method == "OPTIONS":
            response = sipmsg.response_to(msg, 200, to_tag=sipmsg.new_tag())
            response.headers += [("Allow", ALLOW), ("Accept", "application/sdp")]
            self._send(response.encode(), addr)
        elif method == "NOTIFY":
            self._respond(msg, 200 if dialog is not None else 481, addr)
            if dialog is not None:
                dialog.refer_answered.set()
        else:
            self._respond(msg, 501, addr)

    def _on_invite(self, msg: SipMessage, addr: tuple[str, int], dialog: Dialog | None) -> None:
        if dialog is not None:
            if msg.cseq[0] == dialog.invite_cseq and dialog.last_response is not None:
                self._send(dialog.last_response, addr)  # a retransmission: same answer again
            elif msg.cseq[0] > dialog.invite_cseq and dialog.state == "confirmed" and dialog.answer_sdp:
                # A re-INVITE (session refresh, hold): answered with the same media, which stays as is.
                ok = sipmsg.response_to(msg, 200, to_tag=dialog.to_tag)
                ok.headers += [("Contact", self._contact()), ("Content-Type", "application/sdp")]
                ok.body = dialog.answer_sdp
                self._send(ok.encode(), addr)
            return
        if len(self.dialogs) >= self.max_dialogs:
            self._respond(msg, 503, addr, to_tag=sipmsg.new_tag())
            return
        try:
            offer = parse_offer(msg.body)
        except SdpError as exc:
            logger.info("SIP: INVITE %s refused: %s", msg.call_id, exc)
            self._respond(msg, 488, addr, to_tag=sipmsg.new_tag())
            return
        dialog = Dialog(sip_call_id=msg.call_id, invite=msg, remote=addr, offer=offer)
        engine = self.engine
        if not engine.ready.is_set() or engine.speech_status == "failed":
            self._final(dialog, 503)
            self._linger(dialog)
            return
        self._send(sipmsg.response_to(msg, 100).encode(), addr)
        try:
            with engine.calls.reserve():
                call = new_incoming_call(
                    call_id=new_rtc_call_id(), runtime=engine.runtime, sip_headers=webhook_headers(msg)
                )
                engine.calls.add(call)
        except ApiError:
            self._final(dialog, 486)
            self._linger(dialog)
            return
        dialog.call = call
        self.dialogs[msg.call_id] = dialog
        delivery = engine.sender.send(
            "realtime.call.incoming", {"call_id": call.id, "sip_headers": call.sip_headers}
        )
        logger.info("SIP: INVITE %s → call %s (webhook %s)", msg.call_id, call.id, delivery.event_id)
        ringing = sipmsg.response_to(msg, 180, to_tag=dialog.to_tag)
        ringing.headers.append(("Contact", self._contact()))
        dialog.last_response = ringing.encode()
        self._send(dialog.last_response, addr)
        dialog.task = self._spawn(self._run_dialog(dialog, call))

    def _on_cancel(self, msg: SipMessage, addr: tuple[str, int], dialog: Dialog | None) -> None:
        if dialog is None or msg.cseq[0] != dialog.invite_cseq:
            self._respond(msg, 481, addr)
            return
        self._respond(msg, 200, addr, to_tag=dialog.to_tag)
        if dialog.state == "proceeding" and dialog.call is not None:
            self._final(dialog, 487)
            dialog.state = "terminated"
            self._spawn(dialog.call.hangup("caller_cancel"))

    def _on_response(self, msg: SipMessage) -> None:
        number, method = msg.cseq
        if msg.status is not None and msg.status < 200:
            return
        future = self._pending.get((msg.call_id, number, method))
        if future is not None and not future.done():
            future.set_result(msg)

    # ---- one dialog -------------------------------------------------------------------------------

    async def _run_dialog(self, dialog: Dialog, call: LocalCall) -> None:
        try:
            accepted = asyncio.ensure_future(call.accepted.wait())
            ended = asyncio.ensure_future(call.ended.wait())
            await asyncio.wait({accepted, ended}, return_when=asyncio.FIRST_COMPLETED)
            accepted.cancel()
            ended.cancel()
            if not call.accepted.is_set():
                if dialog.state == "proceeding":
                    self._final(dialog, _status_for(call.end_reason))
                dialog.state = "terminated"
                return
            if dialog.state != "proceeding":  # cancelled in the same instant
                await call.hangup("caller_cancel")
                return
            await self._answer(dialog, call)
            await call.ended.wait()
            await self._finish(dialog, call)
        finally:
            if dialog.rtp is not None:
                await dialog.rtp.close()
                self._record(dialog)
            dialog.state = "terminated"
            self._linger(dialog)

    async def _answer(self, dialog: Dialog, call: LocalCall) -> None:
        rtp = await RtpBridge.open(
            host=self.host,
            remote=(dialog.offer.host, dialog.offer.port),
            payload_type=dialog.offer.payload_type,
        )
        dialog.rtp = rtp
        ok = sipmsg.response_to(dialog.invite, 200, to_tag=dialog.to_tag)
        ok.headers += [("Contact", self._contact()), ("Allow", ALLOW), ("Content-Type", "application/sdp")]
        ok.body = dialog.answer_sdp = build_answer(
            host=self.host, port=rtp.port, payload_type=dialog.offer.payload_type
        )
        dialog.last_response = ok.encode()
        dialog.state = "answered"
        self._send(dialog.last_response, dialog.remote)
        dialog.answered_after = time.monotonic() - dialog.invite_received
        rtp.start(call)
        self._spawn(self._retransmit_ok(dialog, call))

    async def _retransmit_ok(self, dialog: Dialog, call: LocalCall) -> None:
        interval, waited = T1, 0.0
        while waited < ACK_TIMEOUT and dialog.state == "answered" and call.state != "ended":
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(dialog.acked.wait(), interval)
                return
            waited += interval
            interval = min(interval * 2, T2)
            if dialog.state == "answered" and dialog.last_response is not None:
                self._send(dialog.last_response, dialog.remote)
        if not dialog.acked.is_set() and call.state != "ended":
            logger.warning("SIP: no ACK for call %s; hanging up", call.id)
            await call.hangup("no_ack")

    async def _finish(self, dialog: Dialog, call: LocalCall) -> None:
        """The call ended on the engine side: tell the caller (REFER then BYE, or BYE)."""
        if dialog.ended_by_caller or self._closing:
            if self._closing and not dialog.ended_by_caller:
                self._send(self._request(dialog, "BYE").encode(), dialog.remote)
            return
        if call.end_reason == "transferred" and call.refer_target:
            target = call.refer_target
            refer = self._request(
                dialog, "REFER", [("Refer-To", f"<{target}>"), ("Referred-By", self._contact())]
            )
            response = await self._transact(dialog, refer)
            if response is not None and response.status is not None and 200 <= response.status < 300:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(dialog.refer_answered.wait(), REFER_TIMEOUT)
            logger.info(
                "SIP: call %s referred to %s (%s)",
                call.id,
                target,
                response.status if response else "no answer",
            )
        await self._transact(dialog, self._request(dialog, "BYE"))

    # ---- sending ----------------------------------------------------------------------------------

    def _request(self, dialog: Dialog, method: str, extra: list[tuple[str, str]] | None = None) -> SipMessage:
        """An in-dialog request from us (the UAS side) to the caller."""
        dialog.local_cseq += 1
        invite = dialog.invite
        contact = invite.get("Contact")
        target = sipmsg.uri_of(contact) if contact else sipmsg.uri_of(invite.get("From") or "")
        headers = [
            ("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={sipmsg.new_branch()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{invite.get('To')};tag={dialog.to_tag}"),
            ("To", invite.get("From") or ""),
            ("Call-ID", dialog.sip_call_id),
            ("CSeq", f"{dialog.local_cseq} {method}"),
            ("Contact", self._contact()),
        ]
        headers += extra or []
        return SipMessage(method=method, uri=target, headers=headers)

    async def _transact(self, dialog: Dialog, request: SipMessage) -> SipMessage | None:
        """Send a non-INVITE request, retransmitting (timer E) until a final response or timeout."""
        number, method = request.cseq
        key = (dialog.sip_call_id, number, method)
        future: asyncio.Future[SipMessage] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        data = request.encode()
        deadline = time.monotonic() + REQUEST_TIMEOUT
        interval = T1
        try:
            while True:
                self._send(data, dialog.remote)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), min(interval, remaining))
                interval = min(interval * 2, T2)
        finally:
            self._pending.pop(key, None)

    def _final(self, dialog: Dialog, status: int) -> None:
        response = sipmsg.response_to(dialog.invite, status, to_tag=dialog.to_tag)
        dialog.last_response = response.encode()
        self._send(dialog.last_response, dialog.remote)

    def _respond(
        self, msg: SipMessage, status: int, addr: tuple[str, int], *, to_tag: str | None = None
    ) -> None:
        self._send(sipmsg.response_to(msg, status, to_tag=to_tag).encode(), addr)

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    def _contact(self) -> str:
        return f"<sip:realtime_local@{self.host}:{self.port}>"

    def _spawn(self, coro: object) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _linger(self, dialog: Dialog) -> None:
        """Keep a finished dialog a while for retransmissions, then forget it."""
        self.dialogs[dialog.sip_call_id] = dialog

        def forget() -> None:
            if self.dialogs.get(dialog.sip_call_id) is dialog:
                del self.dialogs[dialog.sip_call_id]

        asyncio.get_running_loop().call_later(LINGER, forget)

    def _record(self, dialog: Dialog) -> None:
        assert dialog.rtp is not None
        stats = dialog.rtp.stats
        self.history.append(
            CallFigures(
                call_id=dialog.call.id if dialog.call else "",
                end_reason=dialog.call.end_reason if dialog.call else None,
                invite_to_ok_s=dialog.answered_after,
                rtp_in=stats.packets_in,
                rtp_out=stats.packets_out,
                jitter_ms=stats.jitter_ms,
            )
        )
        del self.history[:-100]


def _status_for(end_reason: str | None) -> int:
    """The final response for a call that ended before it was answered."""
    if end_reason and end_reason.startswith("rejected:"):
        code = end_reason.removeprefix("rejected:")
        if code.isdigit() and 400 <= int(code) < 700:
            return int(code)
    if end_reason == "caller_cancel":
        return 487
    return 480


def webhook_headers(invite: SipMessage) -> list[dict[str, str]]:
    """The INVITE's headers for the webhook's `sip_headers`: From, To, Call-ID first, then the rest
    (transport-only headers left out), at most 64."""
    first = [{"name": name, "value": invite.get(name) or ""} for name in ("From", "To", "Call-ID")]
    rest = [
        {"name": name, "value": value}
        for name, value in invite.headers
        if name not in _NOT_FORWARDED and name not in ("From", "To", "Call-ID")
    ]
    return (first + rest)[:_MAX_WEBHOOK_HEADERS]
