"""The console page: the shell the browser call flow plugs into."""

from __future__ import annotations

import re

import pytest
from django.contrib.staticfiles import finders
from django.test import Client

pytestmark = pytest.mark.django_db


def test_console_has_the_mode_picker_with_three_modes(staff_client: Client) -> None:
    body = staff_client.get("/").content.decode()
    modes = re.findall(r'data-mode="(\w+)"', body)
    assert modes == ["audio", "webcam", "screen"]
    assert 'role="radiogroup"' in body
    assert body.count('aria-checked="true"') == 1  # audio is selected first


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
    assert '<script type="module" src="/static/console/console.js">' in body
    assert "http://" not in body and "https://" not in body  # offline: no CDN, no web fonts


def test_every_module_the_console_imports_is_a_static_file() -> None:
    entry = finders.find("console/console.js")
    assert entry is not None
    seen: set[str] = set()
    pending = ["console/console.js"]
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
    assert {"console/clock.js", "console/activity-log.js", "console/ui.js"} <= seen
