"""Authentication of the engine's API: the API key, ephemeral `ek_` keys, and the 401 shapes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

from tests.engine.conftest import RunningEngine, StartEngine, assert_error_shape, make_offer

REPO = Path(__file__).resolve().parents[2]


async def test_missing_key_is_401_with_the_api_error_shape(engine: RunningEngine) -> None:
    response = await engine.http.post(f"{engine.base_url}/realtime/client_secrets", json={})
    assert response.status_code == 401
    error = assert_error_shape(response.json())
    assert error["type"] == "invalid_request_error"
    assert "Authorization: Bearer" in str(error["message"])


async def test_wrong_key_is_401_invalid_api_key_without_echoing_the_key(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={},
        headers={"Authorization": "Bearer sk-not-the-engine-key"},
    )
    assert response.status_code == 401
    error = assert_error_shape(response.json())
    assert error["code"] == "invalid_api_key"
    assert "sk-not-the-engine-key" not in str(error["message"])


async def test_healthz_needs_no_key_and_reports_readiness(engine: RunningEngine) -> None:
    response = await engine.http.get(f"http://127.0.0.1:{engine.port}/healthz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["calls_active"] == 0
    assert body["speech"] == "disabled"
    assert body["uptime_s"] >= 0


async def test_ephemeral_key_cannot_control_calls(engine: RunningEngine) -> None:
    secret = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets", json={}, headers=engine.auth
    )
    call_id = await engine.incoming_call()
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls/{call_id}/hangup",
        headers={"Authorization": f"Bearer {secret.json()['value']}"},
    )
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "invalid_api_key"


async def test_expired_ephemeral_key_is_refused(start_engine: StartEngine) -> None:
    engine = await start_engine(client_secret_min_ttl=1)
    secret = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"expires_after": {"anchor": "created_at", "seconds": 1}},
        headers=engine.auth,
    )
    assert secret.status_code == 200, secret.text
    await asyncio.sleep(1.1)
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        content=await make_offer(),
        headers={"Authorization": f"Bearer {secret.json()['value']}", "Content-Type": "application/sdp"},
    )
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "ephemeral_key_expired"


async def test_ephemeral_key_creates_one_call_then_is_used_up(engine: RunningEngine) -> None:
    secret = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets",
        json={"session": {"type": "realtime", "instructions": "From the key."}},
        headers=engine.auth,
    )
    headers = {"Authorization": f"Bearer {secret.json()['value']}", "Content-Type": "application/sdp"}
    first = await engine.http.post(
        f"{engine.base_url}/realtime/calls", content=await make_offer(), headers=headers
    )
    assert first.status_code == 201, first.text
    call_id = first.headers["Location"].rsplit("/", 1)[-1]
    assert engine.state.calls.get(call_id).session["instructions"] == "From the key."

    second = await engine.http.post(
        f"{engine.base_url}/realtime/calls", content=await make_offer(), headers=headers
    )
    assert second.status_code == 401
    assert assert_error_shape(second.json())["code"] == "ephemeral_key_used"


async def test_unknown_ephemeral_key_is_refused(engine: RunningEngine) -> None:
    response = await engine.http.post(
        f"{engine.base_url}/realtime/calls",
        content=await make_offer(),
        headers={"Authorization": "Bearer ek_never_issued", "Content-Type": "application/sdp"},
    )
    assert response.status_code == 401
    assert assert_error_shape(response.json())["code"] == "invalid_api_key"


def test_non_loopback_bind_with_the_default_key_refuses_to_start() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_LOCAL_")}
    result = subprocess.run(
        [sys.executable, "-m", "realtime_local", "--host", "0.0.0.0", "--no-speech", "--port", "0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "default API key" in result.stderr
    assert "0.0.0.0" in result.stderr


async def test_ephemeral_key_is_not_spent_on_an_offer_that_cannot_be_answered(engine: RunningEngine) -> None:
    secret = await engine.http.post(
        f"{engine.base_url}/realtime/client_secrets", json={}, headers=engine.auth
    )
    headers = {"Authorization": f"Bearer {secret.json()['value']}", "Content-Type": "application/sdp"}
    broken = await engine.http.post(f"{engine.base_url}/realtime/calls", content="v=0\r\n", headers=headers)
    assert broken.status_code == 400
    assert assert_error_shape(broken.json())["param"] == "sdp"
    retry = await engine.http.post(
        f"{engine.base_url}/realtime/calls", content=await make_offer(), headers=headers
    )
    assert retry.status_code == 201, retry.text
