"""The project's URLs plus a view that crashes, for the error-page tests (tests/security/test_secrets.py)."""

from django.http import HttpRequest, HttpResponse
from django.urls import include, path


def boom(request: HttpRequest) -> HttpResponse:
    """Fails the way an unexpected bug does: an exception Django turns into a 500."""
    raise RuntimeError("the view failed on purpose")


urlpatterns = [
    path("boom", boom),
    path("", include("voiceagent.urls")),
]
