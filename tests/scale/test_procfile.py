"""The Procfile under honcho: `honcho start -c web=2,worker=2` serves, observes calls, and stops
gracefully on SIGTERM (web: stop listening and finish requests; worker: flush and release leases)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.scale.cluster import REPO, Cluster, free_port_run, wait_until
from tests.scale.helpers import phone_call

pytestmark = [pytest.mark.timeout(300)]


def test_honcho_runs_two_web_and_two_workers_from_the_procfile_and_stops_them_gracefully(
    tmp_path: Path,
) -> None:
    with Cluster(web=0, workers=0, log_dir=tmp_path / "logs") as cluster:
        base_port = free_port_run(2)
        env = cluster.base_env()
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        log_path = tmp_path / "honcho.log"
        with log_path.open("wb") as log:
            honcho = subprocess.Popen(
                [
                    str(Path(sys.executable).parent / "honcho"),
                    "start",
                    "-c",
                    "web=2,worker=2",
                    "-p",
                    str(base_port),
                ],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        urls = [f"http://127.0.0.1:{base_port}", f"http://127.0.0.1:{base_port + 1}"]

        def output() -> str:
            return log_path.read_text(errors="replace")

        try:

            def ready() -> bool:
                try:
                    return all(httpx.get(f"{url}/readyz", timeout=5).status_code == 200 for url in urls)
                except httpx.HTTPError:
                    return False

            try:
                wait_until(ready, timeout_s=120, what="both web processes ready")
                wait_until(
                    lambda: output().count("observer worker running") == 2, timeout_s=60, what="two workers"
                )
            except AssertionError as exc:
                raise AssertionError(f"{exc}; honcho's output ends with:\n{output()[-3000:]}") from None
            call = phone_call(cluster, web_url=urls[1])
            owner = cluster.sql("SELECT owner FROM calls_observerlease WHERE call_id = %s", call.call_id)[0][
                0
            ]
            assert owner  # one of the two workers holds the lease
        finally:
            os.kill(honcho.pid, signal.SIGTERM)
            code = honcho.wait(60)
        text = output()
        assert text.count("stopping: no new connections") == 2, text[-3000:]
        assert text.count("Observer worker stopped.") == 2, text[-3000:]
        assert "released 1 observer lease" in text
        assert "Traceback" not in text, text[-3000:]
        assert code == 0 or code == -signal.SIGTERM or code == 128 + signal.SIGTERM, text[-2000:]
        released = cluster.sql(
            "SELECT expires_at <= now() FROM calls_observerlease WHERE call_id = %s", call.call_id
        )
        assert released[0][0] is True
