"""Screenshots of the product for review: login, console, history, and the admin's call pages.

    .venv/bin/python -m scripts.screenshots [--out artifacts/screenshots]

Runs the real product (`manage.py serve --no-engine`, DEBUG on) against a throw-away SQLite database
seeded with a demo call (transcript, events, a tool call), signs in through the login page with
headless Chromium and saves PNGs. The browser test (tests/test_e2e_console.py) uses the same pieces.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
DEMO_USERNAME = "demo"
DEMO_PASSWORD = "demo-password-for-screenshots"
VISITOR_USERNAME = "visitor"  # signed up, not staff: sees the 403 page
VIEWPORT_WIDTH, VIEWPORT_HEIGHT = 1280, 860
SEED_COMMAND = "from scripts.screenshots import seed_demo_data; print(seed_demo_data())"


@dataclass(frozen=True)
class DemoServer:
    """A running product with seeded demo data."""

    base_url: str
    call_id: str
    log_path: Path
    process: subprocess.Popen[bytes]
    db_path: Path | None = None

    def url(self, path: str) -> str:
        return self.base_url + path

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's output (for a failing test's message)."""
        return self.log_path.read_text(errors="replace")[-chars:]


def seed_demo_data() -> str:
    """Create the demo superuser and calls; return the id of the call with a full transcript.

    Runs inside a configured Django process (`manage.py shell -c`), never against a real database.
    """
    import datetime as dt

    from django.contrib.auth.models import User
    from django.utils import timezone

    from calls.models import AgentProfile, Call, Event, ToolInvocation, TranscriptTurn

    user = User.objects.create_superuser(DEMO_USERNAME, "demo@example.test", DEMO_PASSWORD)
    User.objects.create_user(VISITOR_USERNAME, "visitor@example.test", DEMO_PASSWORD)
    agent = AgentProfile.objects.get(is_default=True)
    now = timezone.now().replace(microsecond=0)

    started = now - dt.timedelta(minutes=12)
    call = Call.objects.create(
        provider_call_id="rtc_demo8f3a91c2",
        source=Call.Source.WEB,
        mode=Call.Mode.WEBCAM,
        transport=Call.Transport.PROXY,
        user=user,
        agent=agent,
        status=Call.Status.ENDED,
        created_at=started,
        answered_at=started + dt.timedelta(seconds=1),
        ended_at=started + dt.timedelta(seconds=96),
        end_reason="hung up by the user",
        usage={"total_tokens": 1834, "input_tokens": 1210, "output_tokens": 624},
    )
    conversation = [
        ("assistant", "Hi! I'm your voice assistant. What can I do for you today?", False),
        ("user", "Hey, can you tell me what time it is in Tokyo right now?", False),
        ("assistant", "It's 9:42 in the evening in Tokyo — Japan Standard Time.", False),
        ("user", "Great. And what's on the whiteboard behind me?", False),
        ("assistant", "I can see a sketch of a sequence diagram with three boxes: browser, server and", True),
        ("user", "Sorry — just the title, please.", False),
        ("assistant", "The title says “Realtime call flow”.", False),
    ]
    at = started + dt.timedelta(seconds=2)
    for index, (role, text, interrupted) in enumerate(conversation):
        TranscriptTurn.objects.create(
            call=call,
            item_id=f"item_demo{index:03d}",
            role=role,
            text=text,
            started_at=at,
            ended_at=at + dt.timedelta(seconds=4),
            interrupted=interrupted,
        )
        at += dt.timedelta(seconds=9)
    ToolInvocation.objects.create(
        call=call,
        function_call_id="call_demo0001",
        tool_name="get_time",
        arguments={"timezone": "Asia/Tokyo"},
        output='{"time": "21:42", "timezone": "JST"}',
        status=ToolInvocation.Status.COMPLETED,
        duration_ms=7,
        created_at=started + dt.timedelta(seconds=14),
    )
    event_types = [
        "session.created",
        "session.updated",
        "response.created",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
        "response.done",
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "input_audio_buffer.committed",
        "conversation.item.input_audio_transcription.completed",
        "response.function_call_arguments.done",
        "conversation.item.create",
        "response.created",
        "response.output_audio_transcript.done",
        "response.done",
        "input_audio_buffer.speech_started",
        "response.cancelled",
        "conversation.item.truncated",
        "response.done",
        "rate_limits.updated",
    ]
    for sequence, event_type in enumerate(event_types, start=1):
        payload: dict[str, Any] = {"type": event_type, "event_id": f"event_demo{sequence:04d}"}
        if event_type == "session.created":
            payload["session"] = {
                "type": "realtime",
                "model": agent.model,
                "instructions": agent.instructions,
                "audio": {"output": {"voice": agent.voice}},
            }
        elif event_type == "response.done":
            payload["response"] = {"status": "completed", "usage": {"total_tokens": 611}}
        Event.objects.create(
            call=call,
            sequence=sequence,
            type=event_type,
            payload=payload,
            received_at=started + dt.timedelta(milliseconds=4700 * sequence),
        )

    others: list[dict[str, Any]] = [
        {"mode": Call.Mode.AUDIO, "status": Call.Status.ENDED, "minutes": 40, "talk": 212},
        {"mode": Call.Mode.SCREEN, "status": Call.Status.FAILED, "minutes": 95, "talk": None},
        {"mode": Call.Mode.AUDIO, "status": Call.Status.ENDED, "minutes": 300, "talk": 47},
    ]
    for n, spec in enumerate(others):
        created = now - dt.timedelta(minutes=spec["minutes"])
        Call.objects.create(
            provider_call_id=f"rtc_demo_other{n}",
            user=user,
            agent=agent,
            mode=spec["mode"],
            status=spec["status"],
            created_at=created,
            answered_at=created + dt.timedelta(seconds=1) if spec["talk"] else None,
            ended_at=created + dt.timedelta(seconds=1 + (spec["talk"] or 2)),
            error="" if spec["talk"] else "Upstream answered 503 to the SDP offer.",
        )
    phone_start = now - dt.timedelta(minutes=70)
    Call.objects.create(
        provider_call_id="rtc_demo_phone",
        source=Call.Source.SIP,
        mode=Call.Mode.PHONE,
        transport=Call.Transport.SIP,
        caller_number="+15550100123",
        agent=agent,
        status=Call.Status.TRANSFERRED,
        created_at=phone_start,
        answered_at=phone_start + dt.timedelta(seconds=2),
        ended_at=phone_start + dt.timedelta(seconds=130),
        end_reason="referred to a human",
    )
    _seed_comparison(agent, now)
    return str(call.pk)


