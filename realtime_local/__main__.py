"""`python -m realtime_local`: see `realtime_local.cli`."""

import time

_STARTED = time.monotonic()  # before the imports below, so "ready in" counts them too

from realtime_local.cli import main  # noqa: E402

raise SystemExit(main(started=_STARTED))
