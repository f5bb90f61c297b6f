"""Top-level URL configuration.

URL names other code relies on: `login`, `logout`, `healthz`, `readyz`, `metrics` (here) and `console`,
`call-list`, `call-detail` (calls.urls).
"""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from voiceagent import health
from voiceagent.monitoring import views as monitoring

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", monitoring.metrics, name="metrics"),
    path(
        "accounts/login/",
        auth_views.LoginView.as_view(redirect_authenticated_user=True),
        name="login",
    ),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("telephony/", include("telephony.urls")),
    path("", include("calls.urls")),
]
