"""The aiortc side of a call (filled in next commits)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from realtime_local.call import EngineRuntime, LocalCall
    from realtime_local.session import Session


class MediaPeer:
    """One RTCPeerConnection answering a browser's offer."""

    def __init__(self, *, call: LocalCall, session: Session, runtime: EngineRuntime) -> None:
        self.call = call
        self.session = session
        self.runtime = runtime

    async def answer(self, offer_sdp: str) -> str:
        raise NotImplementedError

    async def close(self) -> None:
        return None
