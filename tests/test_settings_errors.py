"""Configuration mistakes fail early with a message that names the variable to set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pytest_django.fixtures import Settings

from voiceagent.config import MissingSettingError, require_setting

REPO = Path(__file__).resolve().parent.parent


def test_require_setting_names_the_missing_variable(settings: Settings) -> None:
    settings.OPENAI_SIGNING_SECRET = ""
    with pytest.raises(MissingSettingError, match="OPENAI_SIGNING_SECRET is not set") as raised:
        require_setting("OPENAI_SIGNING_SECRET", purpose="verify SIP webhooks")
    assert raised.value.name == "OPENAI_SIGNING_SECRET"
    assert "verify SIP webhooks" in str(raised.value)


def test_require_setting_returns_the_value_when_set(settings: Settings) -> None:
    settings.FROM_NUMBER = "+15551234567"
    assert require_setting("FROM_NUMBER", purpose="place calls") == "+15551234567"


def _import_settings(**env: str) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_SETTINGS_MODULE"}
    }
    clean.update(env)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO,
        env={**clean, "DJANGO_SETTINGS_MODULE": "voiceagent.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.skipif((REPO / ".env").exists(), reason="a .env file in the checkout supplies settings")
def test_production_settings_without_secret_key_fail_naming_it() -> None:
    done = _import_settings(DEBUG="false")
    assert done.returncode != 0
    assert "ImproperlyConfigured" in done.stderr
    assert "SECRET_KEY is not set" in done.stderr


@pytest.mark.skipif((REPO / ".env").exists(), reason="a .env file in the checkout supplies settings")
def test_production_settings_with_a_secret_key_load() -> None:
    done = _import_settings(DEBUG="false", SECRET_KEY="x" * 50)
    assert done.returncode == 0, done.stderr
