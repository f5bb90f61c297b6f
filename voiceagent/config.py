"""Access to settings that only some features need, with errors that name the variable."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class MissingSettingError(ImproperlyConfigured):
    """A feature was used whose environment variable is not set."""

    def __init__(self, name: str, purpose: str) -> None:
        self.name = name
        super().__init__(f"{name} is not set; it is needed to {purpose}. See .env.example.")


def require_setting(name: str, *, purpose: str) -> str:
    """Return the non-empty string setting `name`, or raise `MissingSettingError` naming it."""
    value = getattr(settings, name, "")
    if not value:
        raise MissingSettingError(name, purpose)
    return str(value)
