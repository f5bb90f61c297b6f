"""Django's PostgreSQL backend with a pool whose health check costs no round trip (see `base`)."""
