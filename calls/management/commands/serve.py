"""`manage.py serve`: the whole product in one command.

Starts, in order: the local realtime engine as a child process (when no OpenAI key is set), then the
ASGI application under daphne in this process. Ctrl-C or SIGTERM stops the server and the engine.
Background services that must share this process (the call observer) plug in at
`Command.start_in_process_services`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from types import FrameType
from typing import Any

from daphne.server import Server
from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

logger = logging.getLogger("voiceagent.serve")


class EngineError(CommandError):
    """The local engine exited or did not become ready in time."""


class LocalEngineProcess:
    """The `realtime_local` engine run as a child process, with a bounded wait for its /healthz."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        api_key: str,
        webhook_url: str | None = None,
        webhook_secret: str = "",
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.webhook_url = webhook_url
        self.webhook_secret = webhook_secret
        self.process: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> bool:
        """Whether `python -m realtime_local` can run at all (the package has a __main__)."""
        try:
            return importlib.util.find_spec("realtime_local.__main__") is not None
        except ImportError:
            return False

    @property
    def health_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/healthz"

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "realtime_local",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--api-key",
            self.api_key,
        ]
        env = dict(os.environ)
        if self.webhook_url:
            # Phone calls: the engine signs its incoming-call webhooks with our OPENAI_SIGNING_SECRET
            # (passed in the environment, not on the command line where `ps` would show it).
            command += ["--webhook-url", self.webhook_url]
            env["REALTIME_LOCAL_WEBHOOK_SECRET"] = self.webhook_secret
        self.process = subprocess.Popen(command, env=env)

    def wait_ready(self, *, timeout_s: float, progress: Callable[[str], None]) -> float:
        """Poll /healthz until it answers 200; return the seconds it took, or raise EngineError."""
        assert self.process is not None, "start() first"
        started = time.monotonic()
        next_report = started + 2.0
        last_error = "no answer yet"
        while True:
            code = self.process.poll()
            if code is not None:
                raise EngineError(
                    f"The local engine exited with status {code} before it was ready "
                    f"(see its output above). Run `python -m realtime_local --port {self.port}` to debug, "
                    "or set OPENAI_API_KEY to use OpenAI instead."
                )
            try:
                with urllib.request.urlopen(self.health_url, timeout=1.0) as response:
                    if response.status == 200:
                        return time.monotonic() - started
                    last_error = f"HTTP {response.status}"
            except (urllib.error.URLError, OSError) as exc:
                last_error = str(getattr(exc, "reason", exc))
            now = time.monotonic()
            if now - started > timeout_s:
                raise EngineError(
                    f"The local engine did not become ready within {timeout_s:g} s "
                    f"({self.health_url}: {last_error})."
                )
            if now >= next_report:
                progress(f"  waiting for the local engine at {self.health_url} … {now - started:.0f} s")
                next_report = now + 2.0
            time.sleep(0.25)

    def stop(self, *, grace_s: float = 10.0) -> None:
        """Terminate the engine, then kill it if it does not exit within `grace_s`. Idempotent."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class ReportingServer(Server):  # type: ignore[misc]
    """daphne's Server that says when it really listens (daphne's ready_callable runs before the bind)
    and remembers a failed bind, which daphne only logs before stopping."""

    def __init__(self, *args: Any, on_listening: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_listening = on_listening
        self.listen_failure: str | None = None
        self.ports: list[Any] = []
        self.stopping = False

    def listen_success(self, port: Any) -> None:
        super().listen_success(port)
        self.ports.append(port)
        self.on_listening()

    def requests_in_flight(self) -> int:
        """HTTP requests whose response is not finished (WebSockets are not counted: they last)."""
        from daphne.http_protocol import WebRequest

        return sum(
            1
            for protocol, details in list(self.connections.items())
            if isinstance(protocol, WebRequest)
            and "disconnected" not in details
            and details.get("application_instance") is not None
            and not details["application_instance"].done()
        )

    def graceful_stop(self, grace_s: float) -> None:
        """SIGTERM: stop accepting connections, let the requests in flight finish (at most `grace_s`),
        then stop the reactor (daphne then cancels what is left: WebSockets, the embedded observer
        flushes). A second signal stops at once. daphne's own handler cancels in-flight requests at
        once, which would fail a call set-up half-way (a call upstream without its answer)."""
        from twisted.internet import reactor as installed

        reactor: Any = installed
        if self.stopping:
            logger.info("second stop signal: stopping now")
            reactor.stop()
            return
        self.stopping = True
        for port in self.ports:
            port.stopListening()
        logger.info(
            "stopping: no new connections; %d request(s) in flight get up to %g s",
            self.requests_in_flight(),
            grace_s,
        )
        deadline = time.monotonic() + grace_s

        def check() -> None:
            busy = self.requests_in_flight()
            if busy and time.monotonic() < deadline:
                reactor.callLater(0.05, check)
                return
            if busy:
                logger.warning("stopping with %d request(s) still in flight after %g s", busy, grace_s)
            if reactor.running:
                reactor.stop()

        check()

    def listen_error(self, failure: Any) -> None:
        self.listen_failure = str(failure.getErrorMessage())
        super().listen_error(failure)


def _webhook_url(host: str, port: int) -> str:
    """Our webhook as the engine (on this machine) reaches it."""
    loopback = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    display = f"[{loopback}]" if ":" in loopback else loopback
    return f"http://{display}:{port}/telephony/webhook"


def _close_shared_http_client() -> Any:
    """At reactor shutdown: close the loop's pooled clients to the Realtime API (its kept-alive
    connections; `calls.services.realtime_client.loop_clients`). A Deferred for Twisted."""
    import asyncio

    from twisted.internet.defer import Deferred

    from calls.services.realtime_client import aclose_shared_http_client

    return Deferred.fromFuture(asyncio.ensure_future(aclose_shared_http_client()))


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    """SIGTERM before the server runs: unwind like Ctrl-C so the engine child is stopped too."""
    raise KeyboardInterrupt


class Command(BaseCommand):
    help = "Serve the product: the local engine (unless an OpenAI key is set) and the ASGI app under daphne."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1", help="Interface to listen on (default 127.0.0.1).")
        parser.add_argument("--port", type=int, default=settings.PORT, help="Port (default $PORT or 8000).")
        parser.add_argument(
            "--no-engine", action="store_true", help="Do not start the local engine (it runs elsewhere)."
        )
        parser.add_argument(
            "--engine-timeout",
            type=float,
            default=180.0,
            help="Seconds to wait for the local engine to load its models (default 180).",
        )
        parser.add_argument(
            "--no-observer",
            action="store_true",
            help="Web only: do not embed the call observer (separate worker processes run it on the "
            "Redis channel layer; see the Procfile).",
        )
        parser.add_argument(
            "--shutdown-grace",
            type=float,
            default=settings.SERVE_SHUTDOWN_GRACE,
            help="Seconds SIGTERM waits for requests in flight (default $SERVE_SHUTDOWN_GRACE or 20).",
        )
        parser.add_argument(
            "--no-collectstatic",
            action="store_true",
            help="Do not collect static files at start (collected once by the deployment, so that "
            "several web processes do not write the same files at once).",
        )

    def handle(
        self,
        *args: Any,
        host: str,
        port: int,
        no_engine: bool,
        engine_timeout: float,
        no_observer: bool = False,
        no_collectstatic: bool = False,
        shutdown_grace: float = 20.0,
        **options: Any,
    ) -> None:
        signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
        engine: LocalEngineProcess | None = None
        try:
            if settings.USES_LOCAL_ENGINE and not no_engine:
                engine = self.start_local_engine(timeout_s=engine_timeout, web_host=host, web_port=port)
            elif not settings.USES_LOCAL_ENGINE:
                self.stdout.write(f"Realtime API: {settings.REALTIME_BASE_URL} (OPENAI_API_KEY is set)")
            if not no_collectstatic:
                self.prepare_static_files()
            if not no_observer:
                self.start_in_process_services()
            self.serve(host=host, port=port, shutdown_grace=shutdown_grace)
        except KeyboardInterrupt:
            self.stdout.write("Stopping.")
        finally:
            if engine is not None:
                self.stdout.write("Stopping the local engine.")
                engine.stop()

    def start_local_engine(
        self, *, timeout_s: float, web_host: str = "127.0.0.1", web_port: int = 8000
    ) -> LocalEngineProcess | None:
        """Start the engine and wait until it is ready; None (with a warning) if it cannot run yet.

        Its signed `realtime.call.incoming` webhooks go to our `/telephony/webhook`, signed with
        `OPENAI_SIGNING_SECRET` (a per-checkout development secret by default), so phone calls to
        the engine work out of the box."""
        if not LocalEngineProcess.available():
            self.stderr.write(
                self.style.WARNING(
                    "Warning: the local realtime engine (realtime_local) cannot run in this checkout yet; "
                    "serving without it. Calls need OPENAI_API_KEY or a running engine."
                )
            )
            return None
        engine = LocalEngineProcess(
            host=settings.REALTIME_LOCAL_HOST,
            port=settings.REALTIME_LOCAL_PORT,
            api_key=settings.REALTIME_LOCAL_API_KEY,
            webhook_url=_webhook_url(web_host, web_port) if settings.OPENAI_SIGNING_SECRET else None,
            webhook_secret=settings.OPENAI_SIGNING_SECRET,
        )
        base = engine.health_url.removesuffix("/healthz")
        self.stdout.write(f"Starting the local realtime engine on {base} …")
        engine.start()
        try:
            took = engine.wait_ready(timeout_s=timeout_s, progress=self.stdout.write)
        except BaseException:
            engine.stop()
            raise
        self.stdout.write(self.style.SUCCESS(f"Local engine ready in {took:.1f} s."))
        return engine

    def prepare_static_files(self) -> None:
        """Outside DEBUG, whitenoise serves the collected files; in DEBUG it serves them from the finders."""
        if not settings.DEBUG:
            call_command("collectstatic", interactive=False, verbosity=0)

    def start_in_process_services(self) -> None:
        """Services that run inside the web process: the call observer's Channels worker, on daphne's
        event loop (so that it shares the in-memory channel layer with the web code)."""
        from calls.observer.dispatch import OBSERVER_CHANNEL
        from calls.observer.embedded import install_embedded_worker

        install_embedded_worker()
        self.stdout.write(f"Call observer: embedded worker for channel {OBSERVER_CHANNEL!r}.")

    def serve(self, *, host: str, port: int, shutdown_grace: float = 20.0) -> None:
        """Run daphne until Ctrl-C/SIGTERM, which stop gracefully (`ReportingServer.graceful_stop`)."""
        from daphne.endpoints import build_endpoint_description_strings

        # Imported here: loading the ASGI app builds the middleware, after collectstatic has run.
        from voiceagent.asgi import application

        display_host = f"[{host}]" if ":" in host else host
        base_url = f"http://{display_host}:{port}"

        def listening() -> None:
            self.stdout.write(
                self.style.SUCCESS(f"voiceagent is serving on {base_url}/  (admin: {base_url}/admin/)")
            )
            self.stdout.write("Press Ctrl-C to stop.")

        server = ReportingServer(
            application=application,
            endpoints=build_endpoint_description_strings(host=host, port=port),
            signal_handlers=False,
            action_logger=self.log_action,
            verbosity=0,
            on_listening=listening,
        )
        from twisted.internet import reactor as installed

        reactor: Any = installed

        def on_signal(signum: int, frame: FrameType | None) -> None:
            reactor.callFromThread(server.graceful_stop, shutdown_grace)

        def install_handlers() -> None:
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)

        reactor.callWhenRunning(install_handlers)
        reactor.addSystemEventTrigger("before", "shutdown", _close_shared_http_client)
        server.run()
        if server.listen_failure is not None:
            raise CommandError(f"Cannot listen on {host}:{port}: {server.listen_failure}")

    def log_action(self, protocol: str, action: str, details: dict[str, Any]) -> None:
        """One access-log line per finished request or WebSocket."""
        if protocol == "http" and action == "complete":
            logger.info("%s %s %s", details.get("method"), details.get("path"), details.get("status"))
        elif protocol == "websocket" and action in ("connected", "disconnected", "rejected"):
            logger.info("WS %s %s", action, details.get("path"))
