"""The Realtime API's REST surface that we use, behind one small async client.

This module alone knows the wire format (see /work/shared/protocol.md and docs/web-calls.md): the
multipart create-call request, the JSON bodies of client secrets and call control, the error object,
the `Location` header that names a call, and the sideband WebSocket URL. A second surface (OpenAI's
newer "GPT-Live" API) can be added as another adapter with the same methods without touching views.

Errors are values the caller can act on:
- `RealtimeError`: the API answered with a refusal (4xx); carries its status, code and message.
- `RealtimeTimeout`: no answer within `REALTIME_HTTP_TIMEOUT` (504 at the edge).
- `RealtimeUnavailable`: connection failed, a 5xx, or an answer we cannot use (502 at the edge).

Provider call ids are checked against `PROVIDER_CALL_ID_RE` before any request and URL-encoded in
every path, so an id like `..%2F..%2Fclient_secrets` can never reach another endpoint with our key.
SDP bodies and session contents are never logged (they identify people): logs carry ids only.
Upstream error text is shown to users and stored on the call, so credentials in it are redacted first
(OpenAI's 401 quotes the key it was sent; a misbehaving proxy may echo our Authorization header).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import ssl
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Self
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)

#: A provider call id as the API issues them (`rtc_…`, SIP calls included). Checked with fullmatch.
PROVIDER_CALL_ID_RE: Final = re.compile(r"rtc_[A-Za-z0-9_-]{6,64}")

#: The most we read of any upstream answer; an SDP answer is a few KiB.
MAX_RESPONSE_BYTES: Final = 256 * 1024
#: How much of an upstream error message we carry (and show); the rest is cut.
MAX_MESSAGE_CHARS: Final = 300


class RealtimeError(Exception):
    """The Realtime API refused a request (or could not be used); `status` is its HTTP status if any."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        retry_after: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        #: Seconds the API asked us to wait (its `Retry-After` header on a 429/503), if it said.
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status!r}, code={self.code!r}, message={self.message!r})"


class RealtimeTimeout(RealtimeError):
    """The Realtime API did not answer within the configured timeout."""


class RealtimeUnavailable(RealtimeError):
    """The Realtime API could not be reached, failed (5xx), or answered something unusable."""


class InvalidProviderCallId(ValueError):
    """A provider call id that does not match `PROVIDER_CALL_ID_RE`; never sent upstream."""


@dataclass(frozen=True)
class CreatedCall:
    """A call the API created for an SDP offer."""

    provider_call_id: str
    answer_sdp: str


@dataclass(frozen=True)
class ClientSecret:
    """An ephemeral key (`ek_…`) for one session; `expires_at` in Unix seconds."""

    value: str
    expires_at: int


def is_valid_provider_call_id(value: object) -> bool:
    """True when `value` is a string shaped like a provider call id."""
    return isinstance(value, str) and PROVIDER_CALL_ID_RE.fullmatch(value) is not None


def check_provider_call_id(value: object) -> str:
    """`value` if it is a valid provider call id, else `InvalidProviderCallId`."""
    if not is_valid_provider_call_id(value):
        raise InvalidProviderCallId(
            "Not a valid provider call id (expected rtc_ followed by 6-64 of A-Z a-z 0-9 _ -)."
        )
    assert isinstance(value, str)
    return value


def looks_like_sdp(text: str) -> bool:
    """A session description starts with its version line."""
    return text.lstrip().startswith("v=0")


#: Credentials as they appear in text: API, ephemeral and restricted keys (also OpenAI's masked
#: `sk-abc***xyz` form), webhook secrets, and bearer tokens.
_CREDENTIAL_RE: Final = re.compile(
    r"\b(?:sk|ek|rk)[-_][A-Za-z0-9*_.-]{4,}|\bwhsec_[A-Za-z0-9+/=]+|\b(?i:bearer)\s+\S+"
)
REDACTED: Final = "[redacted]"


def redact_credentials(text: str) -> str:
    """`text` without our configured keys (whatever their shape) or anything that looks like one."""
    for secret in (settings.REALTIME_API_KEY, settings.OPENAI_API_KEY, settings.OPENAI_SIGNING_SECRET):
        if secret and len(secret) >= 6:
            text = text.replace(secret, REDACTED)
    return _CREDENTIAL_RE.sub(REDACTED, text)


