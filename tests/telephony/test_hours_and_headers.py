"""Business hours parsing and SIP address parsing (pure functions)."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ImproperlyConfigured

from telephony.hours import parse_business_hours
from telephony.services import number_from_sip_address, sip_header

PARIS = ZoneInfo("Europe/Paris")


def at(day: int, hour: int, minute: int = 0, zone: ZoneInfo = PARIS) -> dt.datetime:
    """2026-11-23 is a Monday; `day` 0 = Monday."""
    return dt.datetime(2026, 11, 23 + day, hour, minute, tzinfo=zone)


def test_weekday_office_hours_in_their_time_zone() -> None:
    hours = parse_business_hours("Mon-Fri 09:00-17:00 Europe/Paris")
    assert hours.is_open(at(0, 9)) and hours.is_open(at(4, 16, 59))
    assert not hours.is_open(at(0, 8, 59)) and not hours.is_open(at(0, 17))
    assert not hours.is_open(at(5, 12))
    # 08:30 UTC on a Monday in November is 09:30 in Paris.
    assert hours.is_open(dt.datetime(2026, 11, 23, 8, 30, tzinfo=dt.UTC))


def test_several_rules_lists_and_lunch_breaks() -> None:
    hours = parse_business_hours("mon,wed 09:00-12:00; Mon,Wed 13:00-17:00 ; sat 10:00-12:00 UTC")
    utc = ZoneInfo("UTC")
    assert hours.is_open(at(0, 10, zone=utc)) and not hours.is_open(at(0, 12, 30, zone=utc))
    assert hours.is_open(at(2, 16, zone=utc)) and not hours.is_open(at(1, 10, zone=utc))
    assert hours.is_open(at(5, 11, zone=utc))


def test_a_range_past_midnight_belongs_to_its_start_day() -> None:
    hours = parse_business_hours("Fri 22:00-06:00 Europe/Paris")
    assert hours.is_open(at(4, 23)) and hours.is_open(at(5, 5, 59))
    assert not hours.is_open(at(5, 6)) and not hours.is_open(at(3, 23)) and not hours.is_open(at(4, 5))


def test_wrapping_day_ranges_and_the_end_of_day() -> None:
    hours = parse_business_hours("Sat-Mon 00:00-24:00", default_timezone="Europe/Paris")
    assert hours.is_open(at(6, 23, 59)) and hours.is_open(at(0, 0)) and not hours.is_open(at(1, 12))


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Mon-Fri",
        "Mon-Fri 9-17",
        "Someday 09:00-17:00",
        "Mon 25:00-26:00",
        "Mon 09:00-17:00 Mars/Olympus",
        "Mon 24:00-01:00",
        "Mo 09:00-17:00",
    ],
)
def test_malformed_hours_are_a_configuration_error(value: str) -> None:
    with pytest.raises(ImproperlyConfigured, match="TELEPHONY_BUSINESS_HOURS"):
        parse_business_hours(value)


@pytest.mark.parametrize(
    ("value", "number"),
    [
        ('"Ann" <sip:+15551234567@trunk.example;user=phone>;tag=abc', "+15551234567"),
        ("<sip:+15551234567@realtime.local>", "+15551234567"),
        ("sip:alice@example.com", "alice"),
        ("<tel:+15551234567;phone-context=x>", "+15551234567"),
        ("<sips:5551234:secret@host>", "5551234"),
        ("Anonymous <sip:anonymous@anonymous.invalid>", "anonymous"),
        ("no uri here", ""),
        ("<http://example.com>", ""),
    ],
)
def test_numbers_come_from_the_user_part_of_sip_addresses(value: str, number: str) -> None:
    assert number_from_sip_address(value) == number


def test_headers_are_found_by_name_case_insensitively_and_compact_forms() -> None:
    headers = [{"name": "f", "value": "<sip:+1@x>"}, {"name": "TO", "value": "<sip:+2@x>"}]
    assert sip_header(headers, "From") == "<sip:+1@x>"
    assert sip_header(headers, "To") == "<sip:+2@x>"
    assert sip_header(headers, "Call-ID") == ""