def _seed_comparison(default_agent: Any, now: Any) -> None:
    """Phone calls of three agent profiles with measured turns, for the comparison page."""
    import datetime as dt

    from calls.models import AgentProfile, Call, Event, ToolInvocation, TranscriptTurn

    profiles = [
        (default_agent, [620, 710, 840, 580, 930, 690], 1, 1, False),
        (
            AgentProfile.objects.create(name="Cedar mini", voice="cedar", model="gpt-realtime-mini"),
            [410, 460, 520, 390, 610],
            2,
            0,
            True,
        ),
        (
            AgentProfile.objects.create(
                name="Alloy verbose", voice="alloy", model="gpt-realtime", instructions="Answer in detail."
            ),
            [980, 1240, 1110, 1530],
            0,
            2,
            False,
        ),
    ]
    for n, (profile, gaps, interruptions, tools, failed) in enumerate(profiles):
        start = now - dt.timedelta(hours=3 + n)
        call = Call.objects.create(
            provider_call_id=f"rtc_demo_compare{n}",
            source=Call.Source.SIP,
            mode=Call.Mode.PHONE,
            transport=Call.Transport.SIP,
            caller_number=f"+1555010020{n}",
            agent=profile,
            status=Call.Status.ENDED,
            created_at=start,
            answered_at=start + dt.timedelta(seconds=1),
            ended_at=start + dt.timedelta(seconds=60),
            end_reason="caller hung up",
        )
        events: list[Event] = []
        for turn, gap in enumerate(gaps):
            stopped = start + dt.timedelta(seconds=5 + 8 * turn)
            for offset, kind in (
                (0, "input_audio_buffer.speech_stopped"),
                (gap, "response.output_audio_transcript.delta"),
            ):
                events.append(
                    Event(
                        call=call,
                        sequence=len(events) + 1,
                        type=kind,
                        payload={"type": kind},
                        received_at=stopped + dt.timedelta(milliseconds=offset),
                    )
                )
        Event.objects.bulk_create(events)
        for i in range(interruptions):
            TranscriptTurn.objects.create(
                call=call,
                item_id=f"item_cmp{n}{i}",
                role="assistant",
                text="Sure, the opening hours are",
                interrupted=True,
            )
        for i in range(tools):
            ToolInvocation.objects.create(
                call=call,
                function_call_id=f"call_cmp{n}{i}",
                tool_name="get_time",
                status=ToolInvocation.Status.COMPLETED,
                duration_ms=9,
            )
        if failed:
            Call.objects.create(
                provider_call_id=f"rtc_demo_compare_failed{n}",
                source=Call.Source.SIP,
                mode=Call.Mode.PHONE,
                transport=Call.Transport.SIP,
                agent=profile,
                status=Call.Status.FAILED,
                created_at=start,
                error="Upstream answered 502",
            )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_healthy(url: str, process: subprocess.Popen[bytes], *, timeout_s: float, log_path: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"the server exited with {process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=1.0) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    tail = log_path.read_text()[-3000:]
    raise RuntimeError(f"the server did not answer {url} within {timeout_s:g} s:\n{tail}")


@contextlib.contextmanager
def demo_server(
    *,
    debug: bool = True,
    startup_timeout_s: float = 60.0,
    engine: bool = False,
    extra_env: dict[str, str] | None = None,
    repo: Path = REPO,
    serve_args: Sequence[str] = (),
) -> Iterator[DemoServer]:
    """Migrate and seed a fresh SQLite database, serve it with `manage.py serve`, stop it afterwards.

    With `debug=False` the server runs as in production (collectstatic, whitenoise, Secure cookies).
    With `engine=True` `serve` also starts the local realtime engine (with speech) as its child, on a
    free port that offers loopback ICE candidates, so a browser on this machine can call it; the
    call observer runs inside the server process as in `make run`. `extra_env` is applied last (a
    `DATABASE_URL` there serves another database); `repo` serves another tree of the project (an
    exported commit, for before/after benchmarks) and `serve_args` are more `serve` options.
    """
    workdir = Path(tempfile.mkdtemp(prefix="voiceagent-demo-"))
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"REDIS_URL", "OPENAI_API_KEY", "DJANGO_SETTINGS_MODULE", "PYTEST_CURRENT_TEST"}
    }
    env.update(
        DATABASE_URL=f"sqlite:///{workdir / 'db.sqlite3'}",
        DEBUG="true" if debug else "false",
        SECRET_KEY="demo-only-key-" + "x" * 40,
        DJANGO_SETTINGS_MODULE="voiceagent.settings",
        LOG_LEVEL="WARNING",
    )
    if engine:
        env.update(REALTIME_LOCAL_PORT=str(free_port()), REALTIME_LOCAL_LOOPBACK_CANDIDATES="1")
    if repo != REPO:
        env.update(PYTHONPATH=str(repo))
    env.update(extra_env or {})
    manage = [sys.executable, str(repo / "manage.py")]
    log_path = workdir / "server.log"
    process: subprocess.Popen[bytes] | None = None
    try:
        subprocess.run([*manage, "migrate", "--noinput"], cwd=repo, env=env, check=True, capture_output=True)
        seeded = subprocess.run(
            [*manage, "shell", "-c", SEED_COMMAND],
            cwd=repo,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        call_id = seeded.stdout.strip().splitlines()[-1]
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    *manage,
                    "serve",
                    *([] if engine else ["--no-engine"]),
                    *serve_args,
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                ],
                cwd=repo,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base_url = f"http://127.0.0.1:{port}"
        _wait_healthy(f"{base_url}/healthz", process, timeout_s=startup_timeout_s, log_path=log_path)
        yield DemoServer(
            base_url=base_url,
            call_id=call_id,
            log_path=log_path,
            process=process,
            db_path=workdir / "db.sqlite3",
        )
    finally:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        shutil.rmtree(workdir, ignore_errors=True)


