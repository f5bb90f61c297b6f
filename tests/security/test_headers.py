"""Security headers and cookies, and `manage.py check --deploy` in production settings.

The deploy check runs in a subprocess with a production environment (DEBUG off, a strong
SECRET_KEY, a real host name, HTTPS on): Django's own list of deployment warnings must be empty.
The headers are read off real responses of the test client.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.contrib.auth.models import User
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[2]


def deploy_check(**env: str) -> subprocess.CompletedProcess[str]:
    """`manage.py check --deploy --fail-level WARNING` with the production settings module and `env`
    (DATABASE_URL/REDIS_URL of the test run are left out: the check needs neither)."""
    base = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}
        and not key.startswith("SECURE_")
    }
    base.update(DJANGO_SETTINGS_MODULE="voiceagent.settings", **env)
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env=base,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


PRODUCTION = {
    "DEBUG": "false",
    "HTTPS": "true",
    "ALLOWED_HOSTS": "voice.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://voice.example.com",
    "TRUST_PROXY_HEADERS": "true",
}


def test_the_deploy_check_is_clean_in_production_settings() -> None:
    result = deploy_check(SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout


def test_the_deploy_check_catches_plain_http() -> None:
    """Without HTTPS the same check fails (no redirect, no HSTS): it is a real gate, not a formality."""
    result = deploy_check(SECRET_KEY=secrets.token_urlsafe(50), **{**PRODUCTION, "HTTPS": "false"})
    assert result.returncode != 0
    assert "security.W004" in result.stderr + result.stdout
    assert "security.W008" in result.stderr + result.stdout


def signed_in(user: User, **kwargs: object) -> Client:
    client = Client(**kwargs)  # type: ignore[arg-type]
    response = client.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert response.status_code == 302
    return client


def test_pages_carry_the_security_headers(staff_user: User) -> None:
    response = signed_in(staff_user).get("/")
    assert response.status_code == 200
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert response["Cross-Origin-Opener-Policy"] == "same-origin"
    assert "microphone=(self)" in response["Permissions-Policy"]
    assert "geolocation=()" in response["Permissions-Policy"]
    policy = dict(
        [*directive.split(" ", 1), ""][:2]
        for directive in (part.strip() for part in response["Content-Security-Policy"].split(";"))
    )
    assert policy["script-src"] == "'self'"
    assert policy["object-src"] == "'none'"
    assert policy["frame-ancestors"] == "'none'"
    assert policy["base-uri"] == "'self'"
    # The console's live feed (WebSocket to us) and the direct transport (the Realtime API).
    assert "ws://testserver" in policy["connect-src"].split()
    from django.conf import settings

    realtime = settings.REALTIME_BASE_URL.split("/v1")[0]
    assert realtime in policy["connect-src"].split()


def test_api_errors_and_probes_carry_them_too(client: Client) -> None:
    for response in (client.get("/healthz"), client.post("/rtc"), client.get("/no-such-page/")):
        assert "Content-Security-Policy" in response, response
        assert response["X-Content-Type-Options"] == "nosniff"


def test_session_and_csrf_cookies_are_secure_httponly_and_lax(staff_user: User) -> None:
    client = Client()
    client.get("/accounts/login/")
    csrf = client.cookies["csrftoken"]
    client.post(
        "/accounts/login/",
        {"username": staff_user.username, "password": PASSWORD, "csrfmiddlewaretoken": csrf.value},
    )
    session = client.cookies["sessionid"]
    assert session["httponly"] is True
    assert session["secure"] is True  # tests run with DEBUG off, as production does
    assert session["samesite"] == "Lax"
    assert csrf["secure"] is True
    assert csrf["samesite"] == "Lax"


@pytest.fixture
def https_on(settings: SettingsWrapper) -> None:
    """The settings HTTPS=true gives (read at start, so set here directly)."""
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True


@pytest.mark.usefixtures("https_on")
def test_with_https_plain_http_is_redirected_and_hsts_sent(staff_user: User) -> None:
    plain = Client().get("/accounts/login/?next=/")
    assert plain.status_code == 301
    assert plain["Location"] == "https://testserver/accounts/login/?next=/"

    secure = Client().get("/accounts/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
    assert "wss://testserver" in secure["Content-Security-Policy"]


@pytest.mark.usefixtures("https_on")
def test_probes_answer_on_plain_http(db: None, settings: SettingsWrapper) -> None:
    """Health checks reach the process directly (no TLS): they are exempt from the redirect."""
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    assert Client().get("/healthz").status_code == 200
    assert Client().get("/readyz").status_code == 200
    assert Client().get("/").status_code == 301


@pytest.mark.usefixtures("https_on")
def test_behind_the_proxy_forwarded_https_counts_as_secure(
    settings: SettingsWrapper, staff_user: User
) -> None:
    """With TRUST_PROXY_HEADERS the proxy's X-Forwarded-Proto: https is not redirected again."""
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    response = Client().get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert "Strict-Transport-Security" in response
