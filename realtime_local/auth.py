"""Who may call the engine: its API key, or an ephemeral `ek_` key it issued.

Ephemeral keys are what a browser gets instead of the API key (`POST /v1/realtime/client_secrets`).
Each carries the session config it was minted with and an expiry. Decision (documented in
docs/realtime_local.md): a key authorizes **one** call creation, then it is used up. OpenAI's SDK
docstring says a secret "can be used to create multiple sessions until it expires"; the engine is
stricter because voiceagent mints one key per call and a leaked key should not start more calls.
Expired and used-up keys are remembered until a while after expiry so that a client is told *why*
it is refused.
"""

from __future__ import annotations

import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiohttp import web

from realtime_local.errors import ApiError, unauthorized

EPHEMERAL_PREFIX = "ek_"
#: How long a dead (expired or used) key is remembered, to answer "expired"/"used" instead of "invalid".
_TOMBSTONE_SECONDS = 3600

_MISSING_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization header using "
    "Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
)
KEY_SUBPROTOCOL_PREFIX = "openai-insecure-api-key."


@dataclass
class EphemeralKey:
    value: str
    created_at: int
    expires_at: int
    session: dict[str, Any]
    used: bool = False


@dataclass(frozen=True)
class Credential:
    """The authenticated caller: the engine's API key, or an ephemeral key (with its session)."""

    kind: Literal["api_key", "ephemeral"]
    ephemeral: EphemeralKey | None = None


class EphemeralKeyStore:
    """In-memory `ek_` keys. Single process by design: the engine holds its calls in memory too."""

    def __init__(self, *, max_outstanding: int) -> None:
        self._keys: dict[str, EphemeralKey] = {}
        self._max_outstanding = max_outstanding

    def issue(self, *, session: dict[str, Any], ttl_seconds: int) -> EphemeralKey:
        """Mint a key bound to `session`, valid for `ttl_seconds` from now."""
        now = int(time.time())
        self._prune(now)
        outstanding = sum(1 for key in self._keys.values() if not key.used and key.expires_at > now)
        if outstanding >= self._max_outstanding:
            raise ApiError(
                429,
                f"Too many outstanding client secrets (limit {self._max_outstanding}).",
                type="requests",
                code="rate_limit_exceeded",
            )
        key = EphemeralKey(
            value=EPHEMERAL_PREFIX + secrets.token_urlsafe(24),
            created_at=now,
            expires_at=now + ttl_seconds,
            session=session,
        )
        self._keys[key.value] = key
        return key

    def check(self, value: str) -> EphemeralKey:
        """Return the live key `value` or raise 401 saying whether it is unknown, expired or used."""
        key = self._keys.get(value)
        if key is None:
            raise unauthorized("Invalid ephemeral key provided.", code="invalid_api_key")
        if time.time() >= key.expires_at:
            raise unauthorized("The ephemeral key has expired.", code="ephemeral_key_expired")
        if key.used:
            raise unauthorized(
                "The ephemeral key has already been used to create a call.", code="ephemeral_key_used"
            )
        return key

    def consume(self, key: EphemeralKey) -> None:
        """Mark `key` used (after `check`, before the first await, so two racing requests can't both
        create a call with it)."""
        key.used = True

    def __len__(self) -> int:
        return len(self._keys)

    def _prune(self, now: int) -> None:
        dead = [value for value, key in self._keys.items() if key.expires_at + _TOMBSTONE_SECONDS <= now]
        for value in dead:
            del self._keys[value]


def bearer_token(request: web.Request) -> str | None:
    """The key from `Authorization: Bearer …`, or from the browser-style WebSocket subprotocol
    `openai-insecure-api-key.<key>` (browsers cannot set headers on a WebSocket)."""
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    for protocol in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        protocol = protocol.strip()
        if protocol.startswith(KEY_SUBPROTOCOL_PREFIX) and len(protocol) > len(KEY_SUBPROTOCOL_PREFIX):
            return protocol[len(KEY_SUBPROTOCOL_PREFIX) :]
    return None


def authenticate(
    request: web.Request, *, api_key: str, store: EphemeralKeyStore, allow_ephemeral: bool
) -> Credential:
    """Authenticate a request or raise the API's 401. Ephemeral keys only where `allow_ephemeral`."""
    token = bearer_token(request)
    if token is None:
        raise unauthorized(_MISSING_KEY, code=None)
    if hmac.compare_digest(token.encode(), api_key.encode()):
        return Credential(kind="api_key")
    if token.startswith(EPHEMERAL_PREFIX):
        if not allow_ephemeral:
            raise unauthorized("Ephemeral keys cannot be used for this endpoint; use the API key.")
        return Credential(kind="ephemeral", ephemeral=store.check(token))
    raise unauthorized(f"Incorrect API key provided: {_redact(token)}.")


def _redact(token: str) -> str:
    """Show a key the way OpenAI's 401 does: a few characters at each end."""
    if len(token) <= 8:
        return "*" * len(token)
    return f"{token[:3]}{'*' * (len(token) - 7)}{token[-4:]}"
