"""Routes of the calls app. URL names are global (no namespace): `console`, `call-list`, `call-detail`."""

from django.urls import URLPattern, path

from calls.views.console import console
from calls.views.history import call_detail, call_list

urlpatterns: list[URLPattern] = [
    path("", console, name="console"),
    path("calls/", call_list, name="call-list"),
    path("calls/<uuid:call_id>/", call_detail, name="call-detail"),
]
