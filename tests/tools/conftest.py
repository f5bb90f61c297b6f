"""Fixtures of the tool tests: the web tests' real local engine, observer worker and live calls.

Other helpers may add fixtures here by appending only.
"""

from __future__ import annotations

from tests.web.conftest import (
    channel_layer,
    close_async_orm_connections,
    default_agent,
    local_engine,
    make_live_call,
    observer_worker,
    start_engine,
)

__all__ = [
    "channel_layer",
    "close_async_orm_connections",
    "default_agent",
    "local_engine",
    "make_live_call",
    "observer_worker",
    "start_engine",
]
