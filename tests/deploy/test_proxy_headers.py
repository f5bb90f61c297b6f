"""Django believes a proxy's X-Forwarded-Proto/-Host only when TRUST_PROXY_HEADERS says a proxy sets them.

Each case loads the real settings module in a fresh process with the variable as an operator would set
it, then asks Django about a request that carries forged forwarding headers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent.parent

PROBE = """
import json, django
django.setup()
from django.test import RequestFactory
request = RequestFactory().get(
    "/", HTTP_HOST="127.0.0.1", HTTP_X_FORWARDED_PROTO="https", HTTP_X_FORWARDED_HOST="localhost"
)
print(json.dumps({"secure": request.is_secure(), "host": request.get_host()}))
"""


def _forged_request(**env: str) -> dict[str, Any]:
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DJANGO_SETTINGS_MODULE", "TRUST_PROXY_HEADERS", "REDIS_URL"}
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO,
        env={**clean, **env, "DJANGO_SETTINGS_MODULE": "voiceagent.test_settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_forwarded_headers_are_ignored_by_default() -> None:
    assert _forged_request() == {"secure": False, "host": "127.0.0.1"}


def test_forwarded_headers_are_ignored_when_trust_is_off() -> None:
    assert _forged_request(TRUST_PROXY_HEADERS="false") == {"secure": False, "host": "127.0.0.1"}


def test_forwarded_headers_are_honoured_when_trust_is_on() -> None:
    assert _forged_request(TRUST_PROXY_HEADERS="true") == {"secure": True, "host": "localhost"}
