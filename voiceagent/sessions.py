"""Database sessions read through a cache of this process's own (`SESSION_ENGINE` without Redis).

Django's "cached_db" engine writes each session to the database and to a cache, and reads it from the
cache, falling back to the database: a signed-in request then costs one query less (the user row is
still read every time, so a deactivated user or a changed password still ends the session at once).
This engine is that, with a process-local memory cache that is not one of settings.CACHES: a cache
shared with the rate-limit counters could evict them, and one replaced in CACHES (Redis) would put
sessions where an outage fails every page and a failed delete leaves a logged-out session usable.

Process-local is only correct for one web process, which is the configuration without Redis
(`manage.py serve`); with REDIS_URL (several processes) settings keep Django's plain "db" engine, so
that a logout in one process is seen by all of them.
"""

from __future__ import annotations

from typing import Final

from django.contrib.sessions.backends import cached_db
from django.core.cache.backends.locmem import LocMemCache

#: Sessions kept in memory; past this LocMem evicts the least recently used third (they are then
#: read from the database again).
MAX_CACHED_SESSIONS: Final = 10_000

_CACHE: Final = LocMemCache(
    "voiceagent-sessions", {"TIMEOUT": None, "OPTIONS": {"MAX_ENTRIES": MAX_CACHED_SESSIONS}}
)


def session_cache() -> LocMemCache:
    """This process's session cache (tests empty it)."""
    return _CACHE


class SessionStore(cached_db.SessionStore):
    """`cached_db.SessionStore` on this process's own memory cache (see the module docstring)."""

    def __init__(self, session_key: str | None = None) -> None:
        super().__init__(session_key)
        self._cache = _CACHE