@contextlib.contextmanager
def chromium(*, fake_microphone: Path | None = None, extra_args: Sequence[str] = ()) -> Iterator[Browser]:
    """Headless Debian Chromium driven by Playwright (never a downloaded browser).

    With `fake_microphone` (a 48 kHz WAV) the browser grants media without asking and plays that file
    once as its microphone; loopback ICE candidates and autoplay are allowed, for calls on this machine.
    `extra_args` are more command-line flags (e.g. `--ignore-certificate-errors` for a test certificate).
    """
    from playwright.sync_api import sync_playwright

    args = [*CHROMIUM_FLAGS, *extra_args]
    if fake_microphone is not None:
        args += [
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={fake_microphone.resolve()}%noloop",
            "--autoplay-policy=no-user-gesture-required",
            "--allow-loopback-in-peer-connection",
        ]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, *, bypass_csp: bool = True) -> Page:
    """A page in a fresh context. `bypass_csp`: Playwright's `wait_for_function` evaluates its
    predicate with eval in the page, which our Content-Security-Policy (no 'unsafe-eval') refuses;
    tests/security/test_csp_e2e.py checks the pages under the policy with `bypass_csp=False`."""
    context = browser.new_context(
        viewport={"width": VIEWPORT_WIDTH, "height": VIEWPORT_HEIGHT},
        color_scheme="dark",
        device_scale_factor=1,
        bypass_csp=bypass_csp,
    )
    context.set_default_timeout(15_000)
    return context.new_page()


