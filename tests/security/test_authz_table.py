"""Who reaches what: every URL pattern of the project, and every WebSocket route, against a table.

The table below says, for each route and for GET and POST, what each role gets: the page (200…), a
refusal (401/403/404/405), or a redirect to a login page. A route the table does not list fails
`test_every_route_has_a_row` (so a new view cannot ship unprotected by accident), a row whose route is
gone fails it too, and `test_each_route_answers_each_role_as_the_table_says` makes every request for
real against the test database. Admin model pages come from `ADMIN_MODELS`: a newly registered model
has no entry there and fails the first test.

POSTs carry a body that reaches the view's own validation but never starts anything (no upstream
request, no deletion): the point is who gets past the gate, not what the view then does. CSRF is
not enforced here (it has its own tests); the webhook's signature is its authentication, and an
unsigned delivery is refused to everyone.

Roles (tests/security/conftest.py): anonymous, plain (signed in, not staff), other (staff, not the
owner), owner (staff, owns the web call in the URL), admin (superuser, not the owner).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.contenttypes.models import ContentType
from django.db.models import Model
from django.test import AsyncClient
from django.urls import URLPattern, URLResolver, get_resolver
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.security.conftest import ROLES, Cast, make_cast
from voiceagent.routing import websocket_urlpatterns

# --- outcomes --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Redirect:
    """A 302 to a path starting with `to` (login pages carry ?next=)."""

    to: str

    def __str__(self) -> str:
        return f"302→{self.to}"


LOGIN = Redirect("/accounts/login/?next=")
LOGIN_PAGE = Redirect("/accounts/login/")
ADMIN_LOGIN = Redirect("/admin/login/?next=")
HOME = Redirect("/")
Outcome = int | Redirect


def by_role(
    *,
    anonymous: Outcome,
    plain: Outcome,
    staff: Outcome | None = None,
    other: Outcome | None = None,
    owner: Outcome | None = None,
    admin: Outcome,
) -> dict[str, Outcome]:
    """Outcomes per role; `staff` stands for both `other` and `owner` where they do not differ."""
    other_outcome = other if other is not None else staff
    owner_outcome = owner if owner is not None else staff
    assert other_outcome is not None and owner_outcome is not None
    return {
        "anonymous": anonymous,
        "plain": plain,
        "other": other_outcome,
        "owner": owner_outcome,
        "admin": admin,
    }


def everyone(outcome: Outcome) -> dict[str, Outcome]:
    return dict.fromkeys(ROLES, outcome)


NOT_ALLOWED = everyone(405)
#: A page of the console for staff (`staff_required`): login for anonymous, 403 page for non-staff.
STAFF_PAGE = by_role(anonymous=LOGIN, plain=403, staff=200, admin=200)
#: A JSON endpoint for staff (`api_staff_required`): 401/403 JSON instead of a login redirect.
STAFF_API_400 = by_role(anonymous=401, plain=403, staff=400, admin=400)
#: A page of the admin site for any staff member (`admin_view`): non-staff go to the admin login.
ADMIN_SITE = by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=200, admin=200)
#: GET-only admin pages: staff who get past the gate are told the method is not allowed.
ADMIN_STAFF_405: dict[str, Outcome] = {"other": 405, "owner": 405, "admin": 405}


@dataclass(frozen=True)
class Row:
    """One route: the URL to request (placeholders filled from the cast) and outcomes per method."""

    url: str
    get: dict[str, Outcome]
    post: dict[str, Outcome]
    #: (content type, body) of the POST.
    post_body: tuple[str, bytes] = ("application/x-www-form-urlencoded", b"")
    #: Extra request headers (e.g. a webhook's signature headers).
    headers: dict[str, str] = field(default_factory=dict)
    #: Outcomes of further methods the route accepts (e.g. HEAD).
    more: dict[str, dict[str, Outcome]] = field(default_factory=dict)
    #: Settings the row is checked under (e.g. the metrics token).
    settings: dict[str, Any] = field(default_factory=dict)


JSON_BAD_MODE = ("application/json", json.dumps({"mode": 5}).encode())
JSON_EMPTY = ("application/json", b"{}")

#: Routes of our own views and of Django's auth views, keyed by the pattern's route string.
ROWS: dict[str, Row] = {
    # Probes: public, read-only.
    "healthz": Row("/healthz", get=everyone(200), post=NOT_ALLOWED),
    # Prometheus metrics: a bearer token (or an address allow-list), never a session; 404 when neither
    # is configured. Here a token is set and not sent.
    "metrics": Row(
        "/metrics", get=everyone(401), post=NOT_ALLOWED, settings={"METRICS_TOKEN": "scrape-token-123"}
    ),
    "readyz": Row("/readyz", get=everyone(200), post=NOT_ALLOWED),
    # Sign in / out. A signed-in visitor of the login page goes to the console (which then decides).
    "accounts/login/": Row(
        "/accounts/login/",
        get=by_role(anonymous=200, plain=HOME, staff=HOME, admin=HOME),
        post=by_role(anonymous=200, plain=HOME, staff=HOME, admin=HOME),
    ),
    "accounts/logout/": Row(
        "/accounts/logout/", get=NOT_ALLOWED, post=everyone(Redirect("/accounts/login/"))
    ),
    # The console and call history: staff; a call page only for its owner (404 for everyone else,
    # superusers included: they review other people's calls in the admin).
    "": Row("/", get=STAFF_PAGE, post=NOT_ALLOWED),
    "calls/": Row("/calls/", get=STAFF_PAGE, post=NOT_ALLOWED),
    "calls/compare/": Row("/calls/compare/", get=STAFF_PAGE, post=NOT_ALLOWED),
    "calls/<uuid:call_id>/": Row(
        "/calls/{web_call}/",
        get=by_role(anonymous=LOGIN, plain=403, other=404, owner=200, admin=404),
        post=NOT_ALLOWED,
    ),
    # Web calls (JSON/SDP APIs): staff; a body that stops at the view's validation.
    # A call's recording: upload by its owner only; playback/resume point (HEAD) by the owner or a
    # superuser reviewing calls; 404 for everyone else. The owner's POST lacks ?offset= → 400.
    "calls/<uuid:call_id>/recording": Row(
        "/calls/{web_call}/recording",
        get=by_role(anonymous=401, plain=403, staff=404, admin=404),
        post=by_role(anonymous=401, plain=403, other=404, owner=400, admin=404),
        post_body=("audio/webm", b""),
        more={"HEAD": by_role(anonymous=401, plain=403, other=404, owner=200, admin=200)},
    ),
    "rtc": Row(
        "/rtc",
        get=NOT_ALLOWED,
        post=by_role(anonymous=401, plain=403, staff=415, admin=415),
        post_body=("text/plain", b"not an offer"),
    ),
    "rtc/<uuid:call_id>/hangup": Row(
        "/rtc/{web_call}/hangup",
        get=NOT_ALLOWED,
        post=by_role(anonymous=401, plain=403, other=404, owner=200, admin=404),
    ),
    "api/realtime/client-secret": Row(
        "/api/realtime/client-secret", get=NOT_ALLOWED, post=STAFF_API_400, post_body=JSON_BAD_MODE
    ),
    "api/calls": Row("/api/calls", get=NOT_ALLOWED, post=STAFF_API_400, post_body=JSON_EMPTY),
    # Telephony: the webhook is public and authenticated by its signature (none here → 400 for all);
    # hanging up a phone call is for any staff member (phone calls have no owner).
    "telephony/webhook": Row(
        "/telephony/webhook",
        get=NOT_ALLOWED,
        post=everyone(400),
        post_body=("application/json", b'{"type": "realtime.call.incoming"}'),
    ),
    "telephony/calls/<uuid:call_id>/hang-up": Row(
        "/telephony/calls/{sip_call}/hang-up",
        get=NOT_ALLOWED,
        post=by_role(anonymous=LOGIN, plain=403, staff=Redirect("/"), admin=Redirect("/")),
    ),
    # The admin site's own pages: any staff member; model pages need permissions (below).
    "admin/": Row("/admin/", get=ADMIN_SITE, post=ADMIN_SITE),
    "admin/login/": Row(
        "/admin/login/",
        get=by_role(anonymous=200, plain=200, staff=Redirect("/admin/"), admin=Redirect("/admin/")),
        post=by_role(anonymous=200, plain=200, staff=200, admin=200),
    ),
    "admin/logout/": Row(
        "/admin/logout/",
        get=by_role(anonymous=Redirect("/admin/"), plain=Redirect("/admin/"), staff=405, admin=405),
        post=by_role(
            anonymous=Redirect("/admin/"), plain=Redirect("/admin/"), staff=LOGIN_PAGE, admin=LOGIN_PAGE
        ),
    ),
    "admin/password_change/": Row("/admin/password_change/", get=ADMIN_SITE, post=ADMIN_SITE),
    "admin/password_change/done/": Row(
        "/admin/password_change/done/", get=ADMIN_SITE, post={**ADMIN_SITE, **ADMIN_STAFF_405}
    ),
    "admin/autocomplete/": Row(
        "/admin/autocomplete/",
        get=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=403, admin=403),
        post=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=405, admin=405),
    ),
    "admin/jsi18n/": Row("/admin/jsi18n/", get=ADMIN_SITE, post={**ADMIN_SITE, **ADMIN_STAFF_405}),
    "admin/r/<path:content_type_id>/<path:object_id>/": Row(
        "/admin/r/{call_type}/{web_call}/",
        get=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=404),
        post=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=404),
    ),
    "admin/^(?P<app_label>auth|calls)/$": Row(
        "/admin/calls/",
        get=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=200),
        post=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=200),
    ),
    "admin/(?P<url>.*)$": Row(
        "/admin/no-such-page/",
        get=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=404),
        post=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=404, admin=404),
    ),
}


# --- admin model pages -----------------------------------------------------------------------------

#: What a superuser gets on each model page (GET, POST with an empty form). Staff members without
#: model permissions (the only staff we create) get 403 on all of them; non-staff the admin login.
#: FULL: editable model; READ_ONLY: records written by the app, shown but never edited in the admin.
FULL = {
    "": (200, 200),
    "add/": (200, 200),
    "<path:object_id>/history/": (200, 200),
    "<path:object_id>/delete/": (200, 200),
    "<path:object_id>/change/": (200, 200),
    "<path:object_id>/": (302, 302),
}
READ_ONLY = {
    "": (200, 200),
    "add/": (403, 403),
    "<path:object_id>/history/": (200, 200),
    "<path:object_id>/delete/": (200, 200),
    "<path:object_id>/change/": (200, 403),
    "<path:object_id>/": (302, 302),
}

#: Every model registered with the admin site: its pages, and how to make an instance to point at.
ADMIN_MODELS: dict[str, dict[str, tuple[int, int]]] = {
    "auth/group": FULL,
    "auth/user": FULL,
    "calls/agentprofile": FULL,
    "calls/call": READ_ONLY,
    "calls/event": READ_ONLY,
    "calls/transcriptturn": READ_ONLY,
    "calls/toolinvocation": READ_ONLY,
    "calls/webhookdelivery": READ_ONLY,
    "calls/mcpserver": FULL,
}


def _admin_instance(label: str, cast: Cast) -> Model:
    """An instance of the admin model `label` to request the object pages of."""
    from django.contrib.auth.models import Group

    from tests.factories import (
        AgentProfileFactory,
        EventFactory,
        ToolInvocationFactory,
        TranscriptTurnFactory,
        WebhookDeliveryFactory,
    )

    makers: dict[str, Callable[[], Model]] = {
        "auth/group": lambda: Group.objects.create(name=f"group-{uuid.uuid4().hex[:8]}"),
        "auth/user": lambda: _throwaway_user(),
        "calls/agentprofile": lambda: AgentProfileFactory.create(),
        "calls/call": lambda: cast.web_call,
        "calls/event": lambda: EventFactory.create(call=cast.web_call),
        "calls/transcriptturn": lambda: TranscriptTurnFactory.create(call=cast.web_call),
        "calls/toolinvocation": lambda: ToolInvocationFactory.create(call=cast.web_call),
        "calls/webhookdelivery": lambda: WebhookDeliveryFactory.create(call=cast.sip_call),
        "calls/mcpserver": lambda: _mcp_server(),
    }
    return makers[label]()


def _throwaway_user() -> Model:
    from tests.factories import UserFactory

    return UserFactory.create()


def _mcp_server() -> Model:
    from calls.models import McpServer

    fields = {f.name for f in McpServer._meta.get_fields()}
    values: dict[str, Any] = {"name": f"mcp-{uuid.uuid4().hex[:8]}"}
    if "url" in fields:
        values["url"] = "http://127.0.0.1:9/mcp"
    return McpServer.objects.create(**values)


def _admin_outcome(label: str, status: int) -> Outcome:
    """A superuser's outcome on a model page: the status, or a redirect within the model's pages."""
    return Redirect(f"/admin/{label}/") if status == 302 else status


def _admin_rows() -> Iterator[tuple[str, Row]]:
    """Rows of the model pages of every model in ADMIN_MODELS."""
    for label, pages in ADMIN_MODELS.items():
        for suffix, (get_admin, post_admin) in pages.items():
            route = f"admin/{label}/{suffix}"
            url = "/" + route.replace("<path:object_id>", "{obj:" + label + "}")
            # The bare object URL only redirects to the change page (which then decides).
            staff: Outcome = Redirect(f"/admin/{label}/") if suffix == "<path:object_id>/" else 403
            yield (
                route,
                Row(
                    url,
                    get=by_role(
                        anonymous=ADMIN_LOGIN,
                        plain=ADMIN_LOGIN,
                        staff=staff,
                        admin=_admin_outcome(label, get_admin),
                    ),
                    post=by_role(
                        anonymous=ADMIN_LOGIN,
                        plain=ADMIN_LOGIN,
                        staff=staff,
                        admin=_admin_outcome(label, post_admin),
                    ),
                ),
            )
    yield (
        "admin/auth/user/<id>/password/",
        Row(
            "/admin/auth/user/{obj:auth/user}/password/",
            get=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=403, admin=200),
            post=by_role(anonymous=ADMIN_LOGIN, plain=ADMIN_LOGIN, staff=403, admin=200),
        ),
    )


ALL_ROWS: dict[str, Row] = {**ROWS, **dict(_admin_rows())}


# --- the routes of the project ---------------------------------------------------------------------


def http_routes() -> list[str]:
    """Every URL pattern of the project as its full route string (resolvers walked recursively)."""

    def walk(patterns: list[Any], prefix: str) -> Iterator[str]:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            else:
                assert isinstance(pattern, URLPattern)
                yield prefix + str(pattern.pattern)

    return list(walk(get_resolver().url_patterns, ""))


def test_every_route_has_a_row() -> None:
    routes = http_routes()
    missing = [route for route in routes if route not in ALL_ROWS]
    stale = [route for route in ALL_ROWS if route not in routes]
    assert not missing, f"routes without a row in the authorization table: {missing}"
    assert not stale, f"rows for routes that no longer exist: {stale}"
    assert len(routes) == len(set(routes)), "two patterns share a route"


def _fill(url: str, cast: Cast, instances: dict[str, Model]) -> str:
    """The URL with its placeholders replaced by the ids of the cast's objects."""
    for label in ADMIN_MODELS:
        placeholder = "{obj:" + label + "}"
        if placeholder in url:
            if label not in instances:
                instances[label] = _admin_instance(label, cast)
            url = url.replace(placeholder, str(instances[label].pk))
    return url.format(
        web_call=cast.web_call.pk,
        sip_call=cast.sip_call.pk,
        call_type=ContentType.objects.get_for_model(cast.web_call).pk,
    )


