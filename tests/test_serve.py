"""`manage.py serve`: the product in one command, static files included, stopped cleanly by SIGTERM."""

from __future__ import annotations

import signal
import urllib.request

import pytest

from scripts.screenshots import demo_server


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
