"""Template filters for showing call data."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from django import template

register = template.Library()


def format_duration(value: dt.timedelta | None) -> str:
    """`m:ss` under an hour, `h:mm:ss` beyond; an em dash for no duration."""
    if value is None:
        return "—"
    total = int(value.total_seconds())
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


@register.filter
def duration_clock(value: dt.timedelta | None) -> str:
    return format_duration(value)


@register.filter
def pretty_json(value: Any) -> str:
    """Indented JSON for reading payloads (the template escapes it)."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
