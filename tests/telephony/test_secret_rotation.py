"""Rotating the webhook signing secret: during the switch, deliveries signed with the new secret and
with the old one (listed in OPENAI_SIGNING_SECRET_PREVIOUS) are both authentic; afterwards only the new.

Signatures are made by the engine's signer (the same bytes OpenAI signs) and checked by svix, as in
production.
"""

from __future__ import annotations

import json

import pytest
from pytest_django.fixtures import Settings as SettingsWrapper

from calls.models import WebhookDelivery
from telephony.services import SigningSecretMissing, WebhookRefused, verify_webhook
from tests.telephony.conftest import envelope, post_webhook, signed_headers

pytestmark = [pytest.mark.timeout(60)]

OLD_SECRET = "whsec_" + "b2xkLXNpZ25pbmctc2VjcmV0LW9mLTMyLWJ5dGVzISE="
NEW_SECRET = "whsec_" + "bmV3LXNpZ25pbmctc2VjcmV0LW9mLTMyLWJ5dGVzISE="
STRANGER_SECRET = "whsec_" + "c3RyYW5nZXItc2VjcmV0LW9mLTMyLWJ5dGVzLi4uLi4="
BODY = envelope("realtime.call.ended", call_id="rtc_rotation0000001")


@pytest.fixture
def mid_rotation(settings: SettingsWrapper) -> SettingsWrapper:
    settings.OPENAI_SIGNING_SECRET = NEW_SECRET
    settings.OPENAI_SIGNING_SECRET_PREVIOUS = [OLD_SECRET]
    return settings


@pytest.mark.parametrize("secret", [NEW_SECRET, OLD_SECRET], ids=["new", "old"])
def test_during_the_switch_both_secrets_are_accepted(mid_rotation: SettingsWrapper, secret: str) -> None:
    verified = verify_webhook(body=BODY, headers=signed_headers(BODY, webhook_id="wh_rot1", secret=secret))
    assert verified.webhook_id == "wh_rot1"


def test_during_the_switch_a_third_secret_is_refused(mid_rotation: SettingsWrapper) -> None:
    with pytest.raises(WebhookRefused, match="signature verification failed"):
        verify_webhook(body=BODY, headers=signed_headers(BODY, secret=STRANGER_SECRET))


def test_after_the_switch_the_old_secret_is_refused(settings: SettingsWrapper) -> None:
    settings.OPENAI_SIGNING_SECRET = NEW_SECRET
    settings.OPENAI_SIGNING_SECRET_PREVIOUS = []
    with pytest.raises(WebhookRefused, match="signature verification failed"):
        verify_webhook(body=BODY, headers=signed_headers(BODY, secret=OLD_SECRET))


def test_a_malformed_previous_secret_is_named(mid_rotation: SettingsWrapper) -> None:
    mid_rotation.OPENAI_SIGNING_SECRET_PREVIOUS = [OLD_SECRET, "whsec_not base64!"]
    with pytest.raises(SigningSecretMissing, match="OPENAI_SIGNING_SECRET_PREVIOUS"):
        verify_webhook(body=BODY, headers=signed_headers(BODY, secret=OLD_SECRET))


@pytest.mark.django_db(transaction=True)
async def test_the_webhook_view_accepts_a_delivery_signed_with_the_old_secret(
    mid_rotation: SettingsWrapper,
) -> None:
    response = await post_webhook(BODY, signed_headers(BODY, webhook_id="wh_rot_view", secret=OLD_SECRET))
    assert response.status_code == 200
    assert json.loads(response.content) == {"outcome": "ignored"}
    assert await WebhookDelivery.objects.filter(webhook_id="wh_rot_view").aexists()