def _clip(text: str) -> str:
    """Upstream text made safe to carry in our own error messages: no credentials, one line, bounded."""
    flat = " ".join(redact_credentials(text).split())
    return flat if len(flat) <= MAX_MESSAGE_CHARS else flat[: MAX_MESSAGE_CHARS - 1] + "…"


def _retry_after(headers: httpx.Headers) -> int | None:
    """The `Retry-After` delay in whole seconds (HTTP dates are ignored: the API sends seconds)."""
    raw = headers.get("retry-after", "").strip()
    if not raw:
        return None
    try:
        return max(0, min(3600, round(float(raw))))
    except ValueError:
        return None


def _upstream_error(status: int, body: bytes, *, retry_after: int | None = None) -> RealtimeError:
    """The typed error for a non-2xx answer, with the API's own message and code when it sent them."""
    message: str | None = None
    code: str | None = None
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and isinstance(parsed.get("error"), dict):
        error = parsed["error"]
        if isinstance(error.get("message"), str) and error["message"]:
            message = _clip(error["message"])
        raw_code = error.get("code") or error.get("type")
        if isinstance(raw_code, str):
            code = _clip(raw_code)
    if status >= 500:
        detail = f": {message}" if message else ""
        return RealtimeUnavailable(
            f"The Realtime API failed with HTTP {status}{detail}",
            status=status,
            code=code or "upstream_error",
            retry_after=retry_after,
        )
    if message is None:
        message = f"The Realtime API refused the request with HTTP {status}."
    return RealtimeError(message, status=status, code=code, retry_after=retry_after)


@dataclass(frozen=True)
class _Answer:
    """An upstream answer with its body read (bounded)."""

    status: int
    headers: httpx.Headers
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", errors="replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


@functools.cache
def _tls_context() -> ssl.SSLContext:
    """One TLS context per process: building one loads the CA bundle (~45 ms on our 2-core box),
    which would otherwise be paid by every `/rtc` request. Contexts are safe to share across loops."""
    return httpx.create_ssl_context()


#: Idle kept-alive connections to the API, per loop (a burst of set-ups opens more; these stay).
KEEPALIVE_CONNECTIONS: Final = 32
#: Seconds an idle kept-alive connection stays open (servers close theirs after a while anyway).
KEEPALIVE_EXPIRY_S: Final = 20.0
#: HTTP clients (connection pools) per loop. httpcore 1.0's pool (httpx's) does work quadratic in
#: its number of connections each time a request starts or ends (its keep-alive bookkeeping scans
#: every connection once per idle connection, and polls each idle socket: encode/httpcore#1035):
#: with 50 set-ups at once in one pool that was ~10 % of the web process's CPU. Spread over this
#: many pools, least busy first, no pool holds more than a few connections, while requests one at
#: a time all take the first pool and reuse its kept-alive connection as before.
POOL_SHARDS: Final = 8


class _LoopClients:
    """One loop's HTTP clients for the Realtime API and the requests each has in flight."""

    def __init__(self) -> None:
        limits = httpx.Limits(
            max_connections=None,
            max_keepalive_connections=max(1, KEEPALIVE_CONNECTIONS // POOL_SHARDS),
            keepalive_expiry=KEEPALIVE_EXPIRY_S,
        )
        self.clients = [
            httpx.AsyncClient(follow_redirects=False, trust_env=False, verify=_tls_context(), limits=limits)
            for _ in range(POOL_SHARDS)
        ]
        self.in_flight = [0] * POOL_SHARDS

    @property
    def is_closed(self) -> bool:
        return any(client.is_closed for client in self.clients)

    def least_busy(self) -> int:
        """The index of the client with the fewest requests in flight (the first of equals)."""
        return min(range(len(self.clients)), key=self.in_flight.__getitem__)

    @contextlib.contextmanager
    def lease(self) -> Iterator[httpx.AsyncClient]:
        """The least busy client, counted as busy with one more request until the block ends."""
        index = self.least_busy()
        self.in_flight[index] += 1
        try:
            yield self.clients[index]
        finally:
            self.in_flight[index] -= 1

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()


#: Each event loop's clients, shared by every `RealtimeClient` on it (see `loop_clients`).
_SHARED_CLIENTS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClients] = (
    weakref.WeakKeyDictionary()
)


