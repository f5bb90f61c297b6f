"""What `manage.py check_deployment` checks: settings, database, Redis, the Realtime API, the webhook
secret, the phone number. Each check returns `Finding`s that say what is wrong and how to fix it.

Run on the production host with the production environment (`/etc/voiceagent/env`) before starting
the services and after every upgrade (docs/operations.md). Nothing here prints a secret: URLs are shown
without their password, keys and signing secrets not at all.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import re
import secrets
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import httpx
from django.conf import settings
from django.core import checks as django_checks
from django.db import DatabaseError, connections
from django.db.migrations.executor import MigrationExecutor

Level = Literal["ok", "warning", "error"]

ENV_FILE: Final = "/etc/voiceagent/env"
E164_RE: Final = re.compile(r"\+[1-9][0-9]{6,14}")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})
#: Django's own deployment checks that a check below replaces with a clearer message.
REPLACED_DJANGO_CHECKS: Final = frozenset(
    {"security.W009", "security.W012", "security.W016", "security.W018", "security.W020"}
)
DJANGO_CHECKS_DOCS: Final = "see https://docs.djangoproject.com/en/5.2/ref/checks/#security"
SECRET_KEY_HELP: Final = (
    "generate one with `python -c 'from django.core.management.utils import get_random_secret_key; "
    f"print(get_random_secret_key())'` and set SECRET_KEY in {ENV_FILE}"
)


@dataclass(frozen=True)
class Finding:
    """One result: `topic` (settings, database, redis, realtime, webhook, phone), what was found and,
    for a problem, how to fix it."""

    level: Level
    topic: str
    message: str
    fix: str = ""


def _ok(topic: str, message: str) -> Finding:
    return Finding("ok", topic, message)


def _error(topic: str, message: str, fix: str) -> Finding:
    return Finding("error", topic, message, fix)


def _warning(topic: str, message: str, fix: str) -> Finding:
    return Finding("warning", topic, message, fix)


def redact_url(url: str) -> str:
    """`url` without its password (user names and hosts help; passwords never appear in a report)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return "<unparseable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urllib.parse.urlunsplit(parts._replace(netloc=user + netloc))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- settings ---------------------------------------------------------------------------------------


def check_settings() -> list[Finding]:
    findings: list[Finding] = []
    if settings.DEBUG:
        findings.append(
            _error(
                "settings",
                "DEBUG is on: error pages show code, settings and queries to anyone who causes an error.",
                f"set DEBUG=false in {ENV_FILE} (DEBUG is for development only)",
            )
        )
    else:
        findings.append(_ok("settings", "DEBUG is off."))

    key = settings.SECRET_KEY
    distinct = len(set(key))
    if len(key) < 50 or distinct < 5 or key.startswith("django-insecure-"):
        findings.append(
            _error(
                "settings",
                f"SECRET_KEY is weak ({len(key)} characters, {distinct} distinct; at least 50 and 5 "
                "are needed): sessions, password-reset links and CSRF tokens can be forged.",
                SECRET_KEY_HELP,
            )
        )
    else:
        findings.append(_ok("settings", f"SECRET_KEY is strong ({len(key)} characters)."))

    hosts = list(settings.ALLOWED_HOSTS)
    if not hosts:
        findings.append(
            _error(
                "settings",
                "ALLOWED_HOSTS is empty: every request is refused with 400.",
                f"set ALLOWED_HOSTS=<your public host name> in {ENV_FILE}",
            )
        )
    elif "*" in hosts:
        findings.append(
            _error(
                "settings",
                "ALLOWED_HOSTS contains '*': any Host header is accepted (host-header poisoning of "
                "absolute links).",
                f"list the public host name(s) in ALLOWED_HOSTS in {ENV_FILE}",
            )
        )
    elif set(hosts) <= LOOPBACK_HOSTS:
        findings.append(
            _warning(
                "settings",
                f"ALLOWED_HOSTS lists only loopback names ({', '.join(hosts)}): requests for the "
                "public name, which the proxy passes on as Host, are refused with 400.",
                f"add the public host name to ALLOWED_HOSTS in {ENV_FILE}",
            )
        )
    else:
        findings.append(_ok("settings", f"ALLOWED_HOSTS: {', '.join(hosts)}."))

    for origin in settings.CSRF_TRUSTED_ORIGINS:
        if not origin.startswith("https://"):
            findings.append(
                _warning(
                    "settings",
                    f"CSRF_TRUSTED_ORIGINS entry {origin!r} is not an https:// origin: forms posted "
                    "from it travel in clear text.",
                    "list origins as https://host (the browser's address, with its port if not 443)",
                )
            )
    findings += _https_findings()
    findings += _django_deployment_checks()
    return findings


