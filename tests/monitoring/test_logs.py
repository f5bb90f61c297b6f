"""Log lines: JSON objects with timestamp, level, logger and event for our loggers, Django's and
structlog's alike; the request id (incoming when sane, else made) on the request's lines and in the
response; no secret value ever in the output."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.test import AsyncClient, Client
from pytest_django.fixtures import Settings as SettingsWrapper

from scripts.screenshots import REPO
from voiceagent.monitoring.logs import REDACTED, logging_config, redact

pytestmark = pytest.mark.django_db

Lines = Callable[[], list[dict[str, Any]]]

PLANTED = {
    "SECRET_KEY": "planted-django-secret-key-0123456789abcdefghijklmnopqrstuvwxyz",
    "OPENAI_API_KEY": "sk-proj-PlantedOpenAIKey0123456789abcdefXYZ",
    "OPENAI_SIGNING_SECRET": "whsec_UGxhbnRlZFNpZ25pbmdTZWNyZXQwMTIzNDU2Nzg5",
    "METRICS_TOKEN": "planted-metrics-token-0123456789",
    "OPENAI_SIGNING_SECRET_PREVIOUS": "whsec_UHJldmlvdXNQbGFudGVkU2lnbmluZ1NlY3JldA==",
}
DB_PASSWORD = "planted-db-password-42"
CLIENT_SECRET = "ek_PlantedClientSecret0123456789"

SCRIPT = """
import logging, structlog, django
django.setup()
from django.conf import settings
from django.test import Client
from django.test.utils import setup_test_environment
setup_test_environment()
log = logging.getLogger("calls.services.calls")
log.warning("key %s, secret %s, token %s", settings.OPENAI_API_KEY, settings.OPENAI_SIGNING_SECRET,
            settings.METRICS_TOKEN)
log.info("signing key alone: %s; the one before: %s", settings.OPENAI_SIGNING_SECRET.removeprefix("whsec_"),
         settings.OPENAI_SIGNING_SECRET_PREVIOUS[0])
logging.getLogger("daphne.http_protocol").info(
    "headers {'authorization': 'Bearer %s'}", "opaque-credential-xyz")
logging.getLogger("calls.views").info("client secret %s minted", "CLIENT_SECRET")
structlog.get_logger("voiceagent.test").info("structured", secret_key=settings.SECRET_KEY,
                                             db=settings.DATABASES["default"]["PASSWORD"])
try:
    raise RuntimeError("upstream echoed " + settings.OPENAI_API_KEY)
except RuntimeError:
    log.exception("failed")
Client().get("/metrics", headers={"X-Request-ID": "req-planted-1",
                                  "Authorization": "Bearer wrong-token-value"})
""".replace("CLIENT_SECRET", CLIENT_SECRET)


def test_every_line_is_json_and_no_planted_secret_is_ever_written() -> None:
    env = {
        **os.environ,
        **PLANTED,
        "DEBUG": "false",
        "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
        "DATABASE_URL": f"postgres://voiceagent:{DB_PASSWORD}@127.0.0.1:1/never_connected",
        "LOG_LEVEL": "INFO",
    }
    env.pop("LOG_FORMAT", None)
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    for planted in [*PLANTED.values(), DB_PASSWORD, CLIENT_SECRET, "opaque-credential-xyz"]:
        assert planted not in output, planted
    assert PLANTED["OPENAI_SIGNING_SECRET"].removeprefix("whsec_") not in output

    every = [json.loads(line) for line in result.stderr.splitlines()]
    # Python warnings are log lines too (a fresh checkout warns that staticfiles/ is not collected).
    lines = [line for line in every if line["logger"] != "py.warnings"]
    assert len(lines) == 7, result.stderr
    for line in every:
        assert list(line)[:4] == ["timestamp", "level", "logger", "event"], line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z", line["timestamp"])
    by_logger = {line["logger"]: line for line in lines}
    assert by_logger["calls.views"]["event"] == f"client secret {REDACTED} minted"
    assert by_logger["voiceagent.test"]["secret_key"] == REDACTED
    assert by_logger["voiceagent.test"]["db"] == REDACTED
    failed = next(line for line in lines if line["event"] == "failed")
    assert failed["level"] == "error" and "RuntimeError: upstream echoed [REDACTED]" in failed["exception"]
    refused = by_logger["django.request"]
    assert (refused["event"], refused["level"], refused["request_id"]) == (
        "Unauthorized: /metrics",
        "warning",
        "req-planted-1",
    )


def test_credential_shapes_are_redacted_without_settings_knowing_them() -> None:
    text = (
        "Authorization: Basic dXNlcjpwYXNz; sk-live0123456789abcdefgh; ek_abc123def456ghi; "
        "whsec_AAAABBBBCCCC; redis://:pa55word@cache:6379/0; bearer abc.def-ghi"
    )
    cleaned = redact(text)
    for secret in ("dXNlcjpwYXNz", "sk-live0123", "ek_abc123", "whsec_AAAA", "pa55word", "abc.def-ghi"):
        assert secret not in cleaned
    assert "redis://:[REDACTED]@cache:6379/0" in cleaned
    assert redact("call rtc_123 ended; 8 events") == "call rtc_123 ended; 8 events"


def test_a_request_id_is_made_echoed_and_on_the_requests_lines(
    client: Client, settings: SettingsWrapper, json_logs: Lines
) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []  # /metrics is a logged 404
    made = client.get("/metrics")
    kept = client.get("/metrics", headers={"X-Request-ID": "lb-7f3a:42"})
    insane = client.get("/metrics", headers={"X-Request-ID": 'x" forged=1'})

    assert re.fullmatch(r"[0-9a-f]{32}", made["X-Request-ID"])
    assert kept["X-Request-ID"] == "lb-7f3a:42"
    assert re.fullmatch(r"[0-9a-f]{32}", insane["X-Request-ID"])
    not_found = [line for line in json_logs() if line["logger"] == "django.request"]
    assert [line["request_id"] for line in not_found] == [
        made["X-Request-ID"],
        "lb-7f3a:42",
        insane["X-Request-ID"],
    ]
    assert client.get("/healthz")["X-Request-ID"]


async def test_async_requests_get_their_own_ids(settings: SettingsWrapper, json_logs: Lines) -> None:
    settings.METRICS_TOKEN, settings.METRICS_ALLOWED_IPS = "", []
    first = await AsyncClient().get("/metrics", headers={"X-Request-ID": "async-one"})
    second = await AsyncClient().get("/metrics")

    assert first["X-Request-ID"] == "async-one" and second["X-Request-ID"] != "async-one"
    ids = [line.get("request_id") for line in json_logs() if line["logger"] == "django.request"]
    assert ids == ["async-one", second["X-Request-ID"]]


def test_console_format_and_a_wrong_format() -> None:
    config = logging_config(log_format="console", level="INFO")
    assert config["formatters"]["structured"]["log_format"] == "console"
    with pytest.raises(ImproperlyConfigured, match="LOG_FORMAT"):
        logging_config(log_format="xml", level="INFO")
