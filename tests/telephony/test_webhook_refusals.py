"""Every delivery that is not authentic or not usable is refused with a 4xx, and nothing is stored.

The valid baseline is a real webhook signed by the local engine; each case spoils one thing. Cases
that need a well-signed but malformed body are signed with the engine's own signer (`sign`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from django.test import AsyncClient
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import Call, WebhookDelivery
from tests.engine.conftest import WEBHOOK_SECRET
from tests.telephony.conftest import WEBHOOK_PATH, Captured, envelope, post_webhook, signed_headers

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]

OTHER_SECRET = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0NTY="
CALL_ID = "rtc_abcdef123456"


def _flip_last_char(signature: str) -> str:
    """Change one base64 character that carries only signature bits (not the last one before the
    padding, whose low bits decoding drops)."""
    version, value = signature.split(",", 1)
    return f"{version},{value[:5]}{'A' if value[5] != 'A' else 'B'}{value[6:]}"


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


# Each case: the captured (valid) delivery → the (body, headers) to send.
Case = Callable[[Captured], tuple[bytes, dict[str, str]]]

CASES: dict[str, Case] = {
    "no webhook-signature": lambda c: (c.body, _without(c.webhook_headers, "webhook-signature")),
    "no webhook-id": lambda c: (c.body, _without(c.webhook_headers, "webhook-id")),
    "no webhook-timestamp": lambda c: (c.body, _without(c.webhook_headers, "webhook-timestamp")),
    "no headers at all": lambda c: (c.body, {}),
    "empty signature": lambda c: (c.body, {**c.webhook_headers, "webhook-signature": ""}),
    "signature altered": lambda c: (
        c.body,
        {**c.webhook_headers, "webhook-signature": _flip_last_char(c.webhook_headers["webhook-signature"])},
    ),
    "signed with another secret": lambda c: (
        c.body,
        signed_headers(
            c.body,
            webhook_id=c.webhook_headers["webhook-id"],
            at=int(c.webhook_headers["webhook-timestamp"]),
            secret=OTHER_SECRET,
        ),
    ),
    "only an unknown signature version": lambda c: (
        c.body,
        {
            **c.webhook_headers,
            "webhook-signature": c.webhook_headers["webhook-signature"].replace("v1,", "v2,"),
        },
    ),
    "signature not a versioned list": lambda c: (
        c.body,
        {**c.webhook_headers, "webhook-signature": "garbage"},
    ),
    "signature not base64": lambda c: (c.body, {**c.webhook_headers, "webhook-signature": "v1,@@@@"}),
    "stale timestamp (6 min)": lambda c: (c.body, signed_headers(c.body, at=int(time.time()) - 360)),
    "future timestamp (6 min)": lambda c: (c.body, signed_headers(c.body, at=int(time.time()) + 360)),
    "timestamp not a number": lambda c: (c.body, {**c.webhook_headers, "webhook-timestamp": "yesterday"}),
    "timestamp changed after signing": lambda c: (
        c.body,
        {**c.webhook_headers, "webhook-timestamp": str(int(c.webhook_headers["webhook-timestamp"]) - 1)},
    ),
    "webhook-id changed after signing": lambda c: (
        c.body,
        {**c.webhook_headers, "webhook-id": c.webhook_headers["webhook-id"] + "x"},
    ),
    "body changed after signing": lambda c: (c.body.replace(b"rtc_", b"rtc_X", 1), c.webhook_headers),
    "body re-serialised (whitespace)": lambda c: (
        json.dumps(json.loads(c.body), indent=2).encode(),
        c.webhook_headers,
    ),
    "malformed JSON, signed": lambda c: (
        b'{"object": "event", "type": ',
        signed_headers(b'{"object": "event", "type": '),
    ),
    "JSON array, signed": lambda c: (b"[1, 2, 3]", signed_headers(b"[1, 2, 3]")),
    "not an event envelope, signed": lambda c: (
        b'{"type": "realtime.call.incoming", "data": {}}',
        signed_headers(b'{"type": "realtime.call.incoming", "data": {}}'),
    ),
    "event without a type, signed": lambda c: (
        b'{"object": "event", "data": {}}',
        signed_headers(b'{"object": "event", "data": {}}'),
    ),
    "data not an object, signed": lambda c: (
        b'{"object": "event", "type": "x.y", "data": "no"}',
        signed_headers(b'{"object": "event", "type": "x.y", "data": "no"}'),
    ),
    "incoming call without call_id, signed": lambda c: (
        envelope(sip_headers=[]),
        signed_headers(envelope(sip_headers=[])),
    ),
    "incoming call with a hostile call_id, signed": lambda c: (
        envelope(call_id="../../client_secrets", sip_headers=[]),
        signed_headers(envelope(call_id="../../client_secrets", sip_headers=[])),
    ),
    "incoming call with malformed sip_headers, signed": lambda c: (
        envelope(call_id=CALL_ID, sip_headers=[{"name": 1}]),
        signed_headers(envelope(call_id=CALL_ID, sip_headers=[{"name": 1}])),
    ),
    "body not UTF-8, signed": lambda c: (b'{"x": "\xff\xfe"}', signed_headers(b'{"x": "\xff\xfe"}')),
    "webhook-id with odd characters, signed": lambda c: (
        c.body,
        signed_headers(c.body, webhook_id="evt_<script>"),
    ),
    "empty body, signed": lambda c: (b"", signed_headers(b"")),
}


async def _nothing_stored() -> None:
    assert await WebhookDelivery.objects.acount() == 0
    assert await Call.objects.acount() == 0


async def test_the_battery_has_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("case", sorted(CASES))
async def test_a_bad_delivery_is_refused_and_nothing_is_stored(
    case: str, signed_incoming_call: Callable[..., Awaitable[Captured]], default_agent: Any
) -> None:
    captured = await signed_incoming_call(**{"from": "+15551110000", "to": "+15552220000"})
    body, headers = CASES[case](captured)
    response = await post_webhook(body, headers)
    assert response.status_code == 400, (case, response.status_code, response.content)
    assert json.loads(response.content)["error"]
    await _nothing_stored()
    # The genuine delivery still works afterwards: the refusal consumed nothing.
    good = await post_webhook(captured.body, captured.webhook_headers)
    assert good.status_code == 200


async def test_an_oversized_body_is_refused_with_413_before_verification(
    settings: SettingsWrapper, default_agent: Any
) -> None:
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    body = envelope(call_id=CALL_ID, sip_headers=[{"name": "X-Pad", "value": "x" * (300 * 1024)}])
    response = await post_webhook(body, signed_headers(body))
    assert response.status_code == 413
    await _nothing_stored()


async def test_a_body_over_a_lowered_limit_is_refused(settings: SettingsWrapper, default_agent: Any) -> None:
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    settings.TELEPHONY_WEBHOOK_MAX_BYTES = 100
    body = envelope(call_id=CALL_ID, sip_headers=[])
    response = await post_webhook(body, signed_headers(body))
    assert response.status_code == 413
    await _nothing_stored()


@pytest.mark.parametrize("method", ["get", "put", "delete"])
async def test_other_methods_are_refused(method: str, settings: SettingsWrapper) -> None:
    settings.OPENAI_SIGNING_SECRET = WEBHOOK_SECRET
    response = await getattr(AsyncClient(), method)(WEBHOOK_PATH)
    assert response.status_code == 405
    await _nothing_stored()


async def test_without_a_signing_secret_deliveries_get_503_so_that_they_are_retried(
    settings: SettingsWrapper, caplog: pytest.LogCaptureFixture
) -> None:
    settings.OPENAI_SIGNING_SECRET = ""
    body = envelope(call_id=CALL_ID, sip_headers=[])
    response = await post_webhook(body, signed_headers(body))
    assert response.status_code == 503
    assert "OPENAI_SIGNING_SECRET" in caplog.text
    await _nothing_stored()


async def test_a_malformed_signing_secret_is_a_503_too(settings: SettingsWrapper) -> None:
    settings.OPENAI_SIGNING_SECRET = "whsec_not base64!"
    body = envelope(call_id=CALL_ID, sip_headers=[])
    response = await post_webhook(body, signed_headers(body))
    assert response.status_code == 503
    await _nothing_stored()


async def test_a_refusal_logs_the_reason_but_no_personal_data(
    signed_incoming_call: Callable[..., Awaitable[Captured]], caplog: pytest.LogCaptureFixture
) -> None:
    captured = await signed_incoming_call(**{"from": "+15559876543"})
    caplog.clear()
    response = await post_webhook(captured.body, _without(captured.webhook_headers, "webhook-signature"))
    assert response.status_code == 400
    refusals = [r.getMessage() for r in caplog.records if r.name == "telephony.views"]
    assert len(refusals) == 1 and "webhook-signature" in refusals[0]
    assert "15559876543" not in caplog.text
