"""Settings for voiceagent, read once from the environment (and an optional `.env` file).

Every variable is listed in `.env.example`. Nothing here needs an OpenAI key: without
`OPENAI_API_KEY` the product talks to the embedded local engine (`realtime_local`). Values that only
some features need (the webhook signing secret, the outbound number) are read through
`voiceagent.config.require_setting`, which fails with a message naming the variable when the feature is
used, never at import time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import django_stubs_ext
import environ
from django.core.exceptions import ImproperlyConfigured

from voiceagent.monitoring.access import parse_allowed
from voiceagent.monitoring.logs import configure_structlog, logging_config

# Generic Django classes (ModelAdmin[Call], QuerySet[Call]) must be subscriptable at run time.
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = BASE_DIR / "var"

env = environ.Env()
_dotenv = BASE_DIR / ".env"
if _dotenv.is_file():
    environ.Env.read_env(_dotenv, overwrite=False)

DEBUG: bool = env.bool("DEBUG", default=False)


def _kept_secret(name: str, make: Callable[[], str]) -> str:
    """A per-checkout secret kept under var/ (mode 600), made once, so restarts keep using it."""
    path = VAR_DIR / name
    if path.is_file():
        return path.read_text().strip()
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    secret = make()
    path.write_text(secret)
    path.chmod(0o600)
    return secret


def _development_secret_key() -> str:
    """Development sessions survive restarts because the key does."""
    from django.core.management.utils import get_random_secret_key

    return _kept_secret("secret_key", get_random_secret_key)


_secret_key: str | None = env.str("SECRET_KEY", default=None)
if not _secret_key:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is not set. It is required when DEBUG is false (production); "
            "set SECRET_KEY, or DEBUG=true for development."
        )
    _secret_key = _development_secret_key()
SECRET_KEY: str = _secret_key

ALLOWED_HOSTS: list[str] = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS: list[str] = env.list("CSRF_TRUSTED_ORIGINS", default=[])

PORT: int = env.int("PORT", default=8000)

# --- Realtime API -------------------------------------------------------------------------------
# With a key we talk to OpenAI; without one, to the local engine started beside the product.
OPENAI_API_KEY: str = env.str("OPENAI_API_KEY", default="")
OPENAI_SIGNING_SECRET: str = env.str("OPENAI_SIGNING_SECRET", default="")
# Secrets that were OPENAI_SIGNING_SECRET before a rotation, still accepted until the switch is over
# (comma-separated whsec_ values; docs/operations.md "Rotate the webhook secret").
OPENAI_SIGNING_SECRET_PREVIOUS: list[str] = env.list("OPENAI_SIGNING_SECRET_PREVIOUS", default=[])
FROM_NUMBER: str = env.str("FROM_NUMBER", default="")

REALTIME_LOCAL_HOST: str = env.str("REALTIME_LOCAL_HOST", default="127.0.0.1")
REALTIME_LOCAL_PORT: int = env.int("REALTIME_LOCAL_PORT", default=8765)
REALTIME_LOCAL_API_KEY: str = env.str("REALTIME_LOCAL_API_KEY", default="sk-local")

USES_LOCAL_ENGINE: bool = not OPENAI_API_KEY
REALTIME_BASE_URL: str = env.str(
    "REALTIME_BASE_URL",
    default=(
        f"http://{REALTIME_LOCAL_HOST}:{REALTIME_LOCAL_PORT}/v1"
        if USES_LOCAL_ENGINE
        else "https://api.openai.com/v1"
    ),
).rstrip("/")
REALTIME_API_KEY: str = OPENAI_API_KEY or REALTIME_LOCAL_API_KEY


def _development_signing_secret() -> str:
    """A per-checkout `whsec_` secret under var/: the local engine signs its webhooks with it, so that
    phone calls work without configuration. Never used with a real key (OpenAI signs with its own)."""
    import base64
    import secrets

    return _kept_secret(
        "webhook_secret", lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode("ascii")
    )


def _optional_positive_int(name: str) -> int | None:
    """A positive integer variable; unset or empty (as .env.example leaves it) means None."""
    raw = env.str(name, default="").strip()
    if not raw:
        return None
    if not raw.isdigit() or int(raw) < 1:
        raise ImproperlyConfigured(f"{name}={raw!r} is not a positive whole number.")
    return int(raw)


def _number(name: str, default: float, kind: type[int] | type[float] = int) -> Any:
    """A non-negative number variable; unset or empty (as .env.example leaves it) means `default`."""
    raw = env.str(name, default="").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name}={raw!r} is not a {'whole ' if kind is int else ''}number."
        ) from None
    if value < 0:
        raise ImproperlyConfigured(f"{name}={raw!r} must not be negative.")
    return value


# Seconds SIGTERM lets `serve` finish the requests in flight before it stops (docs/scaling.md).
SERVE_SHUTDOWN_GRACE: float = _number("SERVE_SHUTDOWN_GRACE", 20.0, float)

# --- Phone calls (docs/telephony.md) ------------------------------------------------------------
if not OPENAI_SIGNING_SECRET and USES_LOCAL_ENGINE:
    OPENAI_SIGNING_SECRET = _development_signing_secret()
# At most this many phone calls at once (connecting or active); more are rejected with 486 Busy Here.
TELEPHONY_MAX_CONCURRENT_CALLS: int | None = _optional_positive_int("TELEPHONY_MAX_CONCURRENT_CALLS")
# When the line answers, e.g. "Mon-Fri 09:00-17:00 Europe/Paris" (telephony/hours.py); empty: always.
# Outside these hours calls are rejected with 480 Temporarily Unavailable.
TELEPHONY_BUSINESS_HOURS: str = env.str("TELEPHONY_BUSINESS_HOURS", default="")
# Largest webhook body accepted, in bytes (an incoming-call event is a few KiB).
TELEPHONY_WEBHOOK_MAX_BYTES: int = _optional_positive_int("TELEPHONY_WEBHOOK_MAX_BYTES") or 256 * 1024
# Seconds allowed for one upstream REST call (SDP exchange, call control).
REALTIME_HTTP_TIMEOUT: float = env.float("REALTIME_HTTP_TIMEOUT", default=10.0)
# ICE servers the console's peer connection uses (comma-separated stun:/turn: URLs). None by default:
# host candidates reach OpenAI and the local engine alike, and a public STUN server would only add delay.
CONSOLE_ICE_SERVERS: list[dict[str, str]] = [
    {"urls": url} for url in env.list("CONSOLE_ICE_SERVERS", default=[])
]

# --- Django -------------------------------------------------------------------------------------
INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "channels",
    "calls",
    "telephony",
]

MIDDLEWARE = [
    # First: every log line of the request, even a security refusal's, carries its request id.
    "voiceagent.monitoring.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # WhiteNoise, async-capable: the stock one sends every async request through a thread.
    "voiceagent.static_files.AsyncWhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF: an oversized body is refused before anything parses it (voiceagent/security.py).
    "voiceagent.security.RequestBodyCapMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "voiceagent.security.SecurityHeadersMiddleware",
    # A database outage raised by a view becomes 503 + Retry-After, not a 500 (docs/scaling.md).
    "voiceagent.availability.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "voiceagent.urls"
ASGI_APPLICATION = "voiceagent.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES: dict[str, Any] = {
    "default": env.db_url("DATABASE_URL", default=f"sqlite:///{VAR_DIR / 'db.sqlite3'}"),
}
# SQLite (the embedded default): the observer and the web server write from several threads, so a
# writer waits up to `timeout` seconds for the lock instead of failing. And every transaction takes the
# write lock when it begins (BEGIN IMMEDIATE): one that read first and writes later (a get_or_create,
# as a recording's first chunk does) cannot wait for a writer that holds the lock at that moment
# (SQLite answers "database is locked" at once rather than risk a deadlock: a 503 to the user).
SQLITE_OPTIONS: dict[str, Any] = {"timeout": 20, "transaction_mode": "IMMEDIATE"}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    for option, value in SQLITE_OPTIONS.items():
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault(option, value)
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # PostgreSQL: a psycopg connection pool per process (docs/scaling.md). Persistent connections
    # (CONN_MAX_AGE) are per thread, and under ASGI every `sync_to_async` call may run on another
    # thread, so they pile up or leak; Django's docs say to disable them under ASGI and use the
    # backend's pool. Connections are checked when taken from the pool, so a PostgreSQL restart costs
    # the requests in flight during the outage, not every pooled connection afterwards.
    DB_POOL: bool = env.str("DB_POOL", default="").strip().lower() not in ("false", "0", "no", "off")
    # Without a pool, CONN_HEALTH_CHECKS re-checks a persistent connection before reuse. With one,
    # the pool checks each connection it hands out, with voiceagent/postgresql's check: a round trip
    # only when the socket shows that the server closed it or sent something (Django's backend would
    # pass psycopg_pool's check_connection, a round trip every time).
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DB_POOL:
        DATABASES["default"]["ENGINE"] = "voiceagent.postgresql"
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # required by the pool: it manages the lifetime
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": _number("DB_POOL_MIN", 2),
            "max_size": _number("DB_POOL_MAX", 10),
            # Seconds a request waits for a connection before failing with OperationalError (503 to
            # the user, voiceagent/availability.py). Long enough for a burst of set-ups to queue for
            # the pool (bench/load.py), short enough that users hear of an outage within seconds.
            "timeout": _number("DB_POOL_TIMEOUT", 10.0, float),
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = _number("CONN_MAX_AGE", 0)
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault(
        "connect_timeout", _number("DB_CONNECT_TIMEOUT", 5)
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: the channel layer and the cache shared by every process (docs/scaling.md) ---------------
REDIS_URL: str = env.str("REDIS_URL", default="")
# Namespace of every key this deployment writes in Redis (channel layer and cache), so that several
# deployments (or test runs) can share one Redis server and database.
REDIS_KEY_PREFIX: str = env.str("REDIS_KEY_PREFIX", default="").strip() or "voiceagent"
# Messages a channel may hold before a send fails with ChannelFull. The observer's channel receives one
# `observe.start` per call set-up: channels_redis's default (100) would refuse a burst of set-ups.
CHANNEL_LAYER_CAPACITY: int = _number("CHANNEL_LAYER_CAPACITY", 2000)
# Seconds an undelivered message lives in Redis (channels_redis's default is 60).
CHANNEL_LAYER_EXPIRY: int = _number("CHANNEL_LAYER_EXPIRY", 60)
# Seconds a Redis read may take before the connection counts as dead (must exceed channels_redis's
# 5 s blocking receive; a Redis that stopped answering is noticed after this long).
REDIS_SOCKET_TIMEOUT: float = _number("REDIS_SOCKET_TIMEOUT", 15.0, float)
CHANNEL_LAYERS: dict[str, Any] = (
    {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            "CONFIG": {
                # A dict host: redis-py 8 reads with a 5 s socket timeout by default, exactly the
                # 5 s that channels_redis blocks in BZPOPMIN on an idle channel, so an idle worker
                # died of "Timeout reading from …". The read timeout must exceed that block.
                "hosts": [
                    {
                        "address": REDIS_URL,
                        "socket_timeout": REDIS_SOCKET_TIMEOUT,
                        "socket_connect_timeout": 5,
                        "socket_keepalive": True,
                        "health_check_interval": 30,
                    }
                ],
                "prefix": f"{REDIS_KEY_PREFIX}:asgi",
                "capacity": CHANNEL_LAYER_CAPACITY,
                "expiry": CHANNEL_LAYER_EXPIRY,
            },
        }
    }
    if REDIS_URL
    else {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
)
# Observer leases (calls.observer.lease, docs/scaling.md): a worker renews its leases every
# HEARTBEAT seconds; a lease not renewed for TTL seconds is taken over by the next SCAN of any worker.
# A dead worker's calls are observed again within TTL + SCAN (+ a sideband connect): 3.5 s here.
OBSERVER_LEASE_TTL_S: float = env.float("OBSERVER_LEASE_TTL_S", default=3.0)
OBSERVER_LEASE_HEARTBEAT_S: float = env.float("OBSERVER_LEASE_HEARTBEAT_S", default=1.0)
OBSERVER_LEASE_SCAN_S: float = env.float("OBSERVER_LEASE_SCAN_S", default=0.5)
# `manage.py observe` on PostgreSQL: the server ends a worker session idle inside a transaction this
# long (a frozen worker must not keep its lease rows locked: takeover would wait for it).
OBSERVER_DB_IDLE_TX_TIMEOUT_S: float = env.float("OBSERVER_DB_IDLE_TX_TIMEOUT_S", default=2.0)
# Threads (each with its own pooled connection) that write the observers' batches on PostgreSQL; keep
# it below DB_POOL_MAX. SQLite has one writer at a time: there all writes share one thread.
OBSERVER_DB_WRITERS: int = env.int("OBSERVER_DB_WRITERS", default=6)
# Django's cache: shared through Redis when REDIS_URL is set (rate limits must count across web
# processes), process-local memory otherwise (development, one process).
CACHES: dict[str, Any] = {
    "default": (
        {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": f"{REDIS_KEY_PREFIX}:cache",
            "TIMEOUT": 300,
        }
        if REDIS_URL
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "voiceagent"}
    )
}
# Sessions: in the database. Without Redis (one process: `manage.py serve`) they are read through a
# memory cache of the process's own (voiceagent/sessions.py), which saves every signed-in request a
# query. With Redis (several processes) they stay plain "db", so a logout is seen by every process.
if not REDIS_URL:
    SESSION_ENGINE = "voiceagent.sessions"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "console"
LOGOUT_REDIRECT_URL = "login"

# Sessions and CSRF: HttpOnly and SameSite=Lax always; Secure whenever not in development.
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_COOKIES: bool = env.bool("SECURE_COOKIES", default=not DEBUG)
SESSION_COOKIE_SECURE = SECURE_COOKIES
CSRF_COOKIE_SECURE = SECURE_COOKIES
# Behind a TLS reverse proxy (deploy/nginx, deploy/Caddyfile) daphne sees plain http from the proxy:
# with TRUST_PROXY_HEADERS the proxy's X-Forwarded-Proto says whether the browser used https, and its
# X-Forwarded-Host which host it asked for. Off by default: without a proxy that overwrites them, any
# client could forge these headers (and pass for https, or for another host).
TRUST_PROXY_HEADERS: bool = env.bool("TRUST_PROXY_HEADERS", default=False)
if TRUST_PROXY_HEADERS:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    USE_X_FORWARDED_HOST = True
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"

# --- Security (docs/security.md) -----------------------------------------------------------------
# HTTPS=true: the site is served over TLS (by daphne or the proxy in deploy/, with TRUST_PROXY_HEADERS).
# Then plain-http requests are redirected to https and HSTS is sent; off by default, for development
# and tests on plain http. /healthz and /readyz answer on http too (probes reach the process directly).
HTTPS: bool = env.bool("HTTPS", default=False)
SECURE_SSL_REDIRECT: bool = env.bool("SECURE_SSL_REDIRECT", default=HTTPS)
SECURE_REDIRECT_EXEMPT: list[str] = [r"^healthz$", r"^readyz$"]
SECURE_HSTS_SECONDS: int = env.int("SECURE_HSTS_SECONDS", default=31_536_000 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS: bool = env.bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", default=True)
# Preloading is a commitment made outside this app (submitting the domain to hstspreload.org), so it
# is the operator's choice; Django's reminder about it (security.W021) is silenced unless it is on.
SECURE_HSTS_PRELOAD: bool = env.bool("SECURE_HSTS_PRELOAD", default=False)
SILENCED_SYSTEM_CHECKS: list[str] = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Per-user limits (calls/services/ratelimit.py): "N/s|m|h|d" (e.g. "30/m", "100/5m") or "off".
# Empty (as .env.example leaves them) means the default; only "off" disables a limit.
RTC_RATE_LIMIT: str = env.str("RTC_RATE_LIMIT", default="").strip() or "30/m"
CLIENT_SECRET_RATE_LIMIT: str = env.str("CLIENT_SECRET_RATE_LIMIT", default="").strip() or "10/m"
# Largest request body of views without a cap of their own (admin forms, login), in bytes. The API
# views declare smaller ones (voiceagent.security.body_cap): SDP offer 64 KiB, JSON 4 KiB, hang-ups 1 KiB,
# webhook TELEPHONY_WEBHOOK_MAX_BYTES.
DATA_UPLOAD_MAX_MEMORY_SIZE: int = _optional_positive_int("DATA_UPLOAD_MAX_MEMORY_SIZE") or 1024 * 1024

LANGUAGE_CODE = "en-us"
TIME_ZONE = env.str("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = BASE_DIR / "staticfiles"
STORAGES: dict[str, Any] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedStaticFilesStorage"
    },
}

# --- Call recordings (docs/web-calls.md, "Recording") ---------------------------------------------
# Uploaded files (call recordings) go through Django's storage API: the "recordings" entry of STORAGES
# when one is configured (e.g. a private django-storages S3 bucket), else "default", i.e. local files
# under MEDIA_ROOT. Recordings are never served from MEDIA_URL: only their view streams them.
MEDIA_ROOT: str = env.str("MEDIA_ROOT", default="").strip() or str(VAR_DIR / "media")
# Largest recording of one call, in bytes (Opus at ~32-64 kbit/s: 50 MB is well over an hour).
RECORDING_MAX_BYTES: int = _optional_positive_int("RECORDING_MAX_BYTES") or 50 * 1024 * 1024
# Largest chunk one upload request may carry (the console sends ~2 s, a few KiB to tens of KiB).
RECORDING_MAX_CHUNK_BYTES: int = _optional_positive_int("RECORDING_MAX_CHUNK_BYTES") or 1024 * 1024

LOG_LEVEL: str = env.str("LOG_LEVEL", default="").strip().upper() or "INFO"
# --- Logs and metrics (docs/observability.md) ------------------------------------------------------
# json: one JSON object per line (timestamp, level, logger, event, request_id, call_id); console: text.
LOG_FORMAT: str = env.str("LOG_FORMAT", default="").strip().lower() or ("console" if DEBUG else "json")
LOGGING: dict[str, Any] = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)
# websockets logs each handshake header at DEBUG, our sideband's `Authorization: Bearer <key>` included:
# those records are rewritten without credentials before any handler sees them (voiceagent/security.py).
LOGGING.setdefault("filters", {})["redact_credentials"] = {
    "()": "voiceagent.security.RedactCredentialsFilter"
}
for _logger_name in ("websockets.client", "websockets.server"):
    LOGGING.setdefault("loggers", {})[_logger_name] = {"filters": ["redact_credentials"]}
configure_structlog()
# Python's warnings (a library's UserWarning, a deprecation) go through the same handler as log
# records, so every line a process writes is in LOG_FORMAT (one JSON object per line in production).
logging.captureWarnings(True)
# /metrics answers 404 unless one of these is set; when both are, both must pass.
METRICS_TOKEN: str = env.str("METRICS_TOKEN", default="")
METRICS_ALLOWED_IPS: list[str] = [
    entry.strip() for entry in env.list("METRICS_ALLOWED_IPS", default=[]) if entry.strip()
]
try:
    parse_allowed(tuple(METRICS_ALLOWED_IPS))
except ValueError as _exc:
    raise ImproperlyConfigured(
        f"METRICS_ALLOWED_IPS: {_exc} (expected addresses or CIDR networks)."
    ) from None
# A call-observer worker (`manage.py observe`) serves its own series on METRICS_WORKER_HOST:this port
# when set (not needed when it shares PROMETHEUS_MULTIPROC_DIR with the web processes). No auth there.
METRICS_WORKER_PORT: int | None = _optional_positive_int("METRICS_WORKER_PORT")
METRICS_WORKER_HOST: str = env.str("METRICS_WORKER_HOST", default="").strip() or "127.0.0.1"