def _matches(response: Any, expected: Outcome) -> bool:
    if isinstance(expected, Redirect):
        return response.status_code == 302 and str(response["Location"]).startswith(expected.to)
    return bool(response.status_code == expected)


def _seen(response: Any) -> str:
    if response.status_code in (301, 302):
        return f"{response.status_code}→{response['Location']}"
    return str(response.status_code)


@pytest.mark.parametrize("route", sorted(ALL_ROWS), ids=lambda route: route or "<console>")
def test_each_route_answers_each_role_as_the_table_says(
    route: str, db: None, settings: SettingsWrapper, fresh_channel_layer: None
) -> None:
    settings.OPENAI_SIGNING_SECRET = "whsec_" + "A" * 43 + "="
    row = ALL_ROWS[route]
    for name, value in row.settings.items():
        setattr(settings, name, value)
    cast = make_cast()
    instances: dict[str, Model] = {}
    url = _fill(row.url, cast, instances)
    wrong: list[str] = []
    # The admin last: a superuser's POST is the one most able to change what the others would see.
    for role in ROLES:
        for method, expected_by_role in (("GET", row.get), ("POST", row.post), *row.more.items()):
            client = cast.client(role)
            if method != "POST":
                response = client.generic(method, url, headers=row.headers)
            else:
                content_type, body = row.post_body
                response = client.generic("POST", url, body, content_type=content_type, headers=row.headers)
            expected = expected_by_role[role]
            if not _matches(response, expected):
                wrong.append(f"{method} {url} as {role}: expected {expected}, got {_seen(response)}")
    assert not wrong, "\n".join(wrong)


