# asgiref's ApplicationCommunicator carries no annotations.
# mypy: disallow-untyped-calls=False
"""Request body caps: every route refuses a body one byte over its cap with 413, storing nothing.

Each route is taken from the authorization table (so the two lists cannot drift apart) and posted to
by the role that would get furthest (the owner for owned objects, else the superuser): the cap is
decided before authentication, CSRF and form parsing, so the role must not matter, and a body at the
cap is let through to the view. `CAPS` names the views with a cap of their own; every other route has
DATA_UPLOAD_MAX_MEMORY_SIZE. A body without a declared length (chunked) is measured as well, through
the project's real ASGI application.
"""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.testing import ApplicationCommunicator
from django.apps import apps
from django.conf import settings
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.security.conftest import make_cast
from tests.security.test_authz_table import ALL_ROWS, _fill

#: Routes with a cap of their own: the setting or size in bytes, and the 413's error code.
CAPS: dict[str, tuple[str | int, str]] = {
    "rtc": (64 * 1024, "body_too_large"),
    "rtc/<uuid:call_id>/hangup": (1024, "body_too_large"),
    "api/realtime/client-secret": (4 * 1024, "body_too_large"),
    "api/calls": (4 * 1024, "body_too_large"),
    "telephony/webhook": ("TELEPHONY_WEBHOOK_MAX_BYTES", "body_too_large"),
    "telephony/calls/<uuid:call_id>/hang-up": (1024, "body_too_large"),
    "calls/<uuid:call_id>/recording": ("RECORDING_MAX_CHUNK_BYTES", "chunk_too_large"),
}


def cap_of(route: str) -> tuple[int, str]:
    limit, code = CAPS.get(route, ("DATA_UPLOAD_MAX_MEMORY_SIZE", "body_too_large"))
    return (int(getattr(settings, limit)) if isinstance(limit, str) else limit), code


def stored_rows() -> dict[str, int]:
    return {model._meta.label: model._default_manager.count() for model in apps.get_models()}


def test_every_capped_route_exists() -> None:
    assert set(CAPS) <= set(ALL_ROWS)


@pytest.mark.parametrize("route", sorted(ALL_ROWS), ids=lambda route: route or "<console>")
def test_a_body_over_the_cap_is_refused_with_413_and_nothing_is_stored(route: str, db: None) -> None:
    cast = make_cast()
    row = ALL_ROWS[route]
    url = _fill(row.url, cast, {})
    role = "owner" if "{web_call}" in row.url else "admin"
    limit, code = cap_of(route)
    content_type = row.post_body[0]
    client = cast.client(role)
    before = stored_rows()

    over = client.generic("POST", url, b"x" * (limit + 1), content_type=content_type)

    assert over.status_code == 413, (route, over.status_code)
    assert over.json()["error"]["code"] == code
    assert str(limit) in over.json()["error"]["message"]
    assert stored_rows() == before


@pytest.mark.parametrize("route", sorted(CAPS))
def test_a_body_at_the_cap_reaches_the_view(route: str, db: None) -> None:
    """Exactly the cap passes the gate (whatever the view then says about its content)."""
    cast = make_cast()
    row = ALL_ROWS[route]
    url = _fill(row.url, cast, {})
    role = "owner" if "{web_call}" in row.url else "admin"
    limit, _ = cap_of(route)
    response = cast.client(role).generic("POST", url, b"x" * limit, content_type=row.post_body[0])
    assert response.status_code != 413 or response.json()["error"]["code"] not in {
        "body_too_large",
        "chunk_too_large",
    }, (route, response.content[:200])


def test_the_default_cap_follows_the_setting(db: None, settings: SettingsWrapper) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2000
    cast = make_cast()
    client = cast.client("admin")
    refused = client.post("/admin/calls/agentprofile/add/", {"name": "x" * 2100})
    accepted = client.post("/admin/calls/agentprofile/add/", {"name": "x" * 10})
    assert refused.status_code == 413
    assert accepted.status_code in (200, 302)


async def asgi_post(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """POST `chunks` to the project's ASGI application without a Content-Length (as a chunked upload
    reaches Django through daphne); returns the response start message and the body."""
    from voiceagent.asgi import application

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
    }
    comm = ApplicationCommunicator(application, scope)
    for index, chunk in enumerate(chunks):
        await comm.send_input({"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1})
    start = await comm.receive_output(timeout=10)
    body = b""
    while True:
        message = await comm.receive_output(timeout=10)
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    return {"status": start["status"], "body": body}


async def test_an_undeclared_body_over_the_cap_is_refused(transactional_db: None) -> None:
    chunk = b"x" * (16 * 1024)
    response = await asgi_post("/rtc", [chunk] * 5, [(b"content-type", b"application/sdp")])
    assert response["status"] == 413
    assert b"body_too_large" in response["body"]


async def test_an_undeclared_body_within_the_cap_reaches_the_view(transactional_db: None) -> None:
    """The measured body is kept for the view: here the webhook reads it and refuses the signature."""
    body = b'{"type": "realtime.call.incoming", "data": {}}'
    response = await asgi_post(
        "/telephony/webhook", [body[:10], body[10:]], [(b"content-type", b"application/json")]
    )
    assert response["status"] == 400, response
    assert b"body_too_large" not in response["body"]
