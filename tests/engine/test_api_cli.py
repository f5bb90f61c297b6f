"""`python -m realtime_local` as the Django side runs it: start, readiness, graceful shutdown."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from realtime_local.cli import parse_config
from realtime_local.config import ConfigError, EngineConfig

REPO = Path(__file__).resolve().parents[2]


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_LOCAL_")}
    env.update(extra)
    return env


def _read_until(process: subprocess.Popen[str], pattern: str, seconds: float) -> tuple[re.Match[str], str]:
    """Read the engine's log (stderr) until `pattern` matches; fail after `seconds`."""
    assert process.stderr is not None
    deadline = time.monotonic() + seconds
    seen = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if not line:
            break
        seen += line
        match = re.search(pattern, line)
        if match:
            return match, seen
    pytest.fail(f"engine log never matched {pattern!r}:\n{seen}")


@pytest.fixture
def engine_process() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_local", "--no-speech", "--port", "0", "--max-calls", "2"],
        cwd=REPO,
        env=_clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    yield process
    if process.poll() is None:
        process.kill()
        process.wait(10)


def test_engine_process_prints_its_base_url_and_shuts_down_gracefully(
    engine_process: subprocess.Popen[str],
) -> None:
    match, log = _read_until(engine_process, r"base URL (http://127\.0\.0\.1:\d+/v1)", 30)
    base_url = match.group(1)
    _, more = _read_until(engine_process, r"ready in [\d.]+ s", 30)
    log += more
    assert "API key: sk-local" in log
    assert re.search(r"webhook secret: whsec_\S+ \(generated\)", log)

    health = httpx.get(base_url.removesuffix("/v1") + "/healthz", timeout=5)
    assert health.status_code == 200
    created = httpx.post(
        f"{base_url}/realtime/_local/incoming_calls", headers={"Authorization": "Bearer sk-local"}, timeout=5
    )
    assert created.status_code == 201
    call_id = created.json()["call_id"]

    engine_process.send_signal(signal.SIGTERM)
    assert engine_process.wait(20) == 0
    assert engine_process.stderr is not None
    tail = engine_process.stderr.read()
    assert f"call {call_id} ended (engine_shutdown)" in tail


def test_flags_override_environment_variables() -> None:
    config, level = parse_config(
        ["--max-calls", "7", "--webhook-url", "http://127.0.0.1:9/hook"],
        {
            "REALTIME_LOCAL_MAX_CALLS": "3",
            "REALTIME_LOCAL_API_KEY": "sk-from-env",
            "REALTIME_LOCAL_ICE_SERVERS": "stun:a.example:3478, turn:b.example",
            "REALTIME_LOCAL_NO_SPEECH": "1",
        },
    )
    assert config.max_calls == 7
    assert config.api_key == "sk-from-env"
    assert config.webhook_url == "http://127.0.0.1:9/hook"
    assert config.ice_servers == ["stun:a.example:3478", "turn:b.example"]
    assert config.speech is False
    assert config.webhook_secret_generated and config.webhook_secret.startswith("whsec_")
    assert level == "INFO"


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.10", "::"])
def test_default_key_is_refused_off_loopback(host: str) -> None:
    with pytest.raises(ConfigError, match="default API key"):
        EngineConfig(host=host).validate()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_default_key_is_fine_on_loopback(host: str) -> None:
    EngineConfig(host=host).validate()


def test_a_secret_key_may_listen_anywhere() -> None:
    EngineConfig(host="0.0.0.0", api_key="sk-a-real-secret").validate()


@pytest.mark.speech
def test_healthz_is_503_while_speech_loads_then_200() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "realtime_local", "--port", "0"],
        cwd=REPO,
        env=_clean_env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        match, _ = _read_until(process, r"base URL (http://127\.0\.0\.1:\d+/v1)", 30)
        health_url = match.group(1).removesuffix("/v1") + "/healthz"
        first = httpx.get(health_url, timeout=5)
        assert first.status_code == 503
        assert first.json()["status"] == "loading"
        _read_until(process, r"ready in [\d.]+ s \(speech: ready", 120)
        ready = httpx.get(health_url, timeout=5)
        assert ready.status_code == 200
        assert ready.json()["speech"] == "ready"
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(20)


async def test_create_app_with_a_given_runtime_works_with_aiohttp_test_utilities() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from realtime_local.app import ENGINE, create_app
    from realtime_local.call import EngineRuntime

    runtime = EngineRuntime(speech=None, ice_servers=[], loopback_candidates=True)
    app = create_app(EngineConfig(speech=True), runtime)  # speech=True is moot: the runtime is given
    async with TestClient(TestServer(app)) as client:
        health = await client.get("/healthz")
        assert health.status == 200
        assert (await health.json())["speech"] == "disabled"
        created = await client.post(
            "/v1/realtime/_local/incoming_calls", headers={"Authorization": "Bearer sk-local"}
        )
        assert created.status == 201
        call = app[ENGINE].calls.get((await created.json())["call_id"])
        assert call.runtime is runtime
