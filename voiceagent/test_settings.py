"""Settings for the test suite: the real settings with a fixed development key when none is given."""

import os

os.environ.setdefault("SECRET_KEY", "insecure-test-only-key-0123456789abcdefghijklmnopqrstuvwxyz")

from voiceagent.settings import *  # noqa: F403

# A refused database fails within /readyz's 3 s check (production waits DB_POOL_TIMEOUT, 10 s, for a
# pooled connection), unless a run sets DB_POOL_TIMEOUT itself.
if "pool" in DATABASES["default"].get("OPTIONS", {}) and "DB_POOL_TIMEOUT" not in os.environ:  # noqa: F405
    DATABASES["default"]["OPTIONS"]["pool"]["timeout"] = 2.5  # noqa: F405
# The suite runs many threads that keep a pooled connection while they live (asgiref's executors, the
# observers' lease and writer threads, tests' own threads); production's 10 is too few for all of them
# at once in one process, and a test waiting 2.5 s for a connection then fails for want of a slot.
if "pool" in DATABASES["default"].get("OPTIONS", {}) and "DB_POOL_MAX" not in os.environ:  # noqa: F405
    DATABASES["default"]["OPTIONS"]["pool"]["max_size"] = 30  # noqa: F405
# The suite's SQLite test database is in memory with a shared cache, whose table locks fail a second
# writer at once instead of waiting (tests needing concurrent writers use PostgreSQL): BEGIN IMMEDIATE
# would make read-only transactions contend as well. Servers the suite starts (the e2e demo servers on
# a file) keep it: tests/test_sqlite_locking.py pins what it is for.
DATABASES["default"].get("OPTIONS", {}).pop("transaction_mode", None)  # noqa: F405
