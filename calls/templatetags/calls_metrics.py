"""Template filters for measured figures (the history and comparison pages)."""

from __future__ import annotations

from django import template

register = template.Library()


@register.filter
def latency_ms(value: float | None) -> str:
    """Whole milliseconds ("840 ms"), seconds with one decimal from 10 s up, an em dash for none."""
    if value is None:
        return "—"
    if value >= 10_000:
        return f"{value / 1000:.1f} s"
    return f"{round(value)} ms"