def _https_findings() -> list[Finding]:
    findings: list[Finding] = []
    if not (settings.SESSION_COOKIE_SECURE and settings.CSRF_COOKIE_SECURE):
        findings.append(
            _error(
                "settings",
                "Session and CSRF cookies are not Secure: a browser sends them over plain http too.",
                f"remove SECURE_COOKIES=false from {ENV_FILE} (cookies are Secure whenever DEBUG is off)",
            )
        )
    trusted = getattr(settings, "TRUST_PROXY_HEADERS", False)
    if settings.SECURE_SSL_REDIRECT and not trusted:
        findings.append(
            _error(
                "settings",
                "SECURE_SSL_REDIRECT is on (HTTPS=true) but TRUST_PROXY_HEADERS is off: behind the TLS "
                "proxy every request looks like plain http to Django and is redirected to https again, "
                "in a loop.",
                f"set TRUST_PROXY_HEADERS=true in {ENV_FILE} (the proxy in deploy/ sets X-Forwarded-Proto)",
            )
        )
    elif not trusted:
        findings.append(
            _warning(
                "settings",
                "TRUST_PROXY_HEADERS is off: behind the TLS proxy Django sees plain http, so "
                "request.is_secure() is false and Django's CSRF check refuses https form posts "
                "(sign-in included) unless CSRF_TRUSTED_ORIGINS lists the site.",
                f"with deploy/nginx or deploy/Caddyfile in front, set TRUST_PROXY_HEADERS=true in "
                f"{ENV_FILE} (only when the proxy overwrites X-Forwarded-Proto, as those do)",
            )
        )
    else:
        findings.append(_ok("settings", "HTTPS: Secure cookies; X-Forwarded-Proto trusted from the proxy."))
    return findings


def _django_deployment_checks() -> list[Finding]:
    """Django's system checks with its deployment checks (`check --deploy`), minus those replaced above
    and those SILENCED_SYSTEM_CHECKS silences (as `check` does)."""
    findings = []
    for message in django_checks.run_checks(include_deployment_checks=True):
        replaced = message.id in REPLACED_DJANGO_CHECKS
        if replaced or message.is_silenced() or message.level < django_checks.WARNING:
            continue
        level: Level = "error" if message.is_serious() else "warning"
        findings.append(
            Finding(level, "settings", f"{message.msg} ({message.id})", message.hint or DJANGO_CHECKS_DOCS)
        )
    return findings


# --- database ---------------------------------------------------------------------------------------


def _describe_database() -> str:
    db: dict[str, Any] = settings.DATABASES["default"]
    vendor = str(db["ENGINE"]).rsplit(".", 1)[-1]
    if vendor == "sqlite3":
        return f"sqlite3 {db['NAME']}"
    host = db.get("HOST") or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"{vendor} {host}{port}/{db.get('NAME')}"


