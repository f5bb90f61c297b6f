"""SIP front door figures: INVITE → 200 OK with an auto-accepting webhook receiver, and RTP pacing.

    .venv/bin/python -m bench.sip_answer              # 20 calls, text-only engine (no speech models)
    .venv/bin/python -m bench.sip_answer --calls 50 --talk-s 3

Everything runs on loopback with real sockets: the engine (`create_app`, SIP on a free UDP port),
a webhook receiver that accepts each call through the API as soon as the signed webhook arrives
(what a product's fast path does), and a Python UAC that sends INVITE, ACK, `--talk-s` seconds of
paced PCMU RTP (a 440 Hz tone) and BYE. Per call: INVITE → 100 Trying, INVITE → 200 OK (client
side), the engine's own INVITE → 200 OK figure, RTP packets each way, the inbound interarrival jitter
the engine computed (RFC 3550) and the spacing of the engine's outbound packets as received.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time

import httpx
import numpy as np
from aiohttp import web

from realtime_local.app import ENGINE, create_app
from realtime_local.config import EngineConfig
from tests.engine.sip_client import SipClient, sdp_media_port


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def main(calls: int, talk_s: float) -> None:
    config = EngineConfig(host="127.0.0.1", port=0, speech=False, sip_port=0, max_calls=4)
    http = httpx.AsyncClient(timeout=10.0, headers={"Authorization": f"Bearer {config.api_key}"})

    async def on_webhook(request: web.Request) -> web.Response:
        call_id = json.loads(await request.read())["data"]["call_id"]

        async def accept() -> None:
            await http.post(f"{config.base_url}/realtime/calls/{call_id}/accept", json={"type": "realtime"})

        asyncio.get_running_loop().create_task(accept())
        return web.Response(text="ok")

    receiver_app = web.Application()
    receiver_app.router.add_post("/hook", on_webhook)
    receiver = web.AppRunner(receiver_app, access_log=None)
    await receiver.setup()
    await web.TCPSite(receiver, "127.0.0.1", 0).start()
    config.webhook_url = f"http://127.0.0.1:{receiver.addresses[0][1]}/hook"
    app = create_app(config)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    config.port = int(runner.addresses[0][1])
    engine = app[ENGINE]
    await engine.ready.wait()
    assert engine.sip is not None
    tone = (np.sin(np.arange(int(8000 * talk_s)) * 2 * np.pi * 440 / 8000) * 8000).astype(np.int16)
    trying_ms: list[float] = []
    ok_ms: list[float] = []
    gaps: list[float] = []
    sent_out: list[int] = []
    try:
        for _ in range(calls):
            client = await SipClient.open(("127.0.0.1", engine.sip.port))
            started = time.perf_counter()
            client.invite()
            first = await client.next_sip()
            trying_ms.append((time.perf_counter() - started) * 1000)
            assert first.status == 100
            ok = await client.final_response(limit_s=15)
            ok_ms.append((time.perf_counter() - started) * 1000)
            assert ok.status == 200, ok.status
            client.ack()
            await client.send_audio(tone, ("127.0.0.1", sdp_media_port(ok.body)))
            _, arrivals, _ = client.received_audio()
            gaps += list(np.diff(arrivals) * 1000)
            sent_out.append(len(arrivals))
            client.cseq += 1
            client.send(client.request("BYE"))
            assert (await client.final_response()).status == 200
            client.close()
            await asyncio.sleep(0.05)
    finally:
        await http.aclose()
        await runner.cleanup()
        await receiver.cleanup()
    history = engine.sip.history[-calls:]
    print(f"cpus {os.cpu_count()}, load {os.getloadavg()[0]:.2f}; {calls} calls, {talk_s:g} s of RTP each")
    print(f"INVITE→100 Trying  ms: median {statistics.median(trying_ms):.2f}  p95 {pct(trying_ms, 95):.2f}")
    print(
        f"INVITE→200 OK      ms: median {statistics.median(ok_ms):.1f}  p95 {pct(ok_ms, 95):.1f}  "
        f"max {max(ok_ms):.1f}  (webhook → accept via the API included)"
    )
    engine_ok = [h.invite_to_ok_s * 1000 for h in history if h.invite_to_ok_s is not None]
    print(f"engine INVITE→200  ms: median {statistics.median(engine_ok):.1f}")
    rtp_in = [h.rtp_in for h in history]
    jitter = [h.jitter_ms for h in history]
    print(
        f"RTP in per call: median {statistics.median(rtp_in)} packets (sent {len(tone) // 160}); "
        f"engine jitter median {statistics.median(jitter):.2f} ms, max {max(jitter):.2f} ms"
    )
    print(
        f"RTP out per call: median {statistics.median(sent_out)} packets; spacing median "
        f"{statistics.median(gaps):.2f} ms, p1 {pct(gaps, 1):.2f}, p99 {pct(gaps, 99):.2f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--talk-s", type=float, default=2.0)
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.talk_s))
