"""Shared fixtures for the whole suite."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.cache.backends.locmem import LocMemCache
from django.test import Client

from tests.factories import PASSWORD, StaffUserFactory, UserFactory


@pytest.fixture
def staff_user(db: None) -> User:
    """A staff member who may use the console (not a superuser)."""
    user: User = StaffUserFactory.create(username="operator")
    return user


@pytest.fixture
def plain_user(db: None) -> User:
    """A signed-up user without staff rights."""
    user: User = UserFactory.create(username="visitor")
    return user


@pytest.fixture
def staff_client(client: Client, staff_user: User) -> Client:
    """A test client signed in as `staff_user` through the real login form."""
    response = client.post("/accounts/login/", {"username": staff_user.username, "password": PASSWORD})
    assert response.status_code == 302, "login failed"
    return client


@pytest.fixture
def plain_client(client: Client, plain_user: User) -> Client:
    """A test client signed in as a non-staff user."""
    response = client.post("/accounts/login/", {"username": plain_user.username, "password": PASSWORD})
    assert response.status_code == 302, "login failed"
    return client


@pytest.fixture(autouse=True)
def fresh_rate_limit_windows() -> None:
    """Rate-limit counters (calls/services/ratelimit.py) live in the cache: empty the process-local
    (LocMem) caches before each test, so that a user id reused after another test's rolled-back rows
    does not inherit its count. A shared (Redis) cache is never flushed; its keys carry a prefix."""
    for alias in caches:
        cache = caches[alias]
        if isinstance(cache, LocMemCache):
            cache.clear()
