"""Accounts: sign in and out through the console-styled pages; the console is for staff only."""

from __future__ import annotations

import pytest
from asgiref.sync import iscoroutinefunction
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.test import AsyncRequestFactory, Client

from calls.permissions import NOT_STAFF_MESSAGE, staff_required
from tests.factories import PASSWORD, StaffUserFactory

pytestmark = pytest.mark.django_db

STAFF_PAGES = ["/", "/calls/"]


def test_login_page_renders_the_styled_form(client: Client) -> None:
    response = client.get("/accounts/login/")
    body = response.content.decode()
    assert response.status_code == 200
    assert 'name="username"' in body and 'name="password"' in body
    assert "css/app.css" in body


def test_staff_login_redirects_to_the_console(client: Client, staff_user: User) -> None:
    response = client.post("/accounts/login/", {"username": staff_user.username, "password": PASSWORD})
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_login_follows_next_to_the_page_asked_for(client: Client, staff_user: User) -> None:
    response = client.post(
        "/accounts/login/", {"username": staff_user.username, "password": PASSWORD, "next": "/calls/"}
    )
    assert response["Location"] == "/calls/"


def test_wrong_password_shows_an_error_and_no_session(client: Client, staff_user: User) -> None:
    response = client.post("/accounts/login/", {"username": staff_user.username, "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert "_auth_user_id" not in client.session


def test_inactive_staff_cannot_sign_in(client: Client) -> None:
    StaffUserFactory.create(username="gone", is_active=False)
    response = client.post("/accounts/login/", {"username": "gone", "password": PASSWORD})
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_anonymous_visitors_are_sent_to_login(client: Client, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == f"/accounts/login/?next={path}"


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_non_staff_users_get_a_clear_403_page(plain_client: Client, path: str) -> None:
    response = plain_client.get(path)
    body = response.content.decode()
    assert response.status_code == 403
    assert NOT_STAFF_MESSAGE in body
    assert "visitor" in body  # says who is signed in
    assert 'action="/accounts/logout/"' in body  # and offers another account


@pytest.mark.parametrize("path", STAFF_PAGES)
def test_staff_users_reach_the_pages(staff_client: Client, path: str) -> None:
    assert staff_client.get(path).status_code == 200


def test_logout_by_post_ends_the_session(staff_client: Client) -> None:
    response = staff_client.post("/accounts/logout/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/"
    assert staff_client.get("/").status_code == 302


def test_logout_by_get_is_refused(staff_client: Client) -> None:
    assert staff_client.get("/accounts/logout/").status_code == 405
    assert staff_client.get("/").status_code == 200


def test_login_and_logout_forms_are_csrf_protected(staff_user: User) -> None:
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": staff_user.username, "password": PASSWORD})
    assert response.status_code == 403
    assert "_auth_user_id" not in client.session


def test_session_cookie_is_httponly_and_lax(client: Client, staff_user: User) -> None:
    response = client.post("/accounts/login/", {"username": staff_user.username, "password": PASSWORD})
    cookie = response.cookies["sessionid"]
    assert cookie["httponly"] is True
    assert cookie["samesite"] == "Lax"
    assert cookie["secure"] is True  # the test settings run with DEBUG off


async def _async_page(request: HttpRequest) -> HttpResponse:
    return HttpResponse("async ok")


@pytest.mark.parametrize(
    ("who", "expected"), [("staff", 200), ("plain", 403), ("anonymous", 302)], ids=lambda v: str(v)
)
async def test_staff_required_guards_async_views_too(
    who: str, expected: int, staff_user: User, plain_user: User
) -> None:
    view = staff_required(_async_page)
    assert iscoroutinefunction(view)
    request = AsyncRequestFactory().get("/async-page/")
    users: dict[str, User | AnonymousUser] = {
        "staff": staff_user,
        "plain": plain_user,
        "anonymous": AnonymousUser(),
    }
    request.user = users[who]
    if expected == 403:
        with pytest.raises(PermissionDenied, match="staff accounts"):
            await view(request)
        return
    response = await view(request)
    assert response.status_code == expected
    if expected == 302:
        assert response["Location"] == "/accounts/login/?next=/async-page/"