def check_database() -> list[Finding]:
    where = _describe_database()
    connection = connections["default"]
    try:
        connection.ensure_connection()
    except (DatabaseError, OSError) as exc:
        return [
            _error(
                "database",
                f"Cannot connect to the database ({where}): {_first_line(exc)}",
                f"check DATABASE_URL in {ENV_FILE} (postgres://user:password@host:5432/name) and that "
                "the server runs and accepts this user",
            )
        ]
    findings = []
    try:
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    except DatabaseError as exc:
        return [
            _error(
                "database",
                f"Cannot read the applied migrations ({where}): {_first_line(exc)}",
                "check that DATABASE_URL's user may read the database",
            )
        ]
    if plan:
        names = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        findings.append(
            _error(
                "database",
                f"{len(names)} migration(s) not applied ({where}): {shown}.",
                "run `manage.py migrate` (docs/operations.md, Upgrade)",
            )
        )
    else:
        findings.append(_ok("database", f"{where}: connected, all migrations applied."))
    if connection.vendor == "sqlite" and not settings.DEBUG:
        findings.append(
            _warning(
                "database",
                "SQLite: one host and a light load only (writers wait for each other; a second host "
                "cannot share it).",
                "use PostgreSQL for production: DATABASE_URL=postgres://… (docs/operations.md)",
            )
        )
    return findings


# --- Redis ------------------------------------------------------------------------------------------


async def _channel_layer_round_trip(timeout_s: float) -> None:
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert layer is not None
    try:
        nonce = secrets.token_hex(8)
        channel = await asyncio.wait_for(layer.new_channel("deploycheck."), timeout_s)
        await asyncio.wait_for(layer.send(channel, {"type": "deploy.check", "nonce": nonce}), timeout_s)
        message = await asyncio.wait_for(layer.receive(channel), timeout_s)
        if message.get("nonce") != nonce:
            raise RuntimeError("received a different message than the one sent")
    finally:
        close = getattr(layer, "close_pools", None)
        if close is not None:
            await close()


def check_redis(*, timeout_s: float) -> list[Finding]:
    url = settings.REDIS_URL
    if not url:
        return [
            _warning(
                "redis",
                "REDIS_URL is not set: the in-memory channel layer only works when one process serves "
                "the web and observes the calls (`serve` without --no-observer). With the systemd units "
                "(web and worker) or several web processes, calls would never be observed.",
                f"apt-get install redis-server and set REDIS_URL=redis://127.0.0.1:6379/0 in {ENV_FILE}",
            )
        ]
    shown = redact_url(url)
    try:
        asyncio.run(_channel_layer_round_trip(timeout_s))
    except TimeoutError:
        problem = f"no answer within {timeout_s:g} s"
    except Exception as exc:  # any client error (refused, auth, DNS): report it, never crash the report
        problem = _first_line(exc)
    else:
        return [_ok("redis", f"{shown}: a channel layer message went there and back.")]
    return [
        _error(
            "redis",
            f"Redis at {shown} does not work for the channel layer: {problem}",
            f"start redis-server (systemctl status redis-server) or fix REDIS_URL in {ENV_FILE}",
        )
    ]


# --- Realtime API -----------------------------------------------------------------------------------


def _key_fix() -> str:
    if settings.USES_LOCAL_ENGINE:
        return (
            "REALTIME_LOCAL_API_KEY must be the key the local engine was started with "
            "(voiceagent-engine.service reads the same env file)"
        )
    return (
        f"set OPENAI_API_KEY in {ENV_FILE} to a valid key of the project that owns the phone number "
        "(platform.openai.com → API keys)"
    )


def check_realtime(*, timeout_s: float) -> list[Finding]:
    """`GET {REALTIME_BASE_URL}/models` with the key: the cheapest authenticated request (no call)."""
    base = settings.REALTIME_BASE_URL
    where = "the local engine" if settings.USES_LOCAL_ENGINE else "the Realtime API"
    try:
        response = httpx.get(
            f"{base}/models",
            headers={"Authorization": f"Bearer {settings.REALTIME_API_KEY}"},
            timeout=timeout_s,
        )
    except httpx.TimeoutException:
        problem = f"no answer within {timeout_s:g} s"
    except httpx.HTTPError as exc:
        problem = _first_line(exc)
    else:
        if response.status_code in (401, 403):
            return [
                _error(
                    "realtime",
                    f"{where} at {base} refused the key ({response.status_code}{_error_code(response)}).",
                    _key_fix(),
                )
            ]
        if response.status_code != 200:
            return [
                _error(
                    "realtime",
                    f"{where} at {base} answered {response.status_code} to GET /models.",
                    "check REALTIME_BASE_URL (it ends in /v1) and the provider's status",
                )
            ]
        return [_ok("realtime", f"{where} at {base} accepts the key.")]
    reach_fix = (
        "start the engine (systemctl status voiceagent-engine) or fix REALTIME_BASE_URL"
        if settings.USES_LOCAL_ENGINE
        else "check outbound HTTPS from this host (firewall, proxy, DNS) and REALTIME_BASE_URL"
    )
    return [_error("realtime", f"Cannot reach {where} at {base}: {problem}", reach_fix)]


