"""One realtime call of the local engine: the object engine-api's routes, registry and sideband use.

A `LocalCall` owns everything of one call: its session state machine (`session.Session`), its WebRTC
peer (`media.MediaPeer`) when there is one, and the observers attached through the sideband. Every
server event goes out through `_emit`, which stamps the `event_id` and fans the event out in order to
the data channel and to each attached sink. Sinks are decoupled by a bounded queue each, so a slow
sideband socket can never stall the media loop: when its queue is full it is dropped.

Lifecycle: WebRTC calls start `active`; SIP-style calls start `incoming` and become `active` on
`accept`. `hangup` (and every other way of ending) is idempotent and cancels the call's tasks, closes
the peer and sets `ended`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from realtime_local import event_log
from realtime_local.events import new_event_id
from realtime_local.session import Session
from realtime_local.speech.base import Pcm16

if TYPE_CHECKING:
    from realtime_local.media import MediaPeer, OutboundAudioTrack
    from realtime_local.pipeline import SpeechStack

logger = logging.getLogger(__name__)

ServerEvent = dict[str, Any]

#: Events buffered per attached sink before that sink is considered too slow and dropped.
SINK_QUEUE_SIZE = 2000
#: Numbers the attached sinks in the event log (realtime_local.event_log).
_SINK_NUMBERS = itertools.count(1)


class EventSink(Protocol):
    """A sideband observer of a call's server events."""

    async def send_event(self, event: ServerEvent) -> None:
        """Deliver one event. Must not raise; a sink that falls behind is dropped by the call."""
        ...


class CallStateError(Exception):
    """The operation does not fit the call's state (e.g. accept on an active call)."""


@dataclass
class EngineRuntime:
    """What every call shares; built once at engine start by the app factory."""

    speech: SpeechStack | None = None
    """The loaded speech stages; None means text-only operation (no VAD, STT or TTS)."""
    ice_servers: list[str] = field(default_factory=list)
    """ICE server URLs. Empty by default: aiortc's implicit public STUN server stalls offline."""
    loopback_candidates: bool = False
    """Offer 127.0.0.1 host candidates (aioice skips loopback); for loopback-only namespaces."""


class _SinkPump:
    """Delivers events to one sink from a bounded queue, in order, off the emitter's path."""

    def __init__(self, sink: EventSink, on_overflow: Callable[[_SinkPump], None]) -> None:
        self.sink = sink
        self.number = next(_SINK_NUMBERS)
        self._queue: asyncio.Queue[ServerEvent | None] = asyncio.Queue(SINK_QUEUE_SIZE)
        self._on_overflow = on_overflow
        self._task = asyncio.get_running_loop().create_task(self._run())

    def offer(self, event: ServerEvent) -> None:
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            logger.warning("dropping slow event sink")
            self._on_overflow(self)

    async def _run(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                await self.sink.send_event(event)
            except Exception:  # a sink must not raise; one that does is simply dropped
                logger.exception("event sink raised; dropping it")
                self._on_overflow(self)
                return

    def close(self) -> None:
        self._task.cancel()


class LocalCall:
    """A realtime call: session state, media and observers. Create with `start_webrtc_call` or
    `new_incoming_call`."""

    def __init__(
        self,
        *,
        call_id: str,
        kind: Literal["webrtc", "sip"],
        runtime: EngineRuntime,
        session: dict[str, Any],
        state: Literal["incoming", "active"],
        sip_headers: list[dict[str, str]] | None = None,
    ) -> None:
        self.id = call_id
        self.kind: Literal["webrtc", "sip"] = kind
        self.state: Literal["incoming", "active", "ended"] = state
        self.runtime = runtime
        self.sip_headers = sip_headers or []
        self.ended = asyncio.Event()
        self.end_reason: str | None = None
        self.accepted = asyncio.Event()
        """Set by `accept`: the SIP front door answers the INVITE (200 OK) when it is."""
        self.refer_target: str | None = None
        """The `target_uri` of a `refer`, for the SIP front door's REFER to the caller."""
        self.last_activity = time.monotonic()
        self.peer: MediaPeer | None = None
        self._pumps: list[_SinkPump] = []
        self._channel_send: Callable[[ServerEvent], None] | None = None
        self._channel_backlog: list[ServerEvent] = []
        self._session = Session(
            config=session, speech=runtime.speech, emit=self._emit, touch=self._touch, call_id=call_id
        )

    # ---- what engine-api uses -------------------------------------------------------------------

    @property
    def session(self) -> dict[str, Any]:
        """The current session config (GA shape), as last updated by `session.update`."""
        return self._session.config

    def attach(self, sink: EventSink, *, label: str = "") -> Callable[[], None]:
        """Attach a sideband observer: it gets every server event from now on (no replay)."""
        pump = _SinkPump(sink, self._drop_pump)
        self._pumps.append(pump)
        if event_log.enabled():
            event_log.write({"kind": "attach", "call": self.id, "sink": pump.number, "label": label})

        def detach() -> None:
            self._drop_pump(pump)

        return detach

    async def handle_client_event(self, event: dict[str, Any]) -> None:
        """Handle one client event from the data channel or a sideband socket. Invalid events
        produce an `error` server event; nothing a client sends ends the call."""
        self._touch()
        if self.state == "ended":
            return
        await self._session.handle_client_event(event)

    async def accept(self, session: dict[str, Any]) -> None:
        """Answer an incoming SIP-style call with this session config."""
        if self.state != "incoming":
            raise CallStateError(f"call {self.id} is {self.state}, not incoming")
        self.state = "active"
        self._touch()
        self._session.replace_config(session)
        self._session.start()
        self.accepted.set()

    async def reject(self, status_code: int = 603) -> None:
        """Refuse an incoming SIP-style call (`status_code` is the SIP status)."""
        if self.state != "incoming":
            raise CallStateError(f"call {self.id} is {self.state}, not incoming")
        await self._end(f"rejected:{status_code}")

    async def refer(self, target_uri: str) -> None:
        """Transfer an active call to `target_uri`; the call ends here with reason `transferred`."""
        if self.state != "active":
            raise CallStateError(f"call {self.id} is {self.state}, not active")
        logger.info("call %s transferred", self.id)
        self.refer_target = target_uri
        await self._end("transferred")

    async def hangup(self, reason: str = "hangup") -> None:
        """End the call (idempotent): cancels its tasks, closes the peer, sets `ended`."""
        await self._end(reason)

    # ---- media bridging (SIP-style calls; WebRTC calls use media.MediaPeer) ------------------------

    def feed_input_audio(self, pcm16k: Pcm16) -> None:
        """Caller audio for this call, 16 kHz mono int16 (e.g. decoded G.711 from an RTP bridge)."""
        self._touch()
        self._session.feed_input_audio(pcm16k)

    def open_audio_output(self) -> OutboundAudioTrack:
        """The assistant's voice for a non-WebRTC bridge: `await track.recv()` returns paced 20 ms
        frames of 48 kHz mono (silence when nothing is said); the session emits the
        output_audio_buffer events and truncates on barge-in from what was read."""
        from realtime_local.media import OutboundAudioTrack

        track = OutboundAudioTrack(
            on_started=self._session.on_output_started, on_stopped=self._session.on_output_stopped
        )
        self._session.audio_out = track
        return track

    # ---- internals --------------------------------------------------------------------------------

    def start_session(self) -> None:
        """Media is up: emit `session.created` (once) and start listening."""
        self._session.start()

    def bind_data_channel(self, send: Callable[[ServerEvent], None]) -> None:
        """The data channel opened: send `session.created` first, then anything emitted before."""
        self._channel_send = send
        backlog, self._channel_backlog = self._channel_backlog, []
        self._session.start()
        for event in backlog:
            send(event)

    def _emit(self, event: ServerEvent) -> None:
        """Stamp and fan out one server event. Synchronous, so the order of calls is the order seen."""
        if self.state == "ended" and event.get("type") != "error":
            return
        event = {"event_id": new_event_id(), **event}
        self.last_activity = time.monotonic()
        if self._channel_send is not None:
            try:
                self._channel_send(event)
            except Exception:  # a closing channel must not break the session loop
                logger.debug("data channel send failed", exc_info=True)
        elif self.kind == "webrtc" and len(self._channel_backlog) < 1000:
            self._channel_backlog.append(event)
        for pump in list(self._pumps):
            pump.offer(event)
        if event_log.enabled():
            event_log.write(
                {
                    "kind": "event",
                    "call": self.id,
                    "event_id": event["event_id"],
                    "type": event.get("type"),
                    "sinks": [pump.number for pump in self._pumps],
                }
            )

    def _touch(self) -> None:
        self.last_activity = time.monotonic()

    def _drop_pump(self, pump: _SinkPump) -> None:
        if pump in self._pumps:
            self._pumps.remove(pump)
            pump.close()
            if event_log.enabled():
                event_log.write({"kind": "detach", "call": self.id, "sink": pump.number})

    async def _end(self, reason: str) -> None:
        if self.state == "ended":
            return
        self.state = "ended"
        self.end_reason = reason
        try:
            await self._session.close()
            if self.peer is not None:
                await self.peer.close()
        finally:
            for pump in list(self._pumps):
                self._drop_pump(pump)
            self.ended.set()

    def peer_closed(self) -> None:
        """Called by the media peer when the remote side goes away (ICE failed, DTLS closed)."""
        if self.state != "ended":
            asyncio.get_running_loop().create_task(self._end("peer_closed"))


async def start_webrtc_call(
    *, call_id: str, offer_sdp: str, session: dict[str, Any], runtime: EngineRuntime
) -> tuple[LocalCall, str]:
    """Answer a browser's SDP offer. Returns the active call and the SDP answer to send back.

    `session.created` goes out on the `oai-events` data channel as soon as it opens.
    """
    from realtime_local.media import MediaPeer

    call = LocalCall(call_id=call_id, kind="webrtc", runtime=runtime, session=session, state="active")
    peer = MediaPeer(call=call, session=call._session, runtime=runtime)
    call.peer = peer
    try:
        answer = await peer.answer(offer_sdp)
    except BaseException:
        await call.hangup("setup_failed")
        raise
    return call, answer


def new_incoming_call(
    *, call_id: str, runtime: EngineRuntime, sip_headers: list[dict[str, str]]
) -> LocalCall:
    """A SIP-style call waiting for `accept` or `reject`. A media bridge (the SIP side) feeds caller
    audio with `LocalCall.feed_input_audio` and reads the reply from `LocalCall.open_audio_output()`."""
    call = LocalCall(
        call_id=call_id, kind="sip", runtime=runtime, session={}, state="incoming", sip_headers=sip_headers
    )
    return call
