"""Routes of the calls app. URL names are global (no namespace): `console`, `call-list`, `call-detail`,
`rtc`, `rtc-hangup`, `api-client-secret`, `api-calls`."""

from django.urls import URLPattern, path

from calls.views import api, rtc
from calls.views.compare import compare_agents
from calls.views.console import console
from calls.views.history import call_detail, call_list
from calls.views.recordings import call_recording

urlpatterns: list[URLPattern] = [
    path("", console, name="console"),
    path("calls/", call_list, name="call-list"),
    path("calls/<uuid:call_id>/", call_detail, name="call-detail"),
    path("calls/compare/", compare_agents, name="call-compare"),
    path("calls/<uuid:call_id>/recording", call_recording, name="call-recording"),
    # Web calls (docs/web-calls.md). `rtc` has no trailing slash: the original lab's client posts there.
    path("rtc", rtc.create_call, name="rtc"),
    path("rtc/<uuid:call_id>/hangup", rtc.hangup_call, name="rtc-hangup"),
    path("api/realtime/client-secret", api.client_secret, name="api-client-secret"),
    path("api/calls", api.register_call, name="api-calls"),
]
