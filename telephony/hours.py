"""Business hours: when the phone line answers (setting `TELEPHONY_BUSINESS_HOURS`).

Grammar (case-insensitive; blanks around separators are ignored):

    hours     := rule (";" rule)* [timezone]
    rule      := days " " HH:MM "-" HH:MM
    days      := day | day "-" day | days "," days        (Mon Tue Wed Thu Fri Sat Sun)
    timezone  := an IANA name (Europe/Paris, America/New_York) or UTC; default: settings.TIME_ZONE

Examples: ``Mon-Fri 09:00-17:00 Europe/Paris``; ``Mon-Fri 09:00-12:30; Mon-Fri 13:30-18:00; Sat
10:00-12:00 UTC``; ``Mon,Wed,Fri 08:00-20:00``. A range whose end is not after its start runs past
midnight (``Fri 22:00-06:00`` is Friday 22:00 to Saturday 06:00); ``24:00`` is the end of the day.
A malformed value is an `ImproperlyConfigured` at startup (telephony's `AppConfig.ready`), so a
typo can never silently open or close the line.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core.exceptions import ImproperlyConfigured

DAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_TIME_RANGE: Final = re.compile(r"(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})")


@dataclass(frozen=True)
class Rule:
    """Open on `weekdays` (0 = Monday) from `start` to `end` minutes after midnight (end may wrap)."""

    weekdays: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True)
class BusinessHours:
    rules: tuple[Rule, ...]
    timezone: ZoneInfo

    def is_open(self, at: dt.datetime) -> bool:
        """Whether the line answers at the aware datetime `at`."""
        local = at.astimezone(self.timezone)
        minute = local.hour * 60 + local.minute
        today = local.weekday()
        yesterday = (today - 1) % 7
        for rule in self.rules:
            if rule.end > rule.start:
                if today in rule.weekdays and rule.start <= minute < rule.end:
                    return True
            else:  # past midnight: the evening part today, the morning part belongs to yesterday's rule
                if today in rule.weekdays and minute >= rule.start:
                    return True
                if yesterday in rule.weekdays and minute < rule.end:
                    return True
        return False


def _error(value: str, detail: str) -> ImproperlyConfigured:
    return ImproperlyConfigured(
        f"TELEPHONY_BUSINESS_HOURS={value!r} is not valid: {detail}. "
        "Expected e.g. 'Mon-Fri 09:00-17:00 Europe/Paris' (see docs/telephony.md)."
    )


def _day(name: str, value: str) -> int:
    key = name.strip().lower()[:3]
    if key not in DAYS or len(name.strip()) < 3:
        raise _error(value, f"unknown day {name.strip()!r}")
    return DAYS.index(key)


def _days(spec: str, value: str) -> frozenset[int]:
    days: set[int] = set()
    for part in spec.split(","):
        if "-" in part:
            first, last = (_day(name, value) for name in part.split("-", 1))
            day = first
            days.add(day)
            while day != last:
                day = (day + 1) % 7
                days.add(day)
        else:
            days.add(_day(part, value))
    return frozenset(days)


def _minutes(hours: str, minutes: str, value: str) -> int:
    h, m = int(hours), int(minutes)
    if m > 59 or h > 24 or (h == 24 and m):
        raise _error(value, f"{hours}:{minutes} is not a time of day")
    return h * 60 + m


def parse_business_hours(value: str, *, default_timezone: str = "UTC") -> BusinessHours:
    """The parsed hours of `value` (see the module docstring); `ImproperlyConfigured` if malformed."""
    text = value.strip()
    if not text:
        raise _error(value, "it is empty")
    zone_name = default_timezone
    words = text.rsplit(None, 1)
    if len(words) == 2 and ("/" in words[1] or words[1].upper() in ("UTC", "GMT")):
        zone_name, text = words[1], words[0]
    try:
        zone = ZoneInfo("UTC" if zone_name.upper() in ("UTC", "GMT") else zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise _error(value, f"unknown time zone {zone_name!r}") from None
    rules: list[Rule] = []
    for raw_rule in text.split(";"):
        rule_text = raw_rule.strip()
        if not rule_text:
            continue
        parts = rule_text.split(None, 1)
        if len(parts) != 2:
            raise _error(value, f"{rule_text!r} needs days and a time range")
        days, times = parts
        match = _TIME_RANGE.fullmatch(times.strip())
        if match is None:
            raise _error(value, f"{times.strip()!r} is not a range like 09:00-17:00")
        start = _minutes(match[1], match[2], value)
        end = _minutes(match[3], match[4], value)
        if start == 24 * 60:
            raise _error(value, "a range cannot start at 24:00")
        rules.append(Rule(weekdays=_days(days, value), start=start, end=end))
    if not rules:
        raise _error(value, "it names no opening hours")
    return BusinessHours(rules=tuple(rules), timezone=zone)
