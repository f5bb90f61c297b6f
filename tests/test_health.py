"""/healthz and /readyz: JSON, no authentication, and real failures reported by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE_REDIS = "redis://127.0.0.1:1/0"


def _redis_layer(url: str) -> dict[str, object]:
    return {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [url]}}}


def test_healthz_answers_without_authentication(client: Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_is_ok_when_database_and_channel_layer_work(client: Client) -> None:
    response = client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is True
    assert "no-cache" in response["Cache-Control"]


@pytest.mark.django_db
def test_readyz_reports_an_unreachable_channel_layer(client: Client, settings: SettingsWrapper) -> None:
    settings.CHANNEL_LAYERS = _redis_layer(UNREACHABLE_REDIS)
    response = client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["failing"] == ["channel_layer"]
    assert body["checks"]["database"]["ok"] is True
    assert body["checks"]["channel_layer"]["ok"] is False
    assert "connect" in body["checks"]["channel_layer"]["error"].lower()
    assert body["error"].startswith("channel_layer: ")


@pytest.mark.django_db
def test_readyz_round_trips_through_a_real_redis_layer(client: Client, settings: SettingsWrapper) -> None:
    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.exceptions.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CHANNEL_LAYERS = _redis_layer(url)
    response = client.get("/readyz")
    assert response.status_code == 200, response.content
    assert response.json()["checks"]["channel_layer"]["ok"] is True


def _readyz_in_a_process_with(database_url: str) -> tuple[int, dict[str, object]]:
    """Ask /readyz in a fresh Django process whose database is `database_url` (no test DB, no mocks)."""
    code = (
        "import json, django; django.setup();"
        "from django.test import Client;"
        "r = Client(HTTP_HOST='127.0.0.1').get('/readyz');"
        "print(r.status_code); print(r.content.decode())"
    )
    env = {**os.environ, "DATABASE_URL": database_url, "DJANGO_SETTINGS_MODULE": "voiceagent.test_settings"}
    env.pop("REDIS_URL", None)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    status, body = done.stdout.strip().split("\n", 1)
    return int(status), json.loads(body)


@pytest.mark.parametrize(
    ("database_url", "expected"),
    [
        ("postgres://postgres@127.0.0.1:1/nowhere", "connection"),
        ("sqlite:////nonexistent-directory/for/readyz.sqlite3", "unable to open database file"),
    ],
    ids=["postgres-refused", "sqlite-unopenable"],
)
def test_readyz_reports_an_unreachable_database(database_url: str, expected: str) -> None:
    status, body = _readyz_in_a_process_with(database_url)
    assert status == 503
    assert body["status"] == "fail"
    assert body["failing"] == ["database"]
    checks = body["checks"]
    assert isinstance(checks, dict)
    assert checks["channel_layer"]["ok"] is True
    assert expected in checks["database"]["error"].lower()
    assert str(body["error"]).startswith("database: OperationalError")
