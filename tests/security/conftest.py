"""Fixtures of the security battery (tests/security/): one user per role and the objects they reach.

Roles, as the authorization table names them:
- `anonymous`: no session;
- `plain`: signed in, not staff;
- `other`: staff, but not the owner of the objects in the URL;
- `owner`: staff, owner of the web call in the URL;
- `admin`: superuser (staff), not the owner.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import SyncToAsync
from django.contrib.auth.models import User
from django.db import connections
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call
from tests.factories import CallFactory, SipCallFactory, StaffUserFactory, UserFactory

ROLES = ("anonymous", "plain", "other", "owner", "admin")


@dataclass
class Cast:
    """The users of each role (None for anonymous), and the calls the URLs point at."""

    users: dict[str, User | None]
    web_call: Call
    sip_call: Call

    def client(self, role: str, **kwargs: Any) -> Client:
        """A test client signed in as `role` (CSRF not enforced: the table tests authorization)."""
        client = Client(**kwargs)
        user = self.users[role]
        if user is not None:
            client.force_login(user)
        return client


def make_cast() -> Cast:
    owner = StaffUserFactory.create()
    admin = StaffUserFactory.create(is_superuser=True)
    users: dict[str, User | None] = {
        "anonymous": None,
        "plain": UserFactory.create(),
        "other": StaffUserFactory.create(),
        "owner": owner,
        "admin": admin,
    }
    return Cast(
        users=users,
        web_call=CallFactory.create(user=owner),
        sip_call=SipCallFactory.create(),
    )


@pytest.fixture
def cast(db: None) -> Cast:
    return make_cast()


@pytest.fixture
def fresh_channel_layer(settings: SettingsWrapper) -> None:
    """An in-memory channel layer of this test (readyz makes a round trip through it)."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


@pytest.fixture(autouse=True)
def close_async_orm_connections(request: pytest.FixtureRequest) -> Iterator[None]:
    """Close the connections that ORM calls made in asgiref's worker threads (WebSocket consumers,
    the ASGI application): nothing else closes them, and PostgreSQL then refuses to drop the test
    database at the end of the session. A sync fixture: a browser test's Playwright runs an event
    loop in this thread, where an async fixture could not start (and such tests use no ORM here)."""
    yield
    if request.node.get_closest_marker("e2e") is None:
        # Where thread-sensitive sync_to_async calls run outside any async_to_sync (asgiref).
        SyncToAsync.single_thread_executor.submit(connections.close_all).result(timeout=30)
