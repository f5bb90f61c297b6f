"""`manage.py serve`: the product in one command, static files included, stopped cleanly by SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from scripts.screenshots import REPO, demo_server, free_port


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


@pytest.mark.parametrize("debug", [True, False], ids=["debug", "production"])
def test_serve_answers_health_and_static_files_then_stops_on_sigterm(debug: bool) -> None:
    with demo_server(debug=debug) as server:
        status, content_type, body = _get(server.url("/static/console/console.js"))
        assert status == 200
        assert "javascript" in content_type
        assert b"startConsole" in body
        status, content_type, body = _get(server.url("/static/css/app.css"))
        assert (status, content_type.split(";")[0]) == (200, "text/css")
        assert _get(server.url("/static/admin/css/base.css"))[0] == 200
        status, _, body = _get(server.url("/readyz"))
        assert status == 200 and b'"ok"' in body

        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=15) == 0


def _serve_env(*, engine_port: int, tmp_path: Path) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "REDIS_URL", "PYTEST_CURRENT_TEST"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="voiceagent.settings",
        DEBUG="true",
        SECRET_KEY="serve-test-" + "x" * 40,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        REALTIME_LOCAL_PORT=str(engine_port),
    )
    return env


def _manage(*args: str) -> list[str]:
    return [sys.executable, str(REPO / "manage.py"), *args]


def test_serve_fails_clearly_when_the_engine_exits(tmp_path: Path) -> None:
    with socket.socket() as taken:  # the engine's port is already in use, so the engine cannot start
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        engine_port = taken.getsockname()[1]
        done = subprocess.run(
            _manage("serve", "--port", str(free_port()), "--engine-timeout", "60"),
            cwd=REPO,
            env=_serve_env(engine_port=engine_port, tmp_path=tmp_path),
            capture_output=True,
            text=True,
            timeout=90,
        )
    assert done.returncode != 0
    assert "The local engine exited with status" in done.stderr
    assert "voiceagent is serving" not in done.stdout


def test_serve_fails_clearly_when_its_port_is_taken(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            _manage("serve", "--no-engine", "--port", str(port)),
            cwd=REPO,
            env=_serve_env(engine_port=free_port(), tmp_path=tmp_path),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"Cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "voiceagent is serving" not in done.stdout


@pytest.mark.speech
def test_serve_starts_the_engine_and_sigterm_stops_both(tmp_path: Path) -> None:
    engine_port, web_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            _manage("serve", "--port", str(web_port)),
            cwd=REPO,
            env=_serve_env(engine_port=engine_port, tmp_path=tmp_path),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 120
        while "voiceagent is serving" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        assert _get(f"http://127.0.0.1:{engine_port}/healthz")[0] == 200
        assert _get(f"http://127.0.0.1:{web_port}/healthz")[0] == 200
        assert "Local engine ready in" in log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", engine_port), timeout=2).close()
