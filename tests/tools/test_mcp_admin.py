"""McpServer: validation, and the admin (headers kept secret, the test-connection action)."""

from __future__ import annotations

import sys

import pytest
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.test import Client

from calls.models import McpServer
from tests.factories import AgentProfileFactory
from tests.tools.mcp_support import SERVER_SCRIPT

SECRET = "Bearer s3cret-value"


@pytest.fixture
def admin_client(client: Client, db: None) -> Client:
    user = User.objects.create_superuser("root", "root@example.com", "pw-for-tests-only")
    client.force_login(user)
    return client


@pytest.mark.parametrize("name", ["weather", "my-tools", "a", "v2_files"])
def test_valid_names(db: None, name: str) -> None:
    McpServer(name=name, command="x").full_clean()


@pytest.mark.parametrize("name", ["two__parts", "with space", "dot.name", "-lead", "x" * 25, ""])
def test_names_that_cannot_prefix_tool_names_are_rejected(db: None, name: str) -> None:
    with pytest.raises(ValidationError) as caught:
        McpServer(name=name, command="x").full_clean()
    assert "name" in caught.value.message_dict


def test_each_transport_needs_its_target(db: None) -> None:
    with pytest.raises(ValidationError) as caught:
        McpServer(name="a", transport=McpServer.Transport.STDIO).full_clean()
    assert set(caught.value.message_dict) == {"command"}
    with pytest.raises(ValidationError) as caught:
        McpServer(name="b", transport=McpServer.Transport.STREAMABLE_HTTP).full_clean()
    assert set(caught.value.message_dict) == {"url"}
    with pytest.raises(ValidationError) as caught:
        McpServer(name="c", command="x", args="-m x", headers={"X": 1}, allowed_tools=[3]).full_clean()
    assert set(caught.value.message_dict) == {"args", "headers", "allowed_tools"}


def test_profiles_link_to_servers(db: None) -> None:
    profile = AgentProfileFactory.create()
    server = McpServer.objects.create(name="weather", command="x")
    server.agents.add(profile)
    assert list(profile.mcp_servers.all()) == [server]


def test_admin_never_shows_headers_and_keeps_them_on_save(admin_client: Client) -> None:
    server = McpServer.objects.create(
        name="remote",
        transport=McpServer.Transport.STREAMABLE_HTTP,
        url="http://127.0.0.1:9/mcp",
        headers={"Authorization": SECRET},
    )
    listing = admin_client.get("/admin/calls/mcpserver/")
    assert listing.status_code == 200
    assert "http://127.0.0.1:9/mcp" in listing.content.decode()
    assert "s3cret" not in listing.content.decode()
    form = admin_client.get(f"/admin/calls/mcpserver/{server.pk}/change/")
    assert form.status_code == 200
    assert "s3cret" not in form.content.decode()
    data = {
        "name": "remote",
        "enabled": "on",
        "transport": "streamable-http",
        "timeout_s": "3",
        "command": "",
        "args": "[]",
        "url": "http://127.0.0.1:9/mcp",
        "headers": "",
        "allowed_tools": "[]",
    }
    saved = admin_client.post(f"/admin/calls/mcpserver/{server.pk}/change/", data)
    assert saved.status_code == 302, saved.content.decode()[:2000]
    server.refresh_from_db()
    assert server.headers == {"Authorization": SECRET}
    assert server.timeout_s == 3.0
    replaced = admin_client.post(f"/admin/calls/mcpserver/{server.pk}/change/", {**data, "headers": "{}"})
    assert replaced.status_code == 302
    server.refresh_from_db()
    assert server.headers == {}


@pytest.mark.django_db(transaction=True)
def test_test_connection_action_lists_tools_or_says_why_not(admin_client: Client) -> None:
    ok = McpServer.objects.create(
        name="weather", command=sys.executable, args=[str(SERVER_SCRIPT)], allowed_tools=["get_weather"]
    )
    down = McpServer.objects.create(
        name="down", transport=McpServer.Transport.STREAMABLE_HTTP, url="http://127.0.0.1:9/mcp", timeout_s=3
    )
    response = admin_client.post(
        "/admin/calls/mcpserver/",
        {"action": "test_connection", "_selected_action": [ok.pk, down.pk]},
        follow=True,
    )
    assert response.status_code == 200
    shown = [str(message) for message in response.context["messages"]]
    assert shown[0].startswith("down: cannot connect (ConnectError")
    assert shown[1] == "weather: 3 tool(s): get_weather, slow (not allowed), boom (not allowed)."
