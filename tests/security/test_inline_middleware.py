# mypy: disallow-untyped-calls=False
# asgiref's ApplicationCommunicator carries no annotations.
"""`voiceagent.handler`: the production ASGI handler runs I/O-free middleware hooks on the event loop.

Django's test clients use their own handlers, so these tests drive `voiceagent.asgi.application`
itself (as daphne does) and check that every protection the middlewares give still holds through it:
security headers, CSRF refusals, sessions saved on sign-in, the request id. The unit tests pin which
hooks stay on the loop and which keep their thread.
"""

from __future__ import annotations

import re
import threading
from typing import Any

import pytest
from asgiref.sync import iscoroutinefunction
from asgiref.testing import ApplicationCommunicator
from django.contrib.sessions.models import Session
from django.core.handlers import base as django_base
from django.http import HttpRequest, HttpResponse
from django.test import RequestFactory
from django.utils.module_loading import import_string
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.factories import PASSWORD, StaffUserFactory
from voiceagent import handler as inline

pytestmark = pytest.mark.django_db(transaction=True)


async def asgi_request(
    method: str, path: str, *, body: bytes = b"", headers: list[tuple[bytes, bytes]] | None = None
) -> tuple[int, dict[bytes, list[bytes]], bytes]:
    """One request through the project's ASGI application; status, headers (lower-case names), body."""
    from voiceagent.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *(headers or [])],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    comm = ApplicationCommunicator(application, scope)
    await comm.send_input({"type": "http.request", "body": body, "more_body": False})
    start = await comm.receive_output(timeout=10)
    content = b""
    while True:
        message = await comm.receive_output(timeout=10)
        content += message.get("body", b"")
        if not message.get("more_body"):
            break
    await comm.send_input({"type": "http.disconnect"})  # as daphne does: the request is over
    await comm.wait(timeout=10)
    found: dict[bytes, list[bytes]] = {}
    for name, value in start["headers"]:
        found.setdefault(name.lower(), []).append(value)
    return start["status"], found, content


def cookie(headers: dict[bytes, list[bytes]], name: str) -> str | None:
    for value in headers.get(b"set-cookie", []):
        match = re.match(rf"{name}=([^;]*)", value.decode())
        if match:
            return match.group(1)
    return None


def test_the_production_chain_uses_the_inline_variants() -> None:
    from voiceagent.asgi import django_asgi_app

    assert isinstance(django_asgi_app, inline.InlineMiddlewareASGIHandler)
    # The import hook is only in place while the chain is built.
    assert django_base.import_string is import_string  # type: ignore[attr-defined]
    for path in inline.INLINE_MIDDLEWARE:
        variant = inline.inline_variant(path)
        assert issubclass(variant, import_string(path))
        if hasattr(variant, "process_view"):
            assert iscoroutinefunction(variant.process_view)


async def test_security_headers_and_the_request_id_come_through() -> None:
    status, headers, _ = await asgi_request("GET", "/accounts/login/", headers=[(b"x-request-id", b"req-1")])
    assert status == 200
    assert headers[b"x-frame-options"] == [b"DENY"]
    assert headers[b"x-content-type-options"] == [b"nosniff"]
    assert headers[b"referrer-policy"] == [b"same-origin"]
    assert headers[b"cross-origin-opener-policy"] == [b"same-origin"]
    assert headers[b"content-security-policy"][0].startswith(b"default-src 'self'")
    assert headers[b"permissions-policy"][0].startswith(b"camera=(self)")
    assert headers[b"x-request-id"] == [b"req-1"]
    assert cookie(headers, "csrftoken")  # CsrfViewMiddleware.process_response set it


async def test_a_post_without_a_csrf_token_is_refused() -> None:
    status, _, _ = await asgi_request(
        "POST",
        "/accounts/login/",
        body=b"username=x&password=y",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
    )
    assert status == 403


