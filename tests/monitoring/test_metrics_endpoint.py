"""Who may read `/metrics`: nobody until METRICS_TOKEN or METRICS_ALLOWED_IPS is set (404); the bearer
token (401 without it); the allow-list on the TCP peer's address (403 outside it, forwarded headers
ignored); both checks when both are set."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from scripts.screenshots import REPO

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-abcdefghijklmnop"


def get(client: Client, *, token: str | None = None, addr: str = "127.0.0.1", **headers: str) -> int:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return client.get("/metrics", REMOTE_ADDR=addr, headers=headers).status_code


def test_without_token_or_allow_list_the_endpoint_does_not_exist(
    client: Client, settings: SettingsWrapper
) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []
    assert get(client) == 404
    assert get(client, token="anything") == 404


def test_the_token_is_required_when_set(client: Client, settings: SettingsWrapper) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = TOKEN, []
    response = client.get("/metrics")
    assert response.status_code == 401 and response["WWW-Authenticate"].startswith("Bearer")
    assert get(client, token=TOKEN + "x") == 401
    assert get(client, Authorization=f"Basic {TOKEN}") == 401
    assert get(client, token=TOKEN, addr="203.0.113.9") == 200  # no allow-list: any address with the token

    body = client.get("/metrics", headers={"Authorization": f"bearer {TOKEN}"}).content.decode()
    assert "# TYPE voiceagent_call_setups_total counter" in body
    assert 'voiceagent_live_calls{source="web"} 0.0' in body
    assert TOKEN not in body


def test_the_allow_list_is_checked_on_the_peer_address(client: Client, settings: SettingsWrapper) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", ["127.0.0.0/8", "2001:db8::1"]
    assert get(client, addr="127.0.0.1") == 200
    assert get(client, addr="2001:db8::1") == 200
    assert get(client, addr="::ffff:127.0.0.1") == 200
    assert get(client, addr="198.51.100.7") == 403
    assert (
        get(client, addr="198.51.100.7", **{"X-Forwarded-For": "127.0.0.1", "X-Real-IP": "127.0.0.1"}) == 403
    )


def test_both_checks_apply_when_both_are_set(client: Client, settings: SettingsWrapper) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = TOKEN, ["10.0.0.0/8"]
    assert get(client, token=TOKEN, addr="10.1.2.3") == 200
    assert get(client, addr="10.1.2.3") == 401
    assert get(client, token=TOKEN, addr="127.0.0.1") == 403


def test_only_get(client: Client, settings: SettingsWrapper) -> None:
    settings.METRICS_TOKEN = TOKEN
    response = client.post("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 405


def test_a_malformed_allow_list_stops_the_start_with_its_name() -> None:
    env = {
        **os.environ,
        "METRICS_ALLOWED_IPS": "127.0.0.1,not-a-network",
        "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
    }
    env.setdefault("SECRET_KEY", "x" * 50)
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "METRICS_ALLOWED_IPS" in result.stderr and "not-a-network" in result.stderr


def test_a_worker_serves_its_own_series_on_its_metrics_port(settings: SettingsWrapper) -> None:
    """`manage.py observe` with METRICS_WORKER_PORT: the worker's counters on its own port, without
    the live calls (the web processes report those; Prometheus would add the copies up)."""
    import urllib.request

    from voiceagent.monitoring.metrics import record_call_setup, serve_worker_metrics

    settings.METRICS_WORKER_PORT = None
    assert serve_worker_metrics() is None
    settings.METRICS_WORKER_PORT, settings.METRICS_WORKER_HOST = 0, "127.0.0.1"  # 0: any free port
    port = serve_worker_metrics()
    record_call_setup("sip", "missed")

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        body = response.read().decode()
    assert 'voiceagent_call_setups_total{outcome="missed",transport="sip"}' in body
    assert "voiceagent_live_calls" not in body
