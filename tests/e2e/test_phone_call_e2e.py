"""A phone call, end to end: sipp → the engine's SIP front door → signed webhook → Django → accept →
the agent hears the question and answers over RTP → BYE → the Call row is complete.

`manage.py serve` runs as a subprocess against a throw-away SQLite database (the DemoServer harness of
scripts/screenshots.py) with its local engine (speech on) answering SIP on a free UDP port
(`REALTIME_LOCAL_SIP_PORT`). sipp places the call and plays the caller's voice from a pcap of PCMU RTP
made here from espeak-ng; the offer's media port is a UDP socket of this test, which counts and decodes
the agent's RTP. When the transcript holds the caller's words and the reply audio has arrived, the
test sends sipp an OPTIONS in its dialog, which makes it hang up (BYE). Figures are printed, not asserted.
"""

from __future__ import annotations

import re
import socket
import sqlite3
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from realtime_local.sip.g711 import ulaw_decode
from realtime_local.sip.rtp import parse_rtp
from scripts.screenshots import DEMO_PASSWORD, DEMO_USERNAME, DemoServer, demo_server
from tests.e2e.sipp_call import CALLEE, CALLER, release_options, scenario, sipp_command, write_rtp_pcap
from tests.engine.fixtures_media import espeak, rms

pytestmark = [pytest.mark.e2e, pytest.mark.speech, pytest.mark.timeout(420)]

