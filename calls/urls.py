"""Routes of the calls app."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []
