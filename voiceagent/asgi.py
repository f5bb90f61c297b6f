"""ASGI entry point: HTTP through Django, WebSockets through Channels' URL router, and the
`channel` protocol (messages on named channels, run by `manage.py runworker call-observer`).

HTTP goes through `voiceagent.handler.InlineMiddlewareASGIHandler`: Django's handler, with the
I/O-free middleware hooks run on the event loop instead of a thread hop each."""

import os

from voiceagent.handler import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceagent.settings")
# Django must be set up before the routing modules import models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ChannelNameRouter, ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from voiceagent.routing import channel_routes, websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        "channel": ChannelNameRouter(channel_routes),
    }
)
