"""`RequestIdMiddleware`: one id per HTTP request, on every log line the request causes and in the
response's `X-Request-ID` header (so a user's report, a proxy's access log and our logs meet).

An incoming `X-Request-ID` (set by the reverse proxy, e.g. nginx's `$request_id`) is kept when it is
sane: 1-128 characters of letters, digits and `-_.:` (anything else could forge log structure); otherwise
a fresh uuid4 hex is made. Both sync and async, so an async view stays on the event loop.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import structlog
from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.core.signals import request_finished
from django.http import HttpRequest
from django.http.response import HttpResponseBase

from voiceagent.monitoring.logs import CALL_ID_KEY, REQUEST_ID_KEY

HEADER: Final = "X-Request-ID"
_SANE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def request_id_for(request: HttpRequest) -> str:
    """The request's id: the incoming header when sane, else a new one."""
    incoming = request.headers.get(HEADER, "")
    return incoming if _SANE.fullmatch(incoming) else uuid.uuid4().hex


class RequestIdMiddleware:
    """Binds `request_id` for the request's logs and echoes it in the response; see the module doc.

    The binding outlives this middleware on purpose: Django logs a 4xx/5xx response ("Not Found: …")
    after the whole middleware chain has returned, and that line must carry the id too. It ends with
    the request: `request_finished` unbinds the request's keys (a thread serving sync requests would
    otherwise show them on its next, unrelated lines), and under ASGI each request is a task of its
    own whose context dies with it.
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self, get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]]
    ) -> None:
        self.get_response = get_response
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if self._async:
            return self._acall(request)
        request_id = _start(request)
        response = self.get_response(request)
        assert isinstance(response, HttpResponseBase)
        response[HEADER] = request_id
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        request_id = _start(request)
        result = self.get_response(request)
        assert not isinstance(result, HttpResponseBase)
        response = await result
        response[HEADER] = request_id
        return response


def _start(request: HttpRequest) -> str:
    """Forget what an earlier request of this thread bound, then bind this request's id."""
    forget_request_context()
    request_id = request_id_for(request)
    request.request_id = request_id  # type: ignore[attr-defined]
    structlog.contextvars.bind_contextvars(**{REQUEST_ID_KEY: request_id})
    return request_id


def forget_request_context(**_: object) -> None:
    """Unbind the request-scoped log keys (request and call id); a `request_finished` receiver."""
    structlog.contextvars.unbind_contextvars(REQUEST_ID_KEY, CALL_ID_KEY)


request_finished.connect(forget_request_context, dispatch_uid="voiceagent.monitoring.forget_request_context")
