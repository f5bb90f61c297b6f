"""Developer scripts (importable so that tests can drive them)."""
