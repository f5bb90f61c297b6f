"""`python -m realtime_local`: see `realtime_local.cli`."""

from realtime_local.cli import main

raise SystemExit(main())