def sign_in(
    page: Page, server: DemoServer, *, username: str = DEMO_USERNAME, password: str = DEMO_PASSWORD
) -> None:
    page.goto(server.url("/accounts/login/"))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(server.url("/"))
    page.wait_for_selector("html[data-console-ready='true']")


def take_screenshots(server: DemoServer, browser: Browser, out_dir: Path) -> list[Path]:
    """Save login, console, history, transcript and admin screenshots; return their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    shots: list[Path] = []

    def shot(page: Page, name: str, *, full_page: bool = True) -> None:
        path = out_dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=full_page)
        shots.append(path)

    page = new_page(browser)
    page.goto(server.url("/accounts/login/"))
    shot(page, "login", full_page=False)
    sign_in(page, server)
    page.click("[data-mode='webcam']")
    page.click("#launch")  # without a call client this logs why, which shows the log's error style
    shot(page, "console")
    page.goto(server.url("/calls/"))
    shot(page, "history")
    page.goto(server.url("/calls/compare/"))
    shot(page, "compare")
    page.goto(server.url(f"/calls/{server.call_id}/"))
    shot(page, "call_transcript")
    page.goto(server.url("/admin/calls/call/"))
    shot(page, "admin_calls")
    page.goto(server.url(f"/admin/calls/call/{server.call_id}/change/"))
    for summary in page.locator("#events summary").all()[:2]:
        summary.click()
    shot(page, "admin_call")
    page.context.close()

    page = new_page(browser)
    page.goto(server.url("/accounts/login/"))
    page.fill("#id_username", VISITOR_USERNAME)
    page.fill("#id_password", DEMO_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("[data-testid=forbidden-reason]")
    shot(page, "forbidden", full_page=False)
    page.context.close()
    return shots


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="Output folder.")
    args = parser.parse_args()
    with demo_server() as server, chromium() as browser:
        for path in take_screenshots(server, browser, args.out):
            print(path)


if __name__ == "__main__":
    main()
