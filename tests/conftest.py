"""Shared fixtures for the whole suite."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
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
