"""Observer takeover: SIGKILL the worker holding 20 live calls; how fast is each call observed
again, and is any event lost after the takeover?

Set-up (tests/scale/cluster.py, loopback only): the local engine (no speech) with its sent-event log
on, 2 web processes (`serve --no-engine --no-observer`), 2 observer workers (`manage.py observe`),
a fresh PostgreSQL database and a Redis key prefix on the machine's servers (both removed after).
By default the second worker starts once the first holds every call, so the victim holds all of them
(`--spread`: both workers run from the start and share the calls; the one holding most is the victim).
The calls arrive as signed SIP webhooks at a web process, which accepts them and asks a worker to
observe them; a driver sideband per call says something every `--interval` seconds (~15 events per
answer). After `--warm` seconds the worker holding most leases is SIGKILLed (or SIGSTOPped, then
SIGCONTed once its calls were taken over, with `--stop`); the drivers go on for `--after` seconds.

Printed (tests/scale/takeover.py computes them from the engine's log and the stored events):
- takeover_p50/p100: from the kill to the first sideband of another worker on each of the victim's
  calls (lease TTL 3 s + scan every 0.5 s: at most ~3.5 s + a connect, by design);
- calls_reobserved: victim's calls observed again;
- events_lost_after_takeover: events emitted while the new observer's sideband was attached and
  not stored (must be 0);
- events_lost_with_killed_worker: what the victim had received but not yet flushed when it died
  (at most 0.25 s of events: its flush interval), and events_emitted_unobserved: emitted while no
  observer was attached (the API does not replay them; the transcript is repaired with
  `conversation.item.retrieve`, docs/scaling.md).

Run: .venv/bin/python bench/takeover.py [--calls 20] [--stop]
Bounded: at most --calls calls and about warm + takeover + after + ~30 s of start/stop.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    from tests.scale.cluster import Cluster
    from tests.scale.takeover import prepare, route_webhooks, run_takeover

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--warm", type=float, default=4.0, help="seconds of talk before the kill")
    parser.add_argument("--after", type=float, default=5.0, help="seconds of talk after the takeover")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between a call's turns")
    parser.add_argument("--stop", action="store_true", help="SIGSTOP (then SIGCONT) instead of SIGKILL")
    parser.add_argument(
        "--spread", action="store_true", help="both workers from the start (they share the calls)"
    )
    parser.add_argument("--keep", type=Path, help="keep the processes' logs and the engine's event log here")
    args = parser.parse_args()
    if not 1 <= args.calls <= 200:
        parser.error("--calls must be within 1..200")

    load = os.getloadavg()
    print(f"cpus: {os.cpu_count()} loadavg: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    with tempfile.TemporaryDirectory(prefix="va-takeover-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        event_log = where / "engine-events.jsonl"
        cluster = Cluster(web=2, workers=2 if args.spread else 1, log_dir=where / "logs")
        prepare(cluster, event_log)
        with cluster:
            route_webhooks(cluster)
            how = signal.SIGSTOP if args.stop else signal.SIGKILL
            result = asyncio.run(
                run_takeover(
                    cluster,
                    event_log,
                    calls=args.calls,
                    how=how,
                    warm_s=args.warm,
                    after_s=args.after,
                    interval_s=args.interval,
                    spare_worker=not args.spread,
                )
            )
            print(f"victim: {result.victim} ({how.name}) holding {result.victim_calls} calls")
            for line in result.lines():
                print(line)
            for call, kind, at in result.lost_samples:
                print(f"  lost after takeover: {call} {kind} at +{at:.3f} s")
            print(f"answers_during_run: {result.answers} answers")
            print(f"driver_errors: {len(result.driver_errors)} errors")
            for error in result.driver_errors[:5]:
                print(f"  {error}")
    ok = result.reobserved == result.victim_calls and result.lost_after_takeover == 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
