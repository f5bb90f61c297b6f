"""What the scale tests and bench/load.py do to a running cluster: phone calls through signed webhooks,
web calls through `/rtc`, typed turns on a call's sideband, and reads of what the workers stored.

Synchronous (httpx, a websockets client run to completion per turn) so that a test can drive the
cluster while it stops and starts servers around it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect

from realtime_local.webhooks import event_envelope, new_webhook_event_id, sign
from tests.scale.cluster import ENGINE_API_KEY, Cluster, wait_until

ENGINE_AUTH = {"Authorization": f"Bearer {ENGINE_API_KEY}"}


@dataclass(frozen=True)
class PhoneCall:
    """A SIP-style call the engine made and the product accepted."""

    provider_call_id: str
    call_id: str  # our Call uuid


def signed_webhook(
    cluster: Cluster, provider_call_id: str, *, caller: str = "+15550100000"
) -> tuple[bytes, dict[str, str]]:
    """The `realtime.call.incoming` delivery for `provider_call_id`, signed with the cluster's secret."""
    data = {
        "call_id": provider_call_id,
        "sip_headers": [
            {"name": "From", "value": f"<sip:{caller}@realtime.local>;tag={uuid.uuid4().hex[:10]}"},
            {"name": "To", "value": "<sip:+15550000001@realtime.local>"},
            {"name": "Call-ID", "value": f"{uuid.uuid4().hex}@realtime.local"},
        ],
    }
    event_id = new_webhook_event_id()
    body = json.dumps(
        event_envelope(event_id=event_id, event_type="realtime.call.incoming", data=data)
    ).encode()
    headers = sign(secret=cluster.signing_secret, webhook_id=event_id, timestamp=int(time.time()), body=body)
    headers["Content-Type"] = "application/json"
    return body, headers


def engine_incoming_call(cluster: Cluster) -> str:
    """Create a SIP-style incoming call on the engine; its provider call id."""
    response = httpx.post(
        f"{cluster.engine_url}/v1/realtime/_local/incoming_calls", json={}, headers=ENGINE_AUTH, timeout=30
    )
    assert response.status_code == 201, response.text
    return str(response.json()["call_id"])


def phone_call(
    cluster: Cluster, *, web_index: int = 0, web_url: str | None = None, observed_within_s: float = 30.0
) -> PhoneCall:
    """An incoming call delivered to web `web_index` (or to `web_url`), accepted, and observed by a
    worker (its sideband is open: the call is active in our database)."""
    provider_call_id = engine_incoming_call(cluster)
    body, headers = signed_webhook(cluster, provider_call_id)
    base = web_url or cluster.web_urls[web_index]
    response = httpx.post(f"{base}/telephony/webhook", content=body, headers=headers, timeout=30)
    assert response.status_code == 200 and response.json().get("outcome") == "accepted", response.text
    rows = wait_until(
        lambda: cluster.sql(
            "SELECT id FROM calls_call WHERE provider_call_id = %s AND answered_at IS NOT NULL",
            provider_call_id,
        ),
        timeout_s=observed_within_s,
        what=f"call {provider_call_id} accepted and observed",
    )
    call_id = str(rows[0][0])
    wait_until(
        lambda: observer_connected(cluster, call_id), timeout_s=observed_within_s, what="observer attached"
    )
    return PhoneCall(provider_call_id=provider_call_id, call_id=call_id)


def observer_connected(cluster: Cluster, call_id: str) -> bool:
    """A worker holds the call's lease (it claimed it and opened its sideband)."""
    try:
        rows = cluster.sql(
            "SELECT owner FROM calls_observerlease WHERE call_id = %s AND owner <> ''", call_id
        )
    except Exception:  # no lease table yet (older schema): fall back to the worker logs
        return any(
            call_id in proc.log_text() and "observing" in proc.log_text() for proc in cluster.worker_procs
        )
    return bool(rows)


async def _exchange(url: str, text: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with connect(url, additional_headers=ENGINE_AUTH, open_timeout=10, proxy=None) as ws:
        await ws.send(
            json.dumps(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": text}],
                    },
                }
            )
        )
        await ws.send(json.dumps({"type": "response.create"}))
        async with asyncio.timeout(30):
            while True:
                event: dict[str, Any] = json.loads(await ws.recv())
                seen.append(event)
                if event["type"] == "response.done":
                    return seen


def exchange(cluster: Cluster, provider_call_id: str, text: str) -> list[dict[str, Any]]:
    """One typed turn on the call through a second sideband straight to the engine (a browser's data
    channel would do the same); the events it saw, up to `response.done`. The engine sends every
    event to each sideband of the call, so the worker's observer receives the same ones."""
    assert cluster.engine_proc is not None, "no engine in this cluster"
    url = f"ws://127.0.0.1:{cluster.engine_proc.port}/v1/realtime?call_id={provider_call_id}"
    return asyncio.run(_exchange(url, text))


def stored_event_ids(cluster: Cluster, call_id: str) -> list[str]:
    """The `event_id`s of the call's stored events, in sequence order."""
    rows = cluster.sql(
        "SELECT payload->>'event_id' FROM calls_event WHERE call_id = %s ORDER BY sequence", call_id
    )
    return [str(row[0]) for row in rows]


def wait_stored(cluster: Cluster, call_id: str, event_ids: list[str], *, within_s: float = 30.0) -> list[str]:
    """Wait until every one of `event_ids` is stored for the call; all its stored ids."""
    wanted = set(event_ids)

    def check() -> list[str] | None:
        try:
            have = stored_event_ids(cluster, call_id)
        except Exception:  # the database may still be coming back
            return None
        return have if wanted <= set(have) else None

    result: list[str] = wait_until(
        check, timeout_s=within_s, what=f"{len(wanted)} events stored for {call_id}"
    )
    return result


def staff_session(cluster: Cluster, name: str = "faults") -> str:
    """A staff user's session key (the `sessionid` cookie)."""
    cluster.create_staff_users(1, prefix=name)
    return cluster.create_sessions([f"{name}-0"])[f"{name}-0"]


async def _offer() -> str:
    from tests.engine.conftest import make_offer

    return await make_offer()


def make_offer() -> str:
    """A real aiortc offer (audio + the oai-events data channel)."""
    return asyncio.run(_offer())


def post_offer(base_url: str, session_key: str, offer: str, *, timeout_s: float = 60.0) -> httpx.Response:
    return httpx.post(
        f"{base_url}/rtc",
        content=offer.encode(),
        headers={"Content-Type": "application/sdp", "Cookie": f"sessionid={session_key}"},
        timeout=timeout_s,
    )
