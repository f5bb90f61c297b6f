"""Phone calls: how fast a signed `realtime.call.incoming` webhook is answered and the call accepted.

Per call (default 30, one after another): the local engine (in-process, no speech) creates a
SIP-style incoming call and signs its webhook to a loopback receiver; the captured bytes are posted
to Django's `/telephony/webhook` view (ASGI, `AsyncClient`, SQLite under a temporary directory);
the clock runs from that post until

- *webhook 200*: the view answered (verification, the delivery row, the decision, the Call row);
- *accept at engine*: the engine saw our `POST …/accept` (its call's `accepted` event is set),
  i.e. the background accept that the 200 did not wait for;

and *engine → accept*: from the engine's own `incoming_calls` request (which sends the webhook) to
the accept, the whole signalling path but the network between OpenAI and us.

Run: .venv/bin/python bench/webhook_accept_latency.py [--calls 30]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def _row(name: str, values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (
        f"{name:<22} median {statistics.median(values):7.1f} ms   p95 {p95:7.1f} ms   "
        f"min {ordered[0]:6.1f}   max {ordered[-1]:6.1f}"
    )


async def run(calls: int) -> None:
    import httpx
    from aiohttp import web
    from django.conf import settings
    from django.test import AsyncClient

    from calls.models import AgentProfile
    from realtime_local.app import ENGINE, create_app
    from realtime_local.config import EngineConfig
    from telephony.services import wait_for_answers

    received: asyncio.Queue[tuple[bytes, dict[str, str]]] = asyncio.Queue()

    async def receive(request: web.Request) -> web.Response:
        await received.put((await request.read(), dict(request.headers)))
        return web.Response(text="ok")

    receiver = web.Application()
    receiver.router.add_post("/webhook", receive)
    receiver_runner = web.AppRunner(receiver, access_log=None)
    await receiver_runner.setup()
    await web.TCPSite(receiver_runner, "127.0.0.1", 0).start()
    receiver_url = f"http://127.0.0.1:{receiver_runner.addresses[0][1]}/webhook"

    config = EngineConfig(
        host="127.0.0.1",
        port=0,
        api_key="sk-local",
        webhook_url=receiver_url,
        webhook_secret=SECRET,
        speech=False,
        max_calls=4,
    )
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    await asyncio.wait_for(app[ENGINE].ready.wait(), 10)
    base = f"http://127.0.0.1:{runner.addresses[0][1]}/v1"
    settings.REALTIME_BASE_URL, settings.REALTIME_API_KEY = base, "sk-local"
    settings.OPENAI_SIGNING_SECRET = SECRET
    settings.ALLOWED_HOSTS = ["testserver"]  # the AsyncClient's host
    await AgentProfile.objects.aget_or_create(is_default=True, defaults={"name": "Bench agent"})

    client = AsyncClient()
    auth = {"Authorization": "Bearer sk-local"}
    answered: list[float] = []
    accepted: list[float] = []
    end_to_end: list[float] = []
    async with httpx.AsyncClient(timeout=10) as http:
        for index in range(calls + 1):  # the first call warms up (imports, connections) and is not counted
            started = time.perf_counter()
            created = await http.post(
                f"{base}/realtime/_local/incoming_calls", json={"from": "+15551110000"}, headers=auth
            )
            call_id = created.json()["call_id"]
            local = app[ENGINE].calls.get(call_id)
            body, headers = await asyncio.wait_for(received.get(), 10)
            wanted = {k: v for k, v in headers.items() if k.lower().startswith("webhook-")}
            posted = time.perf_counter()
            response = await client.post(
                "/telephony/webhook", data=body, content_type="application/json", headers=wanted
            )
            done = time.perf_counter()
            assert response.status_code == 200, response.content
            await asyncio.wait_for(local.accepted.wait(), 10)
            accept_seen = time.perf_counter()
            if index:
                answered.append((done - posted) * 1000)
                accepted.append((accept_seen - posted) * 1000)
                end_to_end.append((accept_seen - started) * 1000)
            await wait_for_answers()
            await http.post(f"{base}/realtime/calls/{call_id}/hangup", headers=auth)
    print(f"{calls} calls · {os.cpu_count()} CPUs · load average {os.getloadavg()[0]:.2f} · SQLite")
    print(_row("webhook 200", answered))
    print(_row("accept at engine", accepted))
    print(_row("engine → accept", end_to_end))
    await runner.cleanup()
    await receiver_runner.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DATABASE_URL"] = f"sqlite:///{tmp}/bench.sqlite3"
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "voiceagent.test_settings")
        os.environ["TELEPHONY_BUSINESS_HOURS"] = ""
        os.environ.pop("TELEPHONY_MAX_CONCURRENT_CALLS", None)
        import logging

        import django
        from django.core.management import call_command

        django.setup()
        logging.disable(logging.WARNING)
        call_command("migrate", verbosity=0)
        asyncio.run(run(options.calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