def loop_clients() -> _LoopClients:
    """The running loop's HTTP clients for the Realtime API, made on first use.

    Built without a base URL, key or timeout (each request carries its own, so settings changes and
    clients for other keys share them): what they keep is their connection pools, so set-ups reuse
    kept-alive connections (no TCP, and against OpenAI no TLS, handshake per call) and nobody builds
    and tears down a client per request (~1.2 ms of CPU each on our 2-core box). An
    `httpx.AsyncClient` belongs to one loop; `aclose_shared_http_client` closes the loop's clients at
    shutdown (`manage.py serve`).
    """
    loop = asyncio.get_running_loop()
    for closed in [other for other in _SHARED_CLIENTS if other.is_closed()]:
        # A finished loop (asyncio.run, async_to_sync outside a server): forget its clients, whose
        # connections refer to the loop and would otherwise keep both alive.
        del _SHARED_CLIENTS[closed]
    clients = _SHARED_CLIENTS.get(loop)
    if clients is None or clients.is_closed:
        clients = _LoopClients()
        _SHARED_CLIENTS[loop] = clients
    return clients


def shared_http_client() -> httpx.AsyncClient:
    """The running loop's HTTP client that the next request would take (the least busy one)."""
    clients = loop_clients()
    return clients.clients[clients.least_busy()]


async def aclose_shared_http_client() -> None:
    """Close the running loop's clients (their kept-alive connections), if it has any."""
    clients = _SHARED_CLIENTS.pop(asyncio.get_running_loop(), None)
    if clients is not None:
        await clients.aclose()


