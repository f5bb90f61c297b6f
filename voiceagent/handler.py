"""Django's ASGI handler without the thread hops that its middleware adapter costs every request.

Under ASGI, Django runs each hook of a `MiddlewareMixin` middleware (process_request, process_view,
process_response) through `sync_to_async(thread_sensitive=True)`: a hand-off to the request's own
executor thread and back, each one a wake-up of two threads and a few hundred microseconds of CPU on
our 2-core box. With our middleware stack that was 15 hand-offs per `POST /rtc`, most of its
CPU time next to the engine's (bench/setup_overhead.py, bench/README.md "Profiles").

`InlineMiddlewareASGIHandler` runs the hooks of an allow-list of middlewares on the event loop
instead: those whose hooks only look at the request and response in memory (headers, cookies, the
already received body, URL resolution). Hooks that may reach a store keep their thread: the
session's `process_response` when the session was modified (it saves it), the messages'
`process_response` when messages were read or added (they may touch the session), CSRF entirely when
`CSRF_USE_SESSIONS` is on. Every hook still runs, in the same order, with the same effect: only the
thread it runs on changes. Anything not on the list goes through Django's adapter unchanged.

settings.MIDDLEWARE keeps Django's own dotted paths (`manage.py check --deploy` looks for
SecurityMiddleware, CsrfViewMiddleware and XFrameOptionsMiddleware by path): the handler swaps in a
subclass of each allowed class while it builds the chain.

Each request also gets its executor thread from a free list instead of a new thread (Django's
`ThreadSensitiveContext()` makes one per request): `sync_to_async` calls of one request still all run
on one thread, one at a time, as Django's thread-sensitive mode requires.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from asgiref.sync import ThreadSensitiveContext, sync_to_async
from django.conf import settings
from django.core.handlers import base as django_base
from django.core.handlers.asgi import ASGIHandler
from django.http import HttpRequest
from django.http.response import HttpResponseBase
from django.utils.module_loading import import_string

#: Middlewares whose hooks do no I/O (see the module docstring); by dotted path as in settings.
INLINE_MIDDLEWARE: Final = frozenset(
    {
        "django.middleware.security.SecurityMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "voiceagent.security.RequestBodyCapMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
        "voiceagent.security.SecurityHeadersMiddleware",
    }
)

#: Idle request threads kept for reuse; more than this many at once are made and then shut down.
MAX_IDLE_EXECUTORS: Final = 64


def _session_response_needs_thread(request: HttpRequest) -> bool:
    """SessionMiddleware saves the session (a store write) only when it was modified or always."""
    session = getattr(request, "session", None)
    return session is not None and bool(session.modified or settings.SESSION_SAVE_EVERY_REQUEST)


def _messages_response_needs_thread(request: HttpRequest) -> bool:
    """MessageMiddleware stores messages (cookie, then the session) only when they were read or added."""
    storage = getattr(request, "_messages", None)
    return storage is not None and bool(storage.used or storage.added_new)


def _never(request: HttpRequest) -> bool:
    return False


#: For the allowed middlewares whose `process_response` writes to a store in some requests: when.
RESPONSE_NEEDS_THREAD: Final[dict[str, Callable[[HttpRequest], bool]]] = {
    "django.contrib.sessions.middleware.SessionMiddleware": _session_response_needs_thread,
    "django.contrib.messages.middleware.MessageMiddleware": _messages_response_needs_thread,
}


def inline_paths() -> frozenset[str]:
    """The allow-list under the current settings (CSRF tokens kept in the session need its store)."""
    if getattr(settings, "CSRF_USE_SESSIONS", False):
        return INLINE_MIDDLEWARE - {"django.middleware.csrf.CsrfViewMiddleware"}
    return INLINE_MIDDLEWARE


async def _inline_acall(self: Any, request: HttpRequest) -> HttpResponseBase:
    """`MiddlewareMixin.__acall__` with the hooks called on the loop (a store write keeps its thread)."""
    response = None
    if hasattr(self, "process_request"):
        response = self.process_request(request)
    response = response or await self.get_response(request)
    if hasattr(self, "process_response"):
        if self.response_needs_thread(request):
            response = await sync_to_async(self.process_response, thread_sensitive=True)(request, response)
        else:
            response = self.process_response(request, response)
    return response  # type: ignore[no-any-return]


@functools.cache
def inline_variant(path: str) -> type:
    """A subclass of the middleware at `path` whose hooks run on the event loop in async mode.

    Its `process_view` is a coroutine function calling the original, so Django's handler calls it
    as it is instead of through `sync_to_async`. Sync mode (WSGI, the test client) is untouched:
    the subclass is only used by `InlineMiddlewareASGIHandler`.
    """
    middleware: type = import_string(path)
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": f"Inline{middleware.__qualname__}",
        "__doc__": f"{path}, its hooks run on the event loop (voiceagent.handler).",
        "__acall__": _inline_acall,
        "response_needs_thread": staticmethod(RESPONSE_NEEDS_THREAD.get(path, _never)),
        "inline_of": path,
    }
    if hasattr(middleware, "process_view"):
        sync_process_view = middleware.process_view

        async def process_view(
            self: Any, request: HttpRequest, view_func: Any, view_args: Any, view_kwargs: Any
        ) -> HttpResponseBase | None:
            return sync_process_view(self, request, view_func, view_args, view_kwargs)  # type: ignore[no-any-return]

        namespace["process_view"] = process_view
    return type(f"Inline{middleware.__name__}", (middleware,), namespace)


def _import_middleware(path: str) -> Any:
    """`import_string` for `load_middleware`: allowed middlewares come back as their inline variant."""
    if path in inline_paths():
        return inline_variant(path)
    return import_string(path)


class InlineMiddlewareASGIHandler(ASGIHandler):
    """Django's `ASGIHandler` with the allowed middlewares' hooks on the loop and reused request threads."""

    def __init__(self) -> None:
        self._idle_executors: list[ThreadPoolExecutor] = []
        super().__init__()

    def load_middleware(self, is_async: bool = False) -> None:
        """Django's own chain building, with the allowed middlewares replaced by their inline variants.

        Django's `load_middleware` imports each entry of settings.MIDDLEWARE with the module-level
        `import_string` of `django.core.handlers.base`; it is pointed at `_import_middleware` while
        the chain is built (once, at start-up) and restored right after.
        """
        if not is_async:
            super().load_middleware(is_async=False)
            return
        module: Any = django_base  # its stubs do not declare the imported name
        original = module.import_string
        module.import_string = _import_middleware
        try:
            super().load_middleware(is_async=True)
        finally:
            module.import_string = original

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        executor = (
            self._idle_executors.pop()
            if self._idle_executors
            else ThreadPoolExecutor(max_workers=1, thread_name_prefix="django-request")
        )
        try:
            async with ThreadSensitiveContext(executor=executor):
                await self.handle(scope, receive, send)
        finally:
            if len(self._idle_executors) < MAX_IDLE_EXECUTORS:
                self._idle_executors.append(executor)
            else:
                executor.shutdown(wait=False)


def get_asgi_application() -> InlineMiddlewareASGIHandler:
    """`django.core.asgi.get_asgi_application` with our handler."""
    import django

    django.setup(set_prefix=False)
    return InlineMiddlewareASGIHandler()
