"""`GET /metrics`: the Prometheus exposition, for the scraper only (docs/observability.md).

Access, decided before anything is collected:
- neither `METRICS_TOKEN` nor `METRICS_ALLOWED_IPS` set: 404, as if the endpoint did not exist
  (nothing is published by accident, and nothing tells a prober it is there);
- `METRICS_ALLOWED_IPS` set and the client address (`REMOTE_ADDR`, the TCP peer: never a forwarded
  header, which anyone can write) is not in it: 403;
- `METRICS_TOKEN` set and the request lacks `Authorization: Bearer <token>`: 401.
When both are set, both must pass. Behind a reverse proxy the peer is the proxy, so use the token
there, or keep /metrics off the proxy (docs/observability.md).

Sync on purpose: the live-calls collector queries the database.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST

from voiceagent.monitoring.access import bearer_matches, client_allowed
from voiceagent.monitoring.metrics import exposition


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """The exposition, when the scraper is let in (see the module docstring)."""
    token: str = settings.METRICS_TOKEN
    allowed: list[str] = settings.METRICS_ALLOWED_IPS
    if not token and not allowed:
        raise Http404("metrics are not enabled")
    if allowed and not client_allowed(str(request.META.get("REMOTE_ADDR") or ""), allowed):
        return HttpResponse(
            "Forbidden: this address may not read metrics.\n", status=403, content_type="text/plain"
        )
    if token and not bearer_matches(request.headers.get("Authorization", ""), token):
        response = HttpResponse(
            "Unauthorized: send Authorization: Bearer <METRICS_TOKEN>.\n",
            status=401,
            content_type="text/plain",
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(exposition(), content_type=CONTENT_TYPE_LATEST)
