"""`manage.py check_deployment` against real parts: a migrated SQLite database, the machine's Redis,
the local engine (text-only) as the Realtime API. A production-like environment passes; each planted
misconfiguration fails the command (exit 1) with a report line that names it and says how to fix it.

The command runs as an operator runs it: a fresh process, settings read from the environment.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.screenshots import free_port

pytestmark = [pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parent.parent.parent
ENGINE_KEY = "sk-deploy-check-" + secrets.token_hex(12)
SIGNING_SECRET = "whsec_" + "ZGVwbG95LWNoZWNrLXNpZ25pbmctc2VjcmV0LTMyYnk="
STRONG_KEY = "k3y-" + secrets.token_urlsafe(48)
#: Redis database index for manual and test work of this area; keys under a per-run prefix.
REDIS_URL = "redis://127.0.0.1:6379/7"
INHERITED_OUT = {
    "DJANGO_SETTINGS_MODULE",
    "OPENAI_API_KEY",
    "REDIS_URL",
    "DATABASE_URL",
    "DEBUG",
    "SECRET_KEY",
    "PYTEST_CURRENT_TEST",
    "REALTIME_BASE_URL",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite database (its URL)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('db') / 'db.sqlite3'}"
    env = {
        **_clean_environ(),
        "DATABASE_URL": url,
        "DEBUG": "true",
        "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
    }
    done = subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return url


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    """The local engine, text-only, with its own key: the Realtime API the check talks to."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "realtime_local", "--no-speech", "--no-sip",
            "--host", "127.0.0.1", "--port", str(port), "--api-key", ENGINE_KEY,
        ],
        cwd=REPO,
        env=_clean_environ(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, "the engine exited"
            assert time.monotonic() < deadline, "the engine did not start"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        process.wait(timeout=15)


def _clean_environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in INHERITED_OUT}


@pytest.fixture
def production(database: str, engine_url: str) -> dict[str, str]:
    """The environment of a well-configured host (the local engine standing in for OpenAI)."""
    return {
        **_clean_environ(),
        "DJANGO_SETTINGS_MODULE": "voiceagent.settings",
        "DEBUG": "false",
        "SECRET_KEY": STRONG_KEY,
        "ALLOWED_HOSTS": "voiceagent.example.com",
        "CSRF_TRUSTED_ORIGINS": "https://voiceagent.example.com",
        "TRUST_PROXY_HEADERS": "true",
        "HTTPS": "true",
        "DATABASE_URL": database,
        "REDIS_URL": REDIS_URL,
        "REDIS_KEY_PREFIX": "vatest-deploy-" + secrets.token_hex(6),
        "REALTIME_BASE_URL": engine_url,
        "REALTIME_LOCAL_API_KEY": ENGINE_KEY,
        "OPENAI_SIGNING_SECRET": SIGNING_SECRET,
        "FROM_NUMBER": "+15551234567",
        "NO_COLOR": "1",
    }


