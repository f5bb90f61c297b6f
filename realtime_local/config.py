"""EngineConfig: every setting of the engine, read once from flags and the environment.

The engine is its own process (or an in-process aiohttp app in tests), outside Django's settings, so
its configuration lives here: `cli.parse_config` fills it from `argv` and `os.environ`, tests build it
directly. Flags win over environment variables, which win over the defaults.
"""

from __future__ import annotations

import base64
import ipaddress
import secrets
from dataclasses import dataclass, field

DEFAULT_API_KEY = "sk-local"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
DEFAULT_SIP_PORT = 5060


class ConfigError(Exception):
    """The configuration is unsafe or inconsistent; the engine refuses to start."""


def generate_webhook_secret() -> str:
    """A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def is_loopback_host(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class EngineConfig:
    """Settings of one engine instance. Durations are in seconds."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str = DEFAULT_API_KEY
    webhook_url: str | None = None
    """Where `realtime.call.incoming` webhooks are POSTed; None: no webhooks are sent."""
    webhook_secret: str = ""
    """`whsec_<base64>` signing secret; empty: one is generated (see `webhook_secret_generated`)."""
    webhook_secret_generated: bool = False
    """True when no secret was given and one was generated (then it is printed at start)."""
    max_calls: int = 4
    """Concurrent calls (any state); one more is refused with 429."""
    idle_timeout: float = 300.0
    """An active call with no media or event activity for this long is hung up."""
    accept_timeout: float = 60.0
    """An incoming (SIP-style) call not accepted or rejected within this is ended."""
    speech: bool = True
    """Load the offline speech stack at start; False (`--no-speech`) runs text-only."""
    ice_servers: list[str] = field(default_factory=list)
    loopback_candidates: bool = False
    client_secret_default_ttl: int = 600
    client_secret_min_ttl: int = 10
    client_secret_max_ttl: int = 7200
    max_client_secrets: int = 10_000
    """Outstanding (unexpired) ephemeral keys; more are refused with 429."""
    max_body_bytes: int = 256 * 1024
    """Largest request body (SDP offers are ~5-20 KB; instructions and tools make up the rest)."""
    sideband_queue_size: int = 1000
    """Server events buffered per sideband socket before that observer is dropped as too slow."""
    sideband_send_timeout: float = 10.0
    webhook_timeout: float = 5.0
    webhook_max_attempts: int = 5
    webhook_backoff: float = 0.5
    """First retry delay; doubles each attempt (0.5, 1, 2, 4 s for 5 attempts)."""
    sweep_interval: float = 1.0
    """How often idle and unanswered calls are looked for."""
    sip_port: int | None = None
    """UDP port of the SIP front door (`realtime_local.sip`); None: no SIP (the CLI defaults to 5060,
    `--no-sip` turns it off; tests and embeddings opt in, 0 picks a free port)."""
    sip_required: bool = True
    """False when `sip_port` is only the CLI's default: then a taken port is logged, not fatal (so two
    engines started for tests on one machine do not fight over 5060)."""
    sip_host: str = DEFAULT_HOST
    """Address the SIP UAS binds and puts in its Contact and SDP (RTP binds it too)."""

    def __post_init__(self) -> None:
        if not self.webhook_secret:
            self.webhook_secret = generate_webhook_secret()
            self.webhook_secret_generated = True

    def validate(self) -> None:
        """Refuse unsafe or nonsensical settings (raises `ConfigError` with a message for humans)."""
        if not is_loopback_host(self.host) and self.api_key == DEFAULT_API_KEY:
            raise ConfigError(
                f"refusing to listen on {self.host} with the default API key '{DEFAULT_API_KEY}': "
                "anyone who can reach this address could use the engine. Set --api-key or "
                "REALTIME_LOCAL_API_KEY to a secret value, or bind to 127.0.0.1."
            )
        if not self.api_key:
            raise ConfigError("the API key must not be empty")
        if self.api_key.startswith("ek_"):
            raise ConfigError("the API key must not start with 'ek_' (that prefix marks ephemeral keys)")
        if not self.webhook_secret.startswith("whsec_"):
            raise ConfigError("the webhook secret must look like 'whsec_<base64>'")
        try:
            base64.b64decode(self.webhook_secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            raise ConfigError("the webhook secret's part after 'whsec_' must be base64") from None
        if self.max_calls < 1:
            raise ConfigError("--max-calls must be at least 1")
        if self.idle_timeout <= 0 or self.accept_timeout <= 0:
            raise ConfigError("--idle-timeout and --accept-timeout must be positive")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"invalid port {self.port}")
        if self.sip_port is not None and not 0 <= self.sip_port <= 65535:
            raise ConfigError(f"invalid SIP port {self.sip_port}")
        if self.sip_port is not None:
            try:
                sip_address = ipaddress.ip_address(self.sip_host)
            except ValueError:
                sip_address = None
            if not isinstance(sip_address, ipaddress.IPv4Address) or sip_address.is_unspecified:
                raise ConfigError(
                    f"--sip-host must be the IPv4 address callers reach (it goes into the SDP), "
                    f"not {self.sip_host!r}"
                )

    @property
    def base_url(self) -> str:
        """The API base URL clients use (`OpenAI(base_url=...)`)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/v1"
