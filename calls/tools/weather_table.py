"""The demo weather table `get_weather` reads: fixed, offline, so tests and demos are exact.

Keys are lower-case city names; values are what the tool answers (temperature in °C).
"""

from __future__ import annotations

from typing import Final, TypedDict


class Weather(TypedDict):
    city: str
    country: str
    temperature_c: int
    conditions: str


WEATHER: Final[dict[str, Weather]] = {
    "amsterdam": {
        "city": "Amsterdam",
        "country": "Netherlands",
        "temperature_c": 11,
        "conditions": "light rain",
    },
    "athens": {"city": "Athens", "country": "Greece", "temperature_c": 24, "conditions": "sunny"},
    "berlin": {"city": "Berlin", "country": "Germany", "temperature_c": 9, "conditions": "overcast"},
    "buenos aires": {
        "city": "Buenos Aires",
        "country": "Argentina",
        "temperature_c": 22,
        "conditions": "clear",
    },
    "cairo": {"city": "Cairo", "country": "Egypt", "temperature_c": 31, "conditions": "sunny"},
    "cape town": {"city": "Cape Town", "country": "South Africa", "temperature_c": 19, "conditions": "windy"},
    "dubai": {"city": "Dubai", "country": "United Arab Emirates", "temperature_c": 35, "conditions": "hazy"},
    "lisbon": {"city": "Lisbon", "country": "Portugal", "temperature_c": 20, "conditions": "partly cloudy"},
    "london": {"city": "London", "country": "United Kingdom", "temperature_c": 12, "conditions": "drizzle"},
    "madrid": {"city": "Madrid", "country": "Spain", "temperature_c": 23, "conditions": "sunny"},
    "mexico city": {
        "city": "Mexico City",
        "country": "Mexico",
        "temperature_c": 21,
        "conditions": "thunderstorms",
    },
    "moscow": {"city": "Moscow", "country": "Russia", "temperature_c": -2, "conditions": "snow"},
    "mumbai": {"city": "Mumbai", "country": "India", "temperature_c": 30, "conditions": "humid"},
    "new york": {"city": "New York", "country": "United States", "temperature_c": 15, "conditions": "cloudy"},
    "paris": {"city": "Paris", "country": "France", "temperature_c": 18, "conditions": "sunny"},
    "rome": {"city": "Rome", "country": "Italy", "temperature_c": 22, "conditions": "clear"},
    "san francisco": {
        "city": "San Francisco",
        "country": "United States",
        "temperature_c": 16,
        "conditions": "foggy",
    },
    "sao paulo": {"city": "São Paulo", "country": "Brazil", "temperature_c": 25, "conditions": "showers"},
    "sydney": {"city": "Sydney", "country": "Australia", "temperature_c": 26, "conditions": "sunny"},
    "tokyo": {"city": "Tokyo", "country": "Japan", "temperature_c": 17, "conditions": "partly cloudy"},
    "toronto": {"city": "Toronto", "country": "Canada", "temperature_c": 5, "conditions": "windy"},
}
