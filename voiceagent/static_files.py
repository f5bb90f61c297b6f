"""WhiteNoise that keeps async requests on the event loop.

WhiteNoise's middleware is sync-only. Under ASGI Django then runs it, and (through `async_to_sync`)
everything after it, on a thread of the request's own (`ThreadSensitiveContext`): every async view,
`POST /rtc` included, paid two thread hops and a thread per request, and CPU time for them, on a
2-core box where that competes with the event loop (bench/setup_overhead.py `--compare
stock_whitenoise` measures both side by side; figures in bench/README.md).

This subclass is both sync and async capable. In async mode a request for a static file is served
from a worker thread (opening the file is blocking I/O; in DEBUG, with autorefresh, so is the
lookup) and every other request goes straight on to the next middleware, on the loop.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.conf import settings as django_settings
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from whitenoise.middleware import WhiteNoiseMiddleware  # type: ignore[import-untyped]


class AsyncWhiteNoiseMiddleware(WhiteNoiseMiddleware):  # type: ignore[misc]
    """`whitenoise.middleware.WhiteNoiseMiddleware` that does not pin async requests to a thread."""

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase | Awaitable[HttpResponseBase]],
        settings: Any = django_settings,
    ) -> None:
        super().__init__(get_response, settings)
        self._async = iscoroutinefunction(get_response)
        if self._async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        if self._async:
            return self._acall(request)
        return super().__call__(request)

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        if self.autorefresh:  # DEBUG: looks at the file system
            static_file = await sync_to_async(self.find_file, thread_sensitive=False)(request.path_info)
        else:
            static_file = self.files.get(request.path_info)
        if static_file is not None:
            response: HttpResponseBase = await sync_to_async(self.serve, thread_sensitive=False)(
                static_file, request
            )
            return response
        result: HttpResponseBase = await self.get_response(request)
        return result
