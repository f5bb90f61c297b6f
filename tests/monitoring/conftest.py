"""Fixtures of the metrics and logs tests: the web and phone tests' real engine, observer and webhooks,
plus `scrape`, which reads `/metrics` as Prometheus would (bearer token), and `json_logs`, the lines
logged during a test as the production formatter writes them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

from tests.telephony.conftest import (
    background_answers_finish,
    phone_engine,
    signed_incoming_call,
    webhook_receiver,
)
from tests.web.conftest import (
    channel_layer,
    close_async_orm_connections,
    default_agent,
    fake_upstream,
    local_engine,
    make_live_call,
    observer_worker,
    sign_in_async,
    start_engine,
)
from voiceagent.monitoring.logs import formatter
from voiceagent.monitoring.metrics import labelled_total

__all__ = [
    "background_answers_finish",
    "channel_layer",
    "close_async_orm_connections",
    "default_agent",
    "fake_upstream",
    "local_engine",
    "make_live_call",
    "observer_worker",
    "phone_engine",
    "sign_in_async",
    "signed_incoming_call",
    "start_engine",
    "webhook_receiver",
]

TOKEN = "metrics-test-token-0123456789"


class Scrape:
    """One scrape's exposition text, read back by series name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __call__(self, name: str, **labels: str) -> float:
        """The sum of the samples `name` whose labels include `labels` (0 when none)."""
        return labelled_total(self.text, name, labels)


@pytest.fixture
def scrape(settings: SettingsWrapper) -> Callable[[], Awaitable[Scrape]]:
    """`await scrape()`: GET /metrics with the bearer token (METRICS_TOKEN is set for the test)."""
    settings.METRICS_TOKEN = TOKEN
    settings.METRICS_ALLOWED_IPS = []

    async def read() -> Scrape:
        response = await AsyncClient().get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.content
        assert response["Content-Type"].startswith("text/plain; version=")
        return Scrape(response.content.decode())

    return read


@pytest.fixture
def json_logs() -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Everything logged during the test (root and Django's loggers) through the production JSON
    formatter; call the fixture's value to get the lines parsed."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter("json"))
    loggers = [logging.getLogger(), logging.getLogger("django")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]

    yield lines
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)
