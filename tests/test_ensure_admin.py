"""`manage.py ensure_admin`: one admin on a fresh install, its password shown once."""

from __future__ import annotations

import io
import re

import pytest
from django.contrib.auth import authenticate
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


def _run(**options: str) -> str:
    out = io.StringIO()
    call_command("ensure_admin", stdout=out, **options)
    return out.getvalue()


def test_creates_admin_with_a_generated_password_printed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ADMIN_PASSWORD", raising=False)
    first = _run(url="http://127.0.0.1:8000")
    match = re.search(r"Password:\s+(\S+)", first)
    assert match, first
    password = match.group(1)
    assert len(password) >= 20
    assert "http://127.0.0.1:8000/accounts/login/" in first
    assert authenticate(username="admin", password=password) is not None
    admin = User.objects.get(username="admin")
    assert admin.is_superuser and admin.is_staff

    second = _run()
    assert password not in second
    assert "Password" not in second
    assert "An admin account exists" in second
    assert User.objects.filter(is_superuser=True).count() == 1


def test_uses_admin_password_from_the_environment_without_printing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ADMIN_PASSWORD", "chosen-by-the-operator-42")
    output = _run()
    assert "chosen-by-the-operator-42" not in output
    assert "ADMIN_PASSWORD" in output
    assert authenticate(username="admin", password="chosen-by-the-operator-42") is not None


def test_creates_nothing_when_another_superuser_exists() -> None:
    UserFactory.create(username="root", is_staff=True, is_superuser=True)
    output = _run()
    assert not User.objects.filter(username="admin").exists()
    assert "Password" not in output


def test_refuses_to_take_over_an_ordinary_user_named_admin() -> None:
    UserFactory.create(username="admin")
    with pytest.raises(CommandError, match="not a superuser"):
        _run()
    assert not User.objects.get(username="admin").is_superuser
