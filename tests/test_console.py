"""The console page: the shell the browser call flow plugs into."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db


def test_console_has_the_mode_picker_with_three_modes(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    modes = re.findall(r'data-mode="(\w+)"', body)
    assert modes == ["audio", "webcam", "screen"]
    assert 'role="radiogroup"' in body
    checked = re.findall(r'data-mode="(\w+)"\s+aria-checked="true"', body)
    assert checked == ["audio"]  # audio is selected first


def test_console_has_the_transport_picker_with_proxy_selected(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    assert re.findall(r'data-transport="(\w+)"', body) == ["proxy", "direct"]
    assert re.search(r'data-transport="proxy"[^>]*aria-checked="true"', body)


def test_console_has_launch_and_end_buttons(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    assert re.search(r'<button[^>]*id="launch"', body)
    assert re.search(r'<button[^>]*id="end"[^>]*disabled', body)


def test_console_has_status_clock_preview_and_activity_log(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    for element_id in ("status-text", "duration", "preview-video", "activity", "clear-log"):
        assert f'id="{element_id}"' in body, element_id
    assert ">00:00.000<" in body


def test_console_shows_the_default_agent(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    assert "Marin" in body and "gpt-realtime" in body


def test_console_loads_its_script_as_an_es_module_from_our_own_static_files(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    assert '<script type="module" src="/static/console/main.js">' in body
    # Offline: no CDN, no web fonts (the page config names the Realtime API's URL, which is data).
    assert not re.search(r'(src|href)="(https?:)?//', body)


def test_console_config_tells_the_call_client_where_and_how_to_call(
    staff_client: Client, settings: Any
) -> None:
    found = re.search(r'id="console-config"[^>]*>(.*?)</script>', staff_client.get("/").content.decode())
    assert found is not None
    config = json.loads(found.group(1))
    assert config["defaultTransport"] == "proxy"
    assert config["realtimeBaseUrl"] == settings.REALTIME_BASE_URL
    assert config["iceServers"] == []
    assert re.fullmatch(r"[A-Za-z0-9]{64}", config["csrfToken"])  # a masked token for X-CSRFToken


def test_every_module_the_console_imports_is_a_static_file() -> None:
    entry = finders.find("console/main.js")
    assert entry is not None
    seen: set[str] = set()
    pending = ["console/main.js"]
    while pending:
        name = pending.pop()
        seen.add(name)
        path = finders.find(name)
        assert path is not None, f"{name} is imported but missing"
        with open(path, encoding="utf-8") as handle:
            source = handle.read()
        for imported in re.findall(r'from "\./([\w.-]+\.js)"', source):
            if f"console/{imported}" not in seen:
                pending.append(f"console/{imported}")
    assert {
        "console/console.js",
        "console/clock.js",
        "console/activity-log.js",
        "console/ui.js",
        "console/call-client.js",
        "console/live-feed.js",
        "console/transcript.js",
        "console/latency.js",
    } <= seen
