"""The product's settings with WhiteNoise's stock (sync-only) middleware, for `bench/setup_overhead.py
--compare stock_whitenoise`: the configuration before `voiceagent.static_files`, measured side by side."""

from voiceagent.settings import *  # noqa: F403
from voiceagent.settings import MIDDLEWARE as _MIDDLEWARE

MIDDLEWARE = [
    "whitenoise.middleware.WhiteNoiseMiddleware" if name.endswith("AsyncWhiteNoiseMiddleware") else name
    for name in _MIDDLEWARE
]
