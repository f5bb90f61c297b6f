"""`voiceagent.sessions`: sessions read through this process's memory (the engine without Redis).

Whatever the cache holds, the user row is read on every request: a logout, a changed password or a
deactivated account ends the session at once.
"""

from __future__ import annotations

import pytest
from django.conf import settings
from django.contrib.auth import get_user
from django.contrib.sessions.models import Session
from django.test import RequestFactory

from tests.factories import StaffUserFactory
from voiceagent.sessions import SessionStore, session_cache

pytestmark = pytest.mark.django_db(transaction=True)


def signed_in(user: object) -> SessionStore:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)  # type: ignore[attr-defined]
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()  # type: ignore[attr-defined]
    session.save()
    return session


def user_of(session_key: str) -> object:
    request = RequestFactory().get("/")
    request.session = SessionStore(session_key)
    return get_user(request)


def test_the_engine_is_used_without_redis() -> None:
    assert not settings.REDIS_URL
    assert settings.SESSION_ENGINE == "voiceagent.sessions"


def test_a_saved_session_is_in_memory_and_in_the_database() -> None:
    user = StaffUserFactory.create()
    session = signed_in(user)
    assert session_cache().get(session.cache_key) is not None
    assert Session.objects.filter(session_key=session.session_key).exists()
    assert user_of(session.session_key) == user  # type: ignore[arg-type]


def test_logging_out_ends_the_session_in_memory_too() -> None:
    user = StaffUserFactory.create()
    session = signed_in(user)
    key = session.session_key
    assert key is not None
    session.flush()
    assert session_cache().get(SessionStore(key).cache_key) is None
    assert not user_of(key).is_authenticated  # type: ignore[attr-defined]


def test_a_changed_password_or_a_deactivated_account_ends_a_cached_session() -> None:
    user = StaffUserFactory.create()
    first, second = signed_in(user), signed_in(user)
    user.set_password("another-password-123")
    user.save()
    assert not user_of(first.session_key).is_authenticated  # type: ignore[arg-type, attr-defined]
    user.set_password("another-password-123")
    user.is_active = False
    user.save()
    assert not user_of(second.session_key).is_authenticated  # type: ignore[arg-type, attr-defined]