def _error_code(response: httpx.Response) -> str:
    try:
        code = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return ""
    return f" {code}" if isinstance(code, str) else ""


# --- webhook secret and phone number ----------------------------------------------------------------


def whsec_problem(value: str) -> str | None:
    """Why `value` is not a usable Standard Webhooks secret (`whsec_` + base64 of the key), or None."""
    if not value.startswith("whsec_"):
        return "does not start with whsec_"
    try:
        key = base64.b64decode(value.removeprefix("whsec_"), validate=True)
    except (binascii.Error, ValueError):
        return "is not base64 after whsec_"
    if len(key) < 16:
        return f"decodes to {len(key)} bytes only"
    return None


def check_webhook_secret() -> list[Finding]:
    fix = (
        "copy the signing secret of the project's webhook (platform.openai.com → Webhooks) into "
        f"OPENAI_SIGNING_SECRET in {ENV_FILE}; it looks like whsec_ followed by base64"
    )
    current = settings.OPENAI_SIGNING_SECRET
    findings: list[Finding] = []
    if not current:
        findings.append(
            _warning(
                "webhook",
                "OPENAI_SIGNING_SECRET is not set: phone-call webhooks are answered 503 (not verified).",
                fix,
            )
        )
    elif (problem := whsec_problem(current)) is not None:
        findings.append(
            _error("webhook", f"OPENAI_SIGNING_SECRET {problem}: no webhook can be verified.", fix)
        )
    else:
        findings.append(_ok("webhook", "OPENAI_SIGNING_SECRET is a valid whsec_ secret."))
    previous = [value for value in getattr(settings, "OPENAI_SIGNING_SECRET_PREVIOUS", []) if value]
    for number, value in enumerate(previous, start=1):
        if (problem := whsec_problem(value)) is not None:
            findings.append(
                _error(
                    "webhook",
                    f"OPENAI_SIGNING_SECRET_PREVIOUS entry {number} {problem}.",
                    "list the old whsec_ secrets, comma-separated, or remove the variable",
                )
            )
    if previous:
        findings.append(
            _warning(
                "webhook",
                f"OPENAI_SIGNING_SECRET_PREVIOUS lists {len(previous)} old secret(s): deliveries signed "
                "with them are still accepted.",
                "remove OPENAI_SIGNING_SECRET_PREVIOUS once the rotation is over "
                "(docs/operations.md, Rotate the webhook secret)",
            )
        )
    return findings


def check_phone_number() -> list[Finding]:
    number = settings.FROM_NUMBER
    if not number:
        return [_ok("phone", "FROM_NUMBER is not set (the console shows no number to call).")]
    if E164_RE.fullmatch(number) is None:
        return [
            _error(
                "phone",
                f"FROM_NUMBER {number!r} is not an E.164 number.",
                "write it as + country code and number, no spaces or dashes: FROM_NUMBER=+15551234567",
            )
        ]
    return [_ok("phone", f"FROM_NUMBER {number} is an E.164 number.")]


def run_all(*, timeout_s: float = 5.0) -> list[Finding]:
    """Every check, in the order an operator fixes things."""
    steps: list[Callable[[], list[Finding]]] = [
        check_settings,
        check_database,
        lambda: check_redis(timeout_s=timeout_s),
        lambda: check_realtime(timeout_s=timeout_s),
        check_webhook_secret,
        check_phone_number,
    ]
    findings: list[Finding] = []
    for step in steps:
        findings += step()
    return findings
