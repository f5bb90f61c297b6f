"""Benchmarks: scripts that print `name: value unit` lines (see bench/README.md)."""
