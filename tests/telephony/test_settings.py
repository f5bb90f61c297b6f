"""Phone-call settings: a development signing secret only without a key; bad values fail at start."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PRINT = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(repr(s.OPENAI_SIGNING_SECRET), s.TELEPHONY_MAX_CONCURRENT_CALLS, s.TELEPHONY_WEBHOOK_MAX_BYTES)"
)

pytestmark = pytest.mark.skipif(
    (REPO / ".env").exists(), reason="a .env file in the checkout supplies settings"
)


def load(**env: str) -> subprocess.CompletedProcess[str]:
    names = {
        "OPENAI_API_KEY",
        "OPENAI_SIGNING_SECRET",
        "TELEPHONY_MAX_CONCURRENT_CALLS",
        "TELEPHONY_BUSINESS_HOURS",
        "TELEPHONY_WEBHOOK_MAX_BYTES",
        "DJANGO_SETTINGS_MODULE",
    }
    clean = {k: v for k, v in os.environ.items() if k not in names}
    clean.update(SECRET_KEY="x" * 50, DEBUG="false", DJANGO_SETTINGS_MODULE="voiceagent.settings", **env)
    return subprocess.run(
        [sys.executable, "-c", PRINT], cwd=REPO, env=clean, capture_output=True, text=True, timeout=60
    )


def test_without_a_key_a_development_secret_from_var_signs_the_local_engine_webhooks() -> None:
    done = load()
    assert done.returncode == 0, done.stderr
    secret = (REPO / "var" / "webhook_secret").read_text().strip()
    assert secret.startswith("whsec_") and done.stdout.split()[0] == repr(secret)
    assert load().stdout.split()[0] == repr(secret)  # kept across restarts


def test_with_a_key_there_is_no_default_secret() -> None:
    done = load(OPENAI_API_KEY="sk-real")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[0] == "''"


def test_a_given_secret_is_used_as_is() -> None:
    done = load(OPENAI_API_KEY="sk-real", OPENAI_SIGNING_SECRET="whsec_abc")
    assert done.stdout.split()[0] == "'whsec_abc'"


def test_empty_numbers_mean_unset_and_bad_ones_name_the_variable() -> None:
    done = load(TELEPHONY_MAX_CONCURRENT_CALLS="", TELEPHONY_WEBHOOK_MAX_BYTES="")
    assert done.stdout.split()[1:] == ["None", "262144"]
    assert load(TELEPHONY_MAX_CONCURRENT_CALLS="3").stdout.split()[1] == "3"
    bad = load(TELEPHONY_MAX_CONCURRENT_CALLS="-1")
    assert bad.returncode != 0 and "TELEPHONY_MAX_CONCURRENT_CALLS" in bad.stderr


def test_malformed_business_hours_stop_the_start() -> None:
    done = load(TELEPHONY_BUSINESS_HOURS="Mon-Fri 9-17")
    assert done.returncode != 0
    assert "TELEPHONY_BUSINESS_HOURS" in done.stderr and "ImproperlyConfigured" in done.stderr
