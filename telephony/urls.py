"""Telephony routes: the signed SIP webhook (`telephony:webhook`), staff hang-up (`telephony:hang-up`)."""

from django.urls import URLPattern, path

from telephony import views

app_name = "telephony"
urlpatterns: list[URLPattern] = [
    path("webhook", views.webhook, name="webhook"),
    path("calls/<uuid:call_id>/hang-up", views.hang_up_phone_call, name="hang-up"),
]
