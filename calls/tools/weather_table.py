"""The demo weather table `get_weather` reads: fixed, offline, so tests and demos are exact.

Keys are lower-case city names; values are what the tool answers (temperature in °C).
"""

from __future__ import annotations

from typing import Final, TypedDict


class Weather(TypedDict):
    city: str
    country: str
    temperature_celsius: int
    conditions: str


WEATHER: Final[dict[str, Weather]] = {
    "amsterdam": {
        "city": "Amsterdam",
        "country": "Netherlands",
        "temperature_celsius": 11,
        "conditions": "light rain",
    },
    "athens": {"city": "Athens", "country": "Greece", "temperature_celsius": 24, "conditions": "sunny"},
    "berlin": {"city": "Berlin", "country": "Germany", "temperature_celsius": 9, "conditions": "overcast"},
    "buenos aires": {
        "city": "Buenos Aires",
        "country": "Argentina",
        "temperature_celsius": 22,
        "conditions": "clear",
    },
    "cairo": {"city": "Cairo", "country": "Egypt", "temperature_celsius": 31, "conditions": "sunny"},
    "cape town": {
        "city": "Cape Town",
        "country": "South Africa",
        "temperature_celsius": 19,
        "conditions": "windy",
    },
    "dubai": {
        "city": "Dubai",
        "country": "United Arab Emirates",
        "temperature_celsius": 35,
        "conditions": "hazy",
    },
    "lisbon": {
        "city": "Lisbon",
        "country": "Portugal",
        "temperature_celsius": 20,
        "conditions": "partly cloudy",
    },
    "london": {
        "city": "London",
        "country": "United Kingdom",
        "temperature_celsius": 12,
        "conditions": "drizzle",
    },
    "madrid": {"city": "Madrid", "country": "Spain", "temperature_celsius": 23, "conditions": "sunny"},
    "mexico city": {
        "city": "Mexico City",
        "country": "Mexico",
        "temperature_celsius": 21,
        "conditions": "thunderstorms",
    },
    "moscow": {"city": "Moscow", "country": "Russia", "temperature_celsius": -2, "conditions": "snow"},
    "mumbai": {"city": "Mumbai", "country": "India", "temperature_celsius": 30, "conditions": "humid"},
    "new york": {
        "city": "New York",
        "country": "United States",
        "temperature_celsius": 15,
        "conditions": "cloudy",
    },
    "paris": {"city": "Paris", "country": "France", "temperature_celsius": 18, "conditions": "sunny"},
    "rome": {"city": "Rome", "country": "Italy", "temperature_celsius": 22, "conditions": "clear"},
    "san francisco": {
        "city": "San Francisco",
        "country": "United States",
        "temperature_celsius": 16,
        "conditions": "foggy",
    },
    "sao paulo": {
        "city": "São Paulo",
        "country": "Brazil",
        "temperature_celsius": 25,
        "conditions": "showers",
    },
    "sydney": {"city": "Sydney", "country": "Australia", "temperature_celsius": 26, "conditions": "sunny"},
    "tokyo": {"city": "Tokyo", "country": "Japan", "temperature_celsius": 17, "conditions": "partly cloudy"},
    "toronto": {"city": "Toronto", "country": "Canada", "temperature_celsius": 5, "conditions": "windy"},
}