class RealtimeClient:
    """An async client for the Realtime REST surface (`async with` it, or not: it holds nothing).

    Base URL, key and timeout default to `REALTIME_BASE_URL`, `REALTIME_API_KEY` and
    `REALTIME_HTTP_TIMEOUT`. The timeout bounds connecting, each read, and the whole exchange.
    Requests go through the loop's shared connection pools (`loop_clients`), with this
    client's key and timeout on each request.
    """

    def __init__(
        self, *, base_url: str | None = None, api_key: str | None = None, timeout: float | None = None
    ) -> None:
        self.base_url = (base_url if base_url is not None else settings.REALTIME_BASE_URL).rstrip("/")
        self._api_key = api_key if api_key is not None else settings.REALTIME_API_KEY
        self.timeout = float(timeout if timeout is not None else settings.REALTIME_HTTP_TIMEOUT)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Nothing to release: the connections belong to the loop's shared clients."""

    # --- requests -------------------------------------------------------------------------------

    async def _request(self, path: str, **kwargs: Any) -> _Answer:
        """POST `path`; the response with its body read (bounded). Raises the typed errors."""
        url = self.base_url + path
        try:
            async with asyncio.timeout(self.timeout):
                with loop_clients().lease() as http:
                    async with http.stream(
                        "POST",
                        url,
                        headers={"Authorization": f"Bearer {self._api_key}"},
                        timeout=httpx.Timeout(self.timeout),
                        **kwargs,
                    ) as response:
                        body = bytearray()
                        async for chunk in response.aiter_bytes():
                            body += chunk
                            if len(body) > MAX_RESPONSE_BYTES:
                                raise RealtimeUnavailable(
                                    f"The Realtime API's answer exceeded {MAX_RESPONSE_BYTES // 1024} KiB.",
                                    status=response.status_code,
                                    code="answer_too_large",
                                )
                        answer = _Answer(
                            status=response.status_code, headers=response.headers, body=bytes(body)
                        )
        except (TimeoutError, httpx.TimeoutException):
            raise RealtimeTimeout(
                f"The Realtime API did not answer within {self.timeout:g} s.", code="upstream_timeout"
            ) from None
        except (httpx.HTTPError, httpx.InvalidURL) as exc:  # InvalidURL: a mistyped REALTIME_BASE_URL
            raise RealtimeUnavailable(
                f"Could not reach the Realtime API at {self.base_url}: {type(exc).__name__}.",
                code="upstream_unreachable",
            ) from exc
        if not 200 <= answer.status < 300:
            raise _upstream_error(answer.status, answer.body, retry_after=_retry_after(answer.headers))
        return answer

    def _call_path(self, provider_call_id: str, action: str) -> str:
        call_id = check_provider_call_id(provider_call_id)
        return f"/realtime/calls/{quote(call_id, safe='')}/{action}"

    # --- the API ----------------------------------------------------------------------------------

    async def create_call(self, *, offer_sdp: str, session: dict[str, Any]) -> CreatedCall:
        """Send the offer with our session config (multipart `sdp` + `session`); the answer and call id."""
        files = {
            "sdp": (None, offer_sdp, "application/sdp"),
            "session": (None, json.dumps(session), "application/json"),
        }
        response = await self._request("/realtime/calls", files=files)
        answer_sdp = response.text()
        if not looks_like_sdp(answer_sdp):
            content_type = response.headers.get("content-type", "no content type")
            raise RealtimeUnavailable(
                f"The Realtime API answered HTTP {response.status} without an SDP answer "
                f"({_clip(content_type)}).",
                status=response.status,
                code="invalid_answer",
            )
        location = response.headers.get("location", "")
        provider_call_id = urlsplit(location).path.rstrip("/").rsplit("/", 1)[-1]
        if not is_valid_provider_call_id(provider_call_id):
            raise RealtimeUnavailable(
                "The Realtime API's answer has no usable call id in its Location header.",
                status=response.status,
                code="invalid_location",
            )
        logger.info("realtime call %s created", provider_call_id)
        return CreatedCall(provider_call_id=provider_call_id, answer_sdp=answer_sdp)

    async def create_client_secret(self, *, session: dict[str, Any], expires_in_s: int = 600) -> ClientSecret:
        """An ephemeral key bound to `session`, valid for `expires_in_s` seconds from now."""
        body = {"session": session, "expires_after": {"anchor": "created_at", "seconds": expires_in_s}}
        response = await self._request("/realtime/client_secrets", json=body)
        parsed = response.json()
        value = parsed.get("value") if isinstance(parsed, dict) else None
        expires_at = parsed.get("expires_at") if isinstance(parsed, dict) else None
        if (
            not isinstance(value, str)
            or not value
            or isinstance(expires_at, bool)
            or not isinstance(expires_at, int)
        ):
            raise RealtimeUnavailable(
                "The Realtime API's client secret answer lacks 'value' or 'expires_at'.",
                status=response.status,
                code="invalid_answer",
            )
        return ClientSecret(value=value, expires_at=expires_at)

    async def accept_call(self, provider_call_id: str, *, session: dict[str, Any]) -> None:
        """Accept an incoming (SIP) call with our session config."""
        await self._request(self._call_path(provider_call_id, "accept"), json=session)
        logger.info("realtime call %s accepted", provider_call_id)

    async def reject_call(self, provider_call_id: str, *, status_code: int = 603) -> None:
        """Reject an incoming (SIP) call with a SIP status (603 Decline by default)."""
        await self._request(self._call_path(provider_call_id, "reject"), json={"status_code": status_code})
        logger.info("realtime call %s rejected with %s", provider_call_id, status_code)

    async def refer_call(self, provider_call_id: str, *, target_uri: str) -> None:
        """Transfer a call to a `tel:`/`sip:` URI (the caller must have allow-listed it)."""
        await self._request(self._call_path(provider_call_id, "refer"), json={"target_uri": target_uri})
        logger.info("realtime call %s referred", provider_call_id)

    async def hangup_call(self, provider_call_id: str) -> None:
        """End a call. An unknown or already finished call raises `RealtimeError` with status 404."""
        await self._request(self._call_path(provider_call_id, "hangup"))
        logger.info("realtime call %s hung up", provider_call_id)

    def sideband_url(self, provider_call_id: str) -> str:
        """The call's sideband WebSocket: `{base}/realtime?call_id=…` with http→ws, https→wss."""
        call_id = check_provider_call_id(provider_call_id)
        parts = urlsplit(self.base_url)
        scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
        return urlunsplit(
            (scheme, parts.netloc, parts.path + "/realtime", f"call_id={quote(call_id, safe='')}", "")
        )

    def sideband_headers(self) -> dict[str, str]:
        """Headers that authorize the sideband connection (the server-side API key)."""
        return {"Authorization": f"Bearer {self._api_key}"}
