"""`{% phone_line %}`: the console's phone card — the line's number and its live phone calls."""

from __future__ import annotations

from typing import Any

from django import template
from django.conf import settings

from calls.models import Call

register = template.Library()

#: The most live phone calls the card lists (the admin lists them all).
MAX_LISTED_CALLS = 20


@register.inclusion_tag("telephony/phone_line.html", takes_context=True)
def phone_line(context: template.Context) -> dict[str, Any]:
    """`FROM_NUMBER` ("Call the agent at …") and the live phone calls, each with a hang-up button.

    One query. Renders nothing when there is neither a number nor a live phone call."""
    calls = list(
        Call.objects.filter(source=Call.Source.SIP, status__in=[Call.Status.CONNECTING, Call.Status.ACTIVE])
        .select_related("agent")
        .order_by("-created_at")[:MAX_LISTED_CALLS]
    )
    return {
        "from_number": settings.FROM_NUMBER,
        "phone_calls": calls,
        "csrf_token": context.get("csrf_token"),
    }