def check(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "check_deployment", "--timeout", "3", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def lines(report: str, level: str) -> list[str]:
    """The report's entries of one level, each with its fix line."""
    entries: list[str] = []
    for line in report.splitlines():
        if line.startswith((" ", "\t")) and entries:
            entries[-1] += "\n" + line.strip()
        elif line.startswith(level):
            entries.append(line)
        elif line.startswith(("OK", "WARNING", "ERROR")):
            entries.append("")
    return [entry for entry in entries if entry]


def test_a_well_configured_host_passes(production: dict[str, str]) -> None:
    done = check(production)
    assert done.returncode == 0, done.stdout + done.stderr
    report = done.stdout
    assert "0 error(s)" in report
    for topic in ("settings", "database", "redis", "realtime", "webhook", "phone"):
        assert any(f" {topic} " in line for line in lines(report, "OK")), (topic, report)
    assert "all migrations applied" in report
    assert "a channel layer message went there and back" in report
    assert "accepts the key" in report
    assert "security.W021" not in report  # silenced in settings (HSTS preload is opt-in): not reported


def test_the_report_never_shows_a_secret(production: dict[str, str]) -> None:
    production["DATABASE_URL"] = "postgres://voiceagent:hunter2-db-password@127.0.0.1:1/voiceagent"
    production["REDIS_URL"] = f"redis://:redis-password-x@127.0.0.1:{free_port()}/7"
    done = check(production)
    shown = done.stdout + done.stderr
    for secret in (STRONG_KEY, ENGINE_KEY, SIGNING_SECRET, "hunter2-db-password", "redis-password-x"):
        assert secret not in shown


# Each planted misconfiguration: the variables changed, and words the ERROR entry must contain.
PLANTED: dict[str, tuple[dict[str, str], list[str]]] = {
    "DEBUG on": ({"DEBUG": "true"}, ["DEBUG is on", "DEBUG=false"]),
    "short SECRET_KEY": (
        {"SECRET_KEY": "short-key"},
        ["SECRET_KEY is weak", "9 characters", "get_random_secret_key"],
    ),
    "ALLOWED_HOSTS *": ({"ALLOWED_HOSTS": "*"}, ["ALLOWED_HOSTS contains '*'"]),
    "cookies not Secure": ({"SECURE_COOKIES": "false"}, ["cookies are not Secure", "SECURE_COOKIES"]),
    "redirect loop": (
        {"HTTPS": "true", "TRUST_PROXY_HEADERS": "false"},
        ["SECURE_SSL_REDIRECT is on (HTTPS=true) but TRUST_PROXY_HEADERS is off", "TRUST_PROXY_HEADERS=true"],
    ),
    "database unreachable": (
        {"DATABASE_URL": "postgres://postgres@127.0.0.1:{port}/va_deploy"},
        ["Cannot connect to the database", "postgresql 127.0.0.1:{port}/va_deploy", "DATABASE_URL"],
    ),
    "Redis down": (
        {"REDIS_URL": "redis://127.0.0.1:{port}/7"},
        ["Redis at redis://127.0.0.1:{port}/7 does not work", "REDIS_URL"],
    ),
    "wrong API key": (
        {"REALTIME_LOCAL_API_KEY": "sk-not-the-engine-key"},
        ["refused the key (401 invalid_api_key)", "REALTIME_LOCAL_API_KEY"],
    ),
    "engine unreachable": (
        {"REALTIME_BASE_URL": "http://127.0.0.1:{port}/v1"},
        ["Cannot reach the local engine at http://127.0.0.1:{port}/v1", "REALTIME_BASE_URL"],
    ),
    "webhook secret not base64": (
        {"OPENAI_SIGNING_SECRET": "whsec_this is not base64!"},
        ["OPENAI_SIGNING_SECRET is not base64 after whsec_", "whsec_ followed by base64"],
    ),
    "webhook secret without prefix": (
        {"OPENAI_SIGNING_SECRET": "ZGVwbG95LWNoZWNrLXNpZ25pbmctc2VjcmV0LTMyYnk="},
        ["OPENAI_SIGNING_SECRET does not start with whsec_"],
    ),
    "old webhook secret malformed": (
        {"OPENAI_SIGNING_SECRET_PREVIOUS": f"{SIGNING_SECRET},whsec_%%%"},
        ["OPENAI_SIGNING_SECRET_PREVIOUS entry 2 is not base64"],
    ),
    "FROM_NUMBER not E.164": (
        {"FROM_NUMBER": "555-0100"},
        ["FROM_NUMBER '555-0100' is not an E.164 number", "+15551234567"],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PLANTED))
def test_a_planted_misconfiguration_fails_the_check_and_is_named(
    production: dict[str, str], case: str
) -> None:
    changes, expected = PLANTED[case]
    port = str(free_port())  # nothing listens there
    production.update({name: value.replace("{port}", port) for name, value in changes.items()})
    done = check(production)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = lines(done.stdout, "ERROR")
    wanted = [text.replace("{port}", port) for text in expected]
    assert any(all(text in entry for text in wanted) for entry in errors), (wanted, done.stdout)
    assert "fix: " in "\n".join(errors)


def test_unapplied_migrations_are_named_with_the_command_that_applies_them(
    production: dict[str, str], tmp_path: Path
) -> None:
    production["DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    done = check(production)
    assert done.returncode == 1
    (entry,) = [e for e in lines(done.stdout, "ERROR") if "not applied" in e]
    assert "calls.0001_initial" in entry or "contenttypes.0001_initial" in entry
    assert "manage.py migrate" in entry


def test_without_redis_there_is_a_warning_not_an_error(production: dict[str, str]) -> None:
    del production["REDIS_URL"]
    done = check(production)
    assert done.returncode == 0, done.stdout
    (entry,) = [e for e in lines(done.stdout, "WARNING") if "REDIS_URL is not set" in e]
    assert "--no-observer" in entry


def test_strict_makes_warnings_fail(production: dict[str, str]) -> None:
    production.update(TRUST_PROXY_HEADERS="false", HTTPS="false")
    assert check(production).returncode == 0
    done = check(production, "--strict")
    assert done.returncode == 1
    assert any("TRUST_PROXY_HEADERS is off" in e for e in lines(done.stdout, "WARNING"))
