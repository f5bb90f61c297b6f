"""Telephony routes (the SIP webhook arrives with the phone-calls work)."""

from django.urls import URLPattern

app_name = "telephony"
urlpatterns: list[URLPattern] = []