# --- WebSocket routes ------------------------------------------------------------------------------

#: Close code (or "accepted" for the call's stream) per role, for each WebSocket route.
WS_ROWS: dict[str, dict[str, int | str]] = {
    "ws/calls/<uuid:call_id>/": {
        "anonymous": 4403,
        "plain": 4403,
        "other": 4403,
        "owner": "accepted",
        "admin": 4403,
    },
}


def test_every_websocket_route_has_a_row() -> None:
    routes = [str(pattern.pattern) for pattern in websocket_urlpatterns]
    assert sorted(routes) == sorted(WS_ROWS), "WebSocket routes and the table differ"


async def _socket(path: str, session: str | None, origin: bytes) -> WebsocketCommunicator:
    from voiceagent.asgi import application

    headers = [(b"origin", origin), (b"host", b"localhost:8000")]
    if session is not None:
        headers.append((b"cookie", f"sessionid={session}".encode()))
    return WebsocketCommunicator(application, path, headers=headers)


async def _session_of(cast: Cast, role: str) -> str | None:
    user = cast.users[role]
    if user is None:
        return None
    client = AsyncClient()
    await client.aforce_login(user)
    return str(client.cookies["sessionid"].value)


@pytest.mark.parametrize("route", sorted(WS_ROWS))
async def test_each_websocket_route_answers_each_role_as_the_table_says(
    route: str, transactional_db: None, fresh_channel_layer: None
) -> None:
    cast = await sync_to_async(make_cast)()
    path = "/" + route.replace("<uuid:call_id>", str(cast.web_call.pk))
    wrong: list[str] = []
    for role in ROLES:
        comm = await _socket(path, await _session_of(cast, role), b"http://localhost:8000")
        connected, _ = await comm.connect(timeout=5)
        assert connected, f"{role}: the socket is accepted first, so that the browser sees the code"
        first = await comm.receive_output(timeout=5)
        seen: int | str = first["code"] if first["type"] == "websocket.close" else "accepted"
        if seen != WS_ROWS[route][role]:
            wrong.append(f"{path} as {role}: expected {WS_ROWS[route][role]}, got {seen}")
        await comm.disconnect()
    assert not wrong, "\n".join(wrong)


async def test_a_socket_from_another_origin_is_refused_even_for_the_owner(
    transactional_db: None, fresh_channel_layer: None
) -> None:
    cast = await sync_to_async(make_cast)()
    comm = await _socket(
        f"/ws/calls/{cast.web_call.pk}/", await _session_of(cast, "owner"), b"https://evil.example"
    )
    connected, _ = await comm.connect(timeout=5)
    assert not connected
