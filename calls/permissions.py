"""Who may use the console: signed-in staff. Anonymous visitors go to the login page; signed-in
non-staff users get a 403 page that says why, instead of a login loop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any, TypeVar, cast

from asgiref.sync import iscoroutinefunction, markcoroutinefunction, sync_to_async
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponseBase

NOT_STAFF_MESSAGE = "The console is for staff accounts. Ask an administrator to mark your account as staff."

View = TypeVar("View", bound=Callable[..., Any])


def _check(request: HttpRequest) -> HttpResponseBase | None:
    """A redirect to login for anonymous users, PermissionDenied for non-staff, None when allowed."""
    if not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    if not request.user.is_staff:
        raise PermissionDenied(NOT_STAFF_MESSAGE)
    return None


def staff_required(view: View) -> View:
    """Decorate a sync or async view so that only active staff users reach it."""
    if iscoroutinefunction(view):
        async_view = cast(Callable[..., Awaitable[HttpResponseBase]], view)

        @wraps(view)
        async def async_wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            # request.user is lazy; resolving it touches the session, so do it off the event loop.
            denied = await sync_to_async(_check)(request)
            return denied if denied is not None else await async_view(request, *args, **kwargs)

        return cast(View, markcoroutinefunction(async_wrapper))

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        denied = _check(request)
        return denied if denied is not None else cast(HttpResponseBase, view(request, *args, **kwargs))

    return cast(View, wrapper)
