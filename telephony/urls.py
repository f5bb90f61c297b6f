"""Telephony routes: the signed SIP webhook (`telephony:webhook`)."""

from django.urls import URLPattern, path

from telephony import views

app_name = "telephony"
urlpatterns: list[URLPattern] = [
    path("webhook", views.webhook, name="webhook"),
]
