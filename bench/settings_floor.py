"""The product's settings with `bench.floor`'s two endpoints in front of its URLs, for
`bench/setup_overhead.py --floor` (a server of its own; the product never serves them)."""

from voiceagent.settings import *  # noqa: F403

ROOT_URLCONF = "bench.floor"