async def test_a_json_api_post_without_a_csrf_token_is_refused_for_a_signed_in_user() -> None:
    from asgiref.sync import sync_to_async

    staff = await sync_to_async(StaffUserFactory.create)()
    session_id = await sync_to_async(signed_in_session)(staff)
    status, _, _ = await asgi_request(
        "POST",
        "/api/calls",
        body=b'{"provider_call_id": "rtc_abcdef123456"}',
        headers=[(b"content-type", b"application/json"), (b"cookie", f"sessionid={session_id}".encode())],
    )
    assert status == 403


def signed_in_session(user: Any) -> str:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.sessions.backends.db import SessionStore

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.save()
    assert session.session_key is not None
    return session.session_key


async def test_signing_in_saves_the_session_through_the_thread_path() -> None:
    from asgiref.sync import sync_to_async

    staff = await sync_to_async(StaffUserFactory.create)()
    _, page_headers, page = await asgi_request("GET", "/accounts/login/")
    token = re.search(rb'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    csrf_cookie = cookie(page_headers, "csrftoken")
    assert token and csrf_cookie
    form = f"username={staff.username}&password={PASSWORD}&csrfmiddlewaretoken={token.group(1).decode()}"
    status, headers, _ = await asgi_request(
        "POST",
        "/accounts/login/",
        body=form.encode(),
        headers=[
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"cookie", f"csrftoken={csrf_cookie}".encode()),
        ],
    )
    assert status == 302
    session_id = cookie(headers, "sessionid")
    assert session_id
    assert await Session.objects.filter(session_key=session_id).aexists()


async def test_requests_reuse_their_executor_threads() -> None:
    from voiceagent.asgi import django_asgi_app

    assert isinstance(django_asgi_app, inline.InlineMiddlewareASGIHandler)
    for _ in range(3):
        await asgi_request("GET", "/healthz")
    assert 1 <= len(django_asgi_app._idle_executors) <= inline.MAX_IDLE_EXECUTORS


class Recorder:
    """A MiddlewareMixin-style middleware that records the thread each hook ran on."""

    threads: dict[str, int] = {}

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def process_request(self, request: HttpRequest) -> None:
        self.threads["request"] = threading.get_ident()

    def process_view(self, request: HttpRequest, *args: Any) -> None:
        self.threads["view"] = threading.get_ident()

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        self.threads["response"] = threading.get_ident()
        return response


async def test_inline_hooks_run_on_the_loop_and_a_store_write_keeps_its_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path = f"{__name__}.Recorder"
    inline.inline_variant.cache_clear()
    needs_thread = {"now": False}
    monkeypatch.setitem(inline.RESPONSE_NEEDS_THREAD, path, lambda request: needs_thread["now"])
    variant = inline.inline_variant(path)

    async def view(request: HttpRequest) -> HttpResponse:
        return HttpResponse("ok")

    middleware = variant(view)
    request = RequestFactory().get("/")
    loop_thread = threading.get_ident()
    assert (await middleware.__acall__(request)).content == b"ok"
    await middleware.process_view(request, view, (), {})
    assert Recorder.threads == {"request": loop_thread, "view": loop_thread, "response": loop_thread}

    needs_thread["now"] = True
    await middleware.__acall__(request)
    assert Recorder.threads["request"] == loop_thread
    assert Recorder.threads["response"] != loop_thread
    inline.inline_variant.cache_clear()


def test_session_and_message_writes_are_detected() -> None:
    request = RequestFactory().get("/")
    assert not inline._session_response_needs_thread(request)
    assert not inline._messages_response_needs_thread(request)

    class Session:
        modified = False

    class Storage:
        used = False
        added_new = False

    request.session = Session()  # type: ignore[assignment]
    request._messages = Storage()  # type: ignore[attr-defined]
    assert not inline._session_response_needs_thread(request)
    assert not inline._messages_response_needs_thread(request)
    request.session.modified = True
    request._messages.added_new = True  # type: ignore[attr-defined]
    assert inline._session_response_needs_thread(request)
    assert inline._messages_response_needs_thread(request)


def test_csrf_in_the_session_keeps_its_thread(settings: SettingsWrapper) -> None:
    csrf = "django.middleware.csrf.CsrfViewMiddleware"
    assert csrf in inline.inline_paths()
    settings.CSRF_USE_SESSIONS = True
    assert csrf not in inline.inline_paths()
