"""Log lines: one JSON object per line (`LOG_FORMAT=json`, the default when DEBUG is off) or readable
`key=value` text (`console`, the development default), for our loggers and for every stdlib logger
(Django, daphne, channels) alike: all go through the root handler's `formatter` (docs/observability.md).

Every line carries `timestamp` (ISO 8601, UTC), `level`, `logger`, `event` (the message) and, when the
work it describes has them, `request_id` (`RequestIdMiddleware`) and `call_id` (`bind_call_id`, bound
by the call services, the observer's task, the tool runner's tasks it starts, and the SIP answer task).
Both are structlog context variables: per asyncio task and per `sync_to_async` call, never shared
between two requests or two calls.

Secrets never reach the output: `RedactingFormatter` replaces, in the finished line, the values of the
settings that hold secrets (`*_KEY`, `*_SECRET(S)`, `*_TOKEN`, `*_PASSWORD`, database password) and
anything shaped like a credential (`sk-…` API keys, `ek_…` client secrets, `whsec_…` signing secrets,
`Authorization`/`Bearer` values, passwords in URLs) with `[REDACTED]`. The last step of formatting,
so it covers tracebacks and third-party messages too.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import uuid
from typing import Any, Final

import structlog
from structlog.typing import EventDict, Processor

REDACTED: Final = "[REDACTED]"
LOG_FORMATS: Final = ("json", "console")
#: Settings whose names end so hold secrets (_PREVIOUS, _FALLBACKS: the values a rotation replaced,
#: e.g. OPENAI_SIGNING_SECRET_PREVIOUS, SECRET_KEY_FALLBACKS); their values are redacted wherever they appear.
SECRET_SETTING_SUFFIXES: Final = (
    "_KEY",
    "_KEYS",
    "_SECRET",
    "_SECRETS",
    "_TOKEN",
    "_PASSWORD",
    "_PREVIOUS",
    "_FALLBACKS",
)
#: Shorter values are not redacted (they would blank out ordinary words).
MIN_SECRET_CHARS: Final = 8
#: Credentials recognised by their shape, whatever setting (or nobody) they came from.
_SHAPES: Final = (
    (re.compile(r"\b(?:sk|rk)-[A-Za-z0-9_-]{16,}"), REDACTED),
    (re.compile(r"\bek_[A-Za-z0-9_-]{8,}"), REDACTED),
    (re.compile(r"\bwhsec_[A-Za-z0-9+/=]{8,}"), REDACTED),
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{6,}"), r"\1 " + REDACTED),
    (re.compile(r"(?i)(authorization\\?[\"']?\s*[:=]\s*\\?[\"']?)[^\"'\\\s,}]+"), r"\1" + REDACTED),
    (re.compile(r"([a-z][a-z0-9+.-]*://[^:/@\s\"']*:)[^@/\s\"']+@"), r"\1" + REDACTED + "@"),
)

CALL_ID_KEY: Final = "call_id"
REQUEST_ID_KEY: Final = "request_id"


# --- redaction ----------------------------------------------------------------------------------------


@functools.cache
def _secret_setting_names() -> tuple[str, ...]:
    from django.conf import settings

    return tuple(name for name in dir(settings) if name.isupper() and name.endswith(SECRET_SETTING_SUFFIXES))


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value if isinstance(value, str) else None


def secret_values() -> tuple[str, ...]:
    """The secret values of the current settings (read at each call: tests and rotations change them;
    what is derived from them is cached per distinct set of values)."""
    from django.conf import settings

    if not settings.configured:
        return ()
    raw = tuple(_hashable(getattr(settings, name, None)) for name in _secret_setting_names())
    passwords = tuple(_hashable(db.get("PASSWORD")) for db in getattr(settings, "DATABASES", {}).values())
    return _derived_secrets(raw + passwords)


@functools.lru_cache(maxsize=8)
def _derived_secrets(raw: tuple[Any, ...]) -> tuple[str, ...]:
    found: set[str] = set()
    for value in raw:
        for item in value if isinstance(value, tuple) else [value]:
            if not isinstance(item, str) or len(item) < MIN_SECRET_CHARS:
                continue
            found.add(item)
            if item.startswith("whsec_") and len(item) - 6 >= MIN_SECRET_CHARS:
                found.add(item.removeprefix("whsec_"))  # the base64 key alone
            escaped = json.dumps(item)[1:-1]
            if escaped != item:
                found.add(escaped)  # as it appears inside a JSON string
    return tuple(sorted(found, key=len, reverse=True))


@functools.lru_cache(maxsize=8)
def _values_pattern(values: tuple[str, ...]) -> re.Pattern[str] | None:
    return re.compile("|".join(re.escape(value) for value in values)) if values else None


#: A line none of these (lower-cased) substrings occurs in cannot match a credential shape.
_SHAPE_HINTS: Final = ("sk-", "rk-", "ek_", "whsec_", "bearer", "basic", "authorization", "://")


def redact(text: str) -> str:
    """`text` with every known secret value and credential-shaped string replaced by `[REDACTED]`."""
    pattern = _values_pattern(secret_values())
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    lowered = text.lower()
    if any(hint in lowered for hint in _SHAPE_HINTS):
        for shape, replacement in _SHAPES:
            text = shape.sub(replacement, text)
    return text


# --- formatting ---------------------------------------------------------------------------------------


def _shared_processors() -> list[Processor]:
    """What every line gets, whether logged through structlog or the stdlib."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]


#: The fields every line starts with, in this order (the rest follow as logged).
LEADING_FIELDS: Final = ("timestamp", "level", "logger", "event", REQUEST_ID_KEY, CALL_ID_KEY)


def _leading_fields_first(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Put the fields a reader scans for first (JSON keeps insertion order)."""
    head = {key: event_dict.pop(key) for key in LEADING_FIELDS if key in event_dict}
    return {**head, **event_dict}


class RedactingFormatter(structlog.stdlib.ProcessorFormatter):
    """structlog's stdlib formatter whose finished line goes through `redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def formatter(log_format: str = "json") -> RedactingFormatter:
    """The root handler's formatter (`LOGGING["formatters"]` names this factory)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, not {log_format!r}")
    renderer: Processor = (
        structlog.processors.JSONRenderer(default=str)
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False, pad_event_to=0)
    )
    return RedactingFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *([structlog.processors.format_exc_info] if log_format == "json" else []),
            _leading_fields_first,
            renderer,
        ],
    )


def configure_structlog() -> None:
    """structlog's own loggers (`structlog.get_logger()`) hand their event dicts to the stdlib
    handlers, so that both kinds of line are formatted (and redacted) in one place."""
    structlog.configure(
        processors=[
            *_shared_processors(),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """The `LOGGING` setting: one stderr handler with our formatter for the root and Django's loggers."""
    if log_format not in LOG_FORMATS:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"LOG_FORMAT={log_format!r}: expected one of {', '.join(LOG_FORMATS)}.")
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structured": {"()": "voiceagent.monitoring.logs.formatter", "log_format": log_format}
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structured"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {"django": {"handlers": ["console"], "level": level, "propagate": False}},
    }


# --- context ------------------------------------------------------------------------------------------


def bind_call_id(call_id: uuid.UUID | str | None) -> None:
    """Put `call_id` on every line logged from here on in this task (or thread's context)."""
    if call_id is not None:
        structlog.contextvars.bind_contextvars(**{CALL_ID_KEY: str(call_id)})