QUESTION = "What time does the library open on Sunday"
QUESTION_WORDS = {"library", "open", "sunday"}
TURN_TIMEOUT_S = 150.0  # speech recognition on a busy 2-core machine; a bound, not a target


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class RtpListener:
    """The caller's media socket: collects the agent's RTP (arrival time, PCMU payload)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self.packets: list[tuple[float, bytes, bool]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(2048)
            except TimeoutError:
                continue
            packet = parse_rtp(data)
            if packet is not None:
                self.packets.append((time.monotonic(), packet.payload, packet.marker))

    def audio(self) -> np.ndarray:
        chunks = [ulaw_decode(payload) for _, payload, _ in list(self.packets)]
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture(scope="module")
def sip_port() -> int:
    return free_udp_port()


@pytest.fixture(scope="module")
def server(sip_port: int) -> Iterator[DemoServer]:
    if subprocess.run(["which", "sipp"], capture_output=True).returncode != 0:
        pytest.skip("sipp is not installed (Debian package sip-tester)")
    with demo_server(
        engine=True, startup_timeout_s=240.0, extra_env={"REALTIME_LOCAL_SIP_PORT": str(sip_port)}
    ) as running:
        yield running


def query(server: DemoServer, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    assert server.db_path is not None
    with sqlite3.connect(server.db_path, timeout=10) as db:
        return db.execute(sql, args).fetchall()


def wait_for(what: str, check: Any, limit_s: float, server: DemoServer) -> Any:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}\n{server.log_tail()}")


def test_sipp_call_is_verified_accepted_heard_answered_and_recorded(
    server: DemoServer, sip_port: int, tmp_path: Path
) -> None:
    pcm = np.concatenate(
        [np.zeros(8000, dtype=np.int16), espeak(QUESTION, rate=8000), np.zeros(16000, np.int16)]
    )
    packets = write_rtp_pcap(tmp_path / "question.pcap", pcm)
    listener = RtpListener()
    sipp_sip_port = free_udp_port()
    (tmp_path / "call.xml").write_text(
        scenario(
            pcap=tmp_path / "question.pcap",
            rtp_port=listener.port,
            talk_ms=int(TURN_TIMEOUT_S * 1000) + 30_000,
        )
    )
    command = sipp_command(
        scenario_path=tmp_path / "call.xml",
        server_port=sip_port,
        sip_port=sipp_sip_port,
        media_port=free_udp_port(),
    )
    seeded = {row[0] for row in query(server, "SELECT id FROM calls_call")}  # the demo data has SIP calls
    deliveries_before = query(server, "SELECT count(*) FROM calls_webhookdelivery")[0][0]
    started = time.monotonic()
    sipp_log = (tmp_path / "sipp.log").open("wb")  # a file, not a pipe: sipp redraws its screen
    sipp = subprocess.Popen(command, cwd=tmp_path, stdout=sipp_log, stderr=subprocess.STDOUT)
    try:
        row = wait_for(
            "the Call row (webhook verified and stored)",
            lambda: [
                row
                for row in query(
                    server, "SELECT id, provider_call_id, sip_headers FROM calls_call WHERE source = 'sip'"
                )
                if row[0] not in seeded
            ],
            30,
            server,
        )[0]
        db_id, provider_call_id, sip_headers = row
        wait_for(
            "the call to be accepted",
            lambda: query(server, "SELECT answered_at FROM calls_call WHERE id = ?", db_id)[0][0],
            30,
            server,
        )
        accepted_after = time.monotonic() - started
        assert query(server, "SELECT count(*) FROM calls_webhookdelivery")[0][0] == deliveries_before + 1

        def heard() -> str | None:
            for (text,) in query(
                server, "SELECT text FROM calls_transcriptturn WHERE call_id = ? AND role = 'user'", db_id
            ):
                if set(re.findall(r"[a-z]+", text.lower())) >= QUESTION_WORDS:
                    return str(text)
            return None

        user_text = wait_for("the caller's words in the transcript", heard, TURN_TIMEOUT_S, server)
        heard_after = time.monotonic() - started
        wait_for(
            "the agent's answer in the transcript",
            lambda: (
                query(
                    server,
                    "SELECT count(*) FROM calls_transcriptturn "
                    "WHERE call_id = ? AND role = 'assistant' AND text != ''",
                    db_id,
                )[0][0]
                >= 2
            ),  # the greeting and the answer
            TURN_TIMEOUT_S,
            server,
        )
        time.sleep(3.0)  # let the reply finish playing out as RTP
        audio = listener.audio()
        call_id_header = re.search(r'"Call-ID", "value": "([^"]+)"', sip_headers)
        assert call_id_header is not None, sip_headers
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.sendto(
                release_options(call_id=call_id_header.group(1), sipp_port=sipp_sip_port),
                ("127.0.0.1", sipp_sip_port),
            )
        sipp.wait(timeout=30)
        assert sipp.returncode == 0, (tmp_path / "sipp.log").read_text(errors="replace")[-3000:]
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait(5)
        listener.close()
        sipp_log.close()

    arrivals = [at for at, _, _ in listener.packets]
    gaps = np.diff(arrivals)
    print(
        f"\nsipp e2e: pcap {packets} packets; accepted after {accepted_after:.2f} s; words heard after "
        f"{heard_after:.1f} s; agent RTP {len(arrivals)} packets, rms {rms(audio):.0f}, "
        f"gap median {np.median(gaps) * 1000:.1f} ms p99 {np.percentile(gaps, 99) * 1000:.1f} ms"
    )
    assert len(arrivals) > 100 and rms(audio) > 200
    assert sum(marker for _, _, marker in listener.packets) == 1

    def final() -> list[tuple[Any, ...]]:
        return query(
            server,
            "SELECT status, caller_number, callee_number, answered_at, ended_at, end_reason FROM calls_call "
            "WHERE id = ? AND ended_at IS NOT NULL",
            db_id,
        )

    status, caller, callee, answered_at, ended_at, end_reason = wait_for(
        "the call to end", final, 30, server
    )[0]
    assert status == "ended" and caller == CALLER and callee == CALLEE, (status, caller, callee, end_reason)
    assert answered_at < ended_at
    assert (
        provider_call_id.startswith("rtc_")
        and set(re.findall(r"[a-z]+", user_text.lower())) >= QUESTION_WORDS
    )
    admin = admin_page(server, str(uuid.UUID(db_id)))
    assert CALLER in admin and ">Ended<" in admin.replace("\n", "")
    duration = re.search(r"duration_display.*?<div class=\"readonly\">([^<]+)<", admin, re.S)
    assert duration is not None and duration.group(1).strip() not in ("", "-"), duration
    assert "library" in admin.lower() and "sunday" in admin.lower()  # the transcript is on the page


def admin_page(server: DemoServer, call_pk: str) -> str:
    """The call's admin change page (fields and transcript), signed in as the demo admin."""
    with httpx.Client(base_url=server.base_url, timeout=15.0) as http:
        login = http.get("/admin/login/?next=/admin/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', login.text)
        assert token is not None
        signed_in = http.post(
            "/admin/login/?next=/admin/",
            data={
                "csrfmiddlewaretoken": token.group(1),
                "username": DEMO_USERNAME,
                "password": DEMO_PASSWORD,
            },
            headers={"Referer": server.base_url + "/admin/login/"},
        )
        assert signed_in.status_code == 302, signed_in.text[:500]
        admin = http.get(f"/admin/calls/call/{call_pk}/change/")
        assert admin.status_code == 200
        return admin.text
