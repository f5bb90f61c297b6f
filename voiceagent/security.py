"""Edge protections every response and request goes through (docs/security.md).

- `RequestBodyCapMiddleware`: each view accepts a body of at most its own cap (`@body_cap(…)`), or
  `DATA_UPLOAD_MAX_MEMORY_SIZE` when it declares none; larger requests get 413 before the view, CSRF
  or form parsing runs, so nothing of them is stored or parsed.
- `SecurityHeadersMiddleware`: a Content-Security-Policy that fits the console (our own scripts and
  styles, fetch/WebSocket to ourselves and to the Realtime API the "direct" transport posts to) and a
  Permissions-Policy that lets only our own pages use the camera, microphone and screen capture.
  Django itself sets HSTS, nosniff, Referrer-Policy, COOP (SecurityMiddleware) and X-Frame-Options.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from io import BytesIO
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase, JsonResponse
from django.utils.deprecation import MiddlewareMixin

View = TypeVar("View", bound=Callable[..., Any])

#: The attribute `body_cap` sets on a view: an int (bytes) or the name of an int setting.
BODY_CAP_ATTRIBUTE: Final = "max_body_bytes"
#: The attribute holding the error code of the view's 413 (when it names its own, e.g. chunk_too_large).
BODY_CAP_CODE_ATTRIBUTE: Final = "max_body_code"


def body_cap(limit: int | str, *, code: str = "body_too_large") -> Callable[[View], View]:
    """Declare the largest request body `view` accepts: bytes, or the name of a setting holding them
    (read per request, so tests and deployments can change it); `code` is the 413's error code.
    Works on sync and async views."""

    def decorate(view: View) -> View:
        setattr(view, BODY_CAP_ATTRIBUTE, limit)
        setattr(view, BODY_CAP_CODE_ATTRIBUTE, code)
        return view

    return decorate


def view_body_cap(view: Callable[..., Any]) -> int:
    """The body cap in bytes that applies to `view` (its own, or DATA_UPLOAD_MAX_MEMORY_SIZE)."""
    declared = getattr(view, BODY_CAP_ATTRIBUTE, None)
    if declared is None:
        return int(settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    if isinstance(declared, str):
        return int(getattr(settings, declared))
    return int(declared)


def body_too_large(limit: int, code: str = "body_too_large") -> JsonResponse:
    """The 413 answer, in the JSON error shape of our APIs."""
    return JsonResponse(
        {"error": {"message": f"The request body exceeds {limit} bytes.", "code": code}}, status=413
    )


class RequestBodyCapMiddleware(MiddlewareMixin):
    """413 for a body over the view's cap (any method), decided before CSRF and form parsing read it:
    from the declared Content-Length when there is one, else by reading one byte past the cap. Under
    ASGI the server has received (and spooled to disk) the body by then, which is why production also
    caps bodies at the proxy (deploy/)."""

    def process_view(
        self,
        request: HttpRequest,
        view_func: Callable[..., Any],
        view_args: tuple[Any, ...],
        view_kwargs: dict[str, Any],
    ) -> HttpResponseBase | None:
        limit = view_body_cap(view_func)
        code = str(getattr(view_func, BODY_CAP_CODE_ATTRIBUTE, "body_too_large"))
        raw_length = (request.META.get("CONTENT_LENGTH") or "").strip()
        if not raw_length:
            return self._measure_undeclared(request, limit, code)
        try:
            declared = int(raw_length)
        except ValueError:
            return JsonResponse(
                {"error": {"message": "Invalid Content-Length.", "code": "invalid_length"}}, status=400
            )
        return body_too_large(limit, code) if declared > limit else None

    @staticmethod
    def _measure_undeclared(request: HttpRequest, limit: int, code: str) -> HttpResponseBase | None:
        """A body without a declared length (chunked): read at most one byte past the cap; a body that
        fits is kept as the request's body for the view (Django's own caches `_body` and `_stream`)."""
        if getattr(request, "_read_started", False) or hasattr(request, "_body"):
            return None
        head = request.read(limit + 1)
        if len(head) > limit:
            return body_too_large(limit, code)
        request._body = head
        request._stream = BytesIO(head)
        return None


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


def content_security_policy(request: HttpRequest) -> str:
    """The CSP of our pages. Scripts: our own files only (the console's config is a JSON data block,
    which CSP does not execute). Styles allow inline `style=` attributes, which the templates use.
    connect-src: ourselves (fetch, and the WebSocket written out for browsers that do not count ws: as
    'self') and the Realtime API origin the direct transport posts the SDP offer to."""
    host = request.get_host()
    socket_scheme = "wss" if request.is_secure() else "ws"
    connect = ["'self'", f"{socket_scheme}://{host}"]
    realtime = _origin(str(settings.REALTIME_BASE_URL))
    if realtime is not None:
        connect.append(realtime)
    directives = [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        "font-src 'self'",
        "connect-src " + " ".join(connect),
        "object-src 'none'",
        "base-uri 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


#: Browser features our pages may use: the console's microphone, camera and screen share; nothing else.
PERMISSIONS_POLICY: Final = (
    "camera=(self), microphone=(self), display-capture=(self), geolocation=(), payment=(), usb=()"
)


class SecurityHeadersMiddleware(MiddlewareMixin):
    """Adds Content-Security-Policy and Permissions-Policy to every response that has none."""

    def process_response(self, request: HttpRequest, response: HttpResponseBase) -> HttpResponseBase:
        if "Content-Security-Policy" not in response:
            response["Content-Security-Policy"] = content_security_policy(request)
        if "Permissions-Policy" not in response:
            response["Permissions-Policy"] = PERMISSIONS_POLICY
        return response


class RedactCredentialsFilter(logging.Filter):
    """Rewrites a log record whose text holds a credential (a configured key, a `Bearer …` token, or
    anything key-shaped) with the credential replaced, before any handler sees it.

    Attached in LOGGING to the loggers known to write credentials: websockets logs every handshake
    header at DEBUG, our sideband `Authorization: Bearer <API key>` included (and the local engine's
    server side logs the same header as received). The JSON formatter redacts its own lines too, but
    the raw record also reaches every other handler (pytest's capture, an error tracker).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        from calls.services.realtime_client import redact_credentials

        text = record.getMessage()
        clean = redact_credentials(text)
        if clean != text:
            record.msg, record.args = clean, None
        return True
