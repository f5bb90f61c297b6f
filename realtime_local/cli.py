"""`python -m realtime_local`: run the engine until SIGINT/SIGTERM.

Flags override environment variables (`REALTIME_LOCAL_*`), which override the defaults; see
`build_parser`. At start the engine logs its base URL, API key and webhook secret (given secrets are
shown masked: whoever set them knows them; a generated one must be shown to be usable) and, once the
speech stack has loaded, the time it took to be ready. Exit status: 0 after a signal, 1 when the port
cannot be bound or the speech stack fails to load, 2 for an unsafe or invalid configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence

from aiohttp import web

from realtime_local.app import ENGINE, create_app
from realtime_local.config import (
    DEFAULT_API_KEY,
    DEFAULT_HOST,
    DEFAULT_PORT,
    DEFAULT_SIP_PORT,
    ConfigError,
    EngineConfig,
)
from realtime_local.sip.uas import SipBindError

logger = logging.getLogger("realtime_local")

_TRUE = {"1", "true", "yes", "on"}


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    """The CLI; each flag's default comes from its environment variable when set."""

    def env(name: str, default: str | None = None) -> str | None:
        return environ.get(f"REALTIME_LOCAL_{name}", default)

    def env_flag(name: str) -> bool:
        return (env(name) or "").strip().lower() in _TRUE

    parser = argparse.ArgumentParser(
        prog="python -m realtime_local",
        description="Self-hosted server speaking the OpenAI Realtime API surface (WebRTC, sideband, "
        "call control, client secrets, signed webhooks) with offline speech.",
    )
    parser.add_argument(
        "--host", default=env("HOST", DEFAULT_HOST), help="bind address (REALTIME_LOCAL_HOST)"
    )
    parser.add_argument(
        "--port",
        type=int,
        default=int(env("PORT", str(DEFAULT_PORT)) or DEFAULT_PORT),
        help="(REALTIME_LOCAL_PORT)",
    )
    parser.add_argument(
        "--api-key",
        default=env("API_KEY", DEFAULT_API_KEY),
        help="key clients send as 'Authorization: Bearer <key>' (REALTIME_LOCAL_API_KEY); the default "
        f"'{DEFAULT_API_KEY}' is refused on a non-loopback address",
    )
    parser.add_argument(
        "--webhook-url",
        default=env("WEBHOOK_URL"),
        help="where SIP-style call webhooks go (REALTIME_LOCAL_WEBHOOK_URL)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=env("WEBHOOK_SECRET"),
        help="whsec_… signing secret (REALTIME_LOCAL_WEBHOOK_SECRET); generated and printed when unset",
    )
    parser.add_argument(
        "--max-calls",
        type=int,
        default=int(env("MAX_CALLS", "4") or 4),
        help="concurrent calls (REALTIME_LOCAL_MAX_CALLS)",
    )
    parser.add_argument(
        "--idle-timeout",
        type=float,
        default=float(env("IDLE_TIMEOUT", "300") or 300),
        help="seconds without activity before a call is hung up (REALTIME_LOCAL_IDLE_TIMEOUT)",
    )
    parser.add_argument(
        "--accept-timeout",
        type=float,
        default=float(env("ACCEPT_TIMEOUT", "60") or 60),
        help="seconds an incoming call may wait for accept/reject (REALTIME_LOCAL_ACCEPT_TIMEOUT)",
    )
    parser.add_argument(
        "--no-speech",
        action="store_true",
        default=env_flag("NO_SPEECH"),
        help="do not load the speech models: text-only, for fast protocol tests (REALTIME_LOCAL_NO_SPEECH=1)",
    )
    parser.add_argument(
        "--ice-server",
        action="append",
        dest="ice_servers",
        default=None,
        metavar="URL",
        help="ICE server URL, repeatable (REALTIME_LOCAL_ICE_SERVERS, comma-separated); default none",
    )
    parser.add_argument(
        "--loopback-candidates",
        action="store_true",
        default=env_flag("LOOPBACK_CANDIDATES"),
        help="offer 127.0.0.1 ICE candidates, for loopback-only namespaces "
        "(REALTIME_LOCAL_LOOPBACK_CANDIDATES=1)",
    )
    parser.add_argument(
        "--sip-port",
        type=int,
        default=int(env("SIP_PORT") or "-1"),
        help=f"UDP port of the SIP front door (REALTIME_LOCAL_SIP_PORT; default {DEFAULT_SIP_PORT}); "
        "0 picks a "
        "free one. A port given explicitly that cannot be bound stops the engine (exit 1); when the "
        "default is taken, the engine logs an error and runs without SIP",
    )
    parser.add_argument(
        "--sip-host",
        default=env("SIP_HOST", DEFAULT_HOST),
        help="address the SIP UAS and its RTP bind and advertise (REALTIME_LOCAL_SIP_HOST)",
    )
    parser.add_argument(
        "--no-sip",
        action="store_true",
        default=env_flag("NO_SIP"),
        help="do not answer SIP (REALTIME_LOCAL_NO_SIP=1)",
    )
    parser.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), help="(REALTIME_LOCAL_LOG_LEVEL)")
    return parser


