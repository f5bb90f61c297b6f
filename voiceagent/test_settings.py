"""Settings for the test suite: the real settings with a fixed development key when none is given."""

import os

os.environ.setdefault("SECRET_KEY", "insecure-test-only-key-0123456789abcdefghijklmnopqrstuvwxyz")

from voiceagent.settings import *  # noqa: F403