def parse_config(argv: Sequence[str] | None, environ: Mapping[str, str]) -> tuple[EngineConfig, str]:
    """(EngineConfig, log level) from the command line and the environment. Does not validate."""
    args = build_parser(environ).parse_args(argv)
    ice_servers: list[str] = args.ice_servers or [
        url.strip() for url in environ.get("REALTIME_LOCAL_ICE_SERVERS", "").split(",") if url.strip()
    ]
    config = EngineConfig(
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        webhook_url=args.webhook_url or None,
        webhook_secret=args.webhook_secret or "",
        max_calls=args.max_calls,
        idle_timeout=args.idle_timeout,
        accept_timeout=args.accept_timeout,
        speech=not args.no_speech,
        ice_servers=ice_servers,
        loopback_candidates=args.loopback_candidates,
        sip_port=None if args.no_sip else (DEFAULT_SIP_PORT if args.sip_port < 0 else args.sip_port),
        sip_required=args.sip_port >= 0,
        sip_host=args.sip_host,
    )
    return config, str(args.log_level).upper()


def main(argv: Sequence[str] | None = None, *, started: float | None = None) -> int:
    """Entry point of `python -m realtime_local`; returns the exit status. `started` is the
    `time.monotonic()` of process start, for the "ready in" figure."""
    config, log_level = parse_config(argv, os.environ)
    logging.basicConfig(
        level=getattr(logging, log_level, logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config.validate()
    except ConfigError as exc:
        print(f"realtime_local: error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(serve(config, started=started))


async def serve(config: EngineConfig, *, started: float | None = None) -> int:
    """Run the engine on `config.host:config.port` until a signal; hang up every call on the way out."""
    t0 = time.monotonic() if started is None else started
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5.0, access_log=None)
    try:
        await runner.setup()
    except SipBindError as exc:
        print(f"realtime_local: error: {exc.strerror}", file=sys.stderr)
        await runner.cleanup()
        return 1
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        print(f"realtime_local: error: cannot listen on {config.host}:{config.port}: {exc}", file=sys.stderr)
        await runner.cleanup()
        return 1
    if config.port == 0 and runner.addresses:
        config.port = int(runner.addresses[0][1])

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    engine = app[ENGINE]
    logger.info(
        "listening: base URL %s (health: %s)",
        config.base_url,
        config.base_url.removesuffix("/v1") + "/healthz",
    )
    logger.info("API key: %s", config.api_key if config.api_key == DEFAULT_API_KEY else _mask(config.api_key))
    logger.info(
        "webhook secret: %s%s",
        config.webhook_secret if config.webhook_secret_generated else _mask(config.webhook_secret),
        " (generated)" if config.webhook_secret_generated else "",
    )
    logger.info("webhooks: %s", config.webhook_url or "off (no --webhook-url)")
    sip = engine.sip
    logger.info("SIP: %s", f"udp {sip.host}:{sip.port}" if sip is not None else "off")
    if engine.speech_status == "loading":
        logger.info("loading the speech stack…")
    status = 0
    try:
        ready = asyncio.ensure_future(engine.ready.wait())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        if engine.ready.is_set():
            if engine.speech_status == "failed":
                print(
                    f"realtime_local: error: speech stack failed to load: {engine.speech_error}",
                    file=sys.stderr,
                )
                status = 1
            else:
                logger.info(
                    "ready in %.2f s (speech: %s, max calls %d)",
                    time.monotonic() - t0,
                    engine.speech_status,
                    config.max_calls,
                )
                await stopped
        stopped.cancel()
        logger.info("shutting down: hanging up %d call(s)", len(engine.calls))
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await runner.cleanup()
    logger.info("stopped")
    return status


def _mask(secret: str) -> str:
    return f"{secret[:6]}…{secret[-4:]}" if len(secret) > 12 else "***"
