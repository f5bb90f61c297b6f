"""`manage.py check_deployment`: is this host ready to serve? Prints every finding with its fix.

Checks settings (DEBUG, SECRET_KEY, ALLOWED_HOSTS, HTTPS, Django's `check --deploy`), the database
(connection, migrations), Redis (a channel-layer round trip), the Realtime API (an authenticated
request with the key), the webhook signing secret and FROM_NUMBER: see `voiceagent.deployment`.
Exit status 1 when there is an error (or, with --strict, a warning), else 0.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from voiceagent.deployment import Finding, run_all

LABELS = {"ok": "OK     ", "warning": "WARNING", "error": "ERROR  "}


class Command(BaseCommand):
    help = "Check settings, database, Redis, the Realtime API, the webhook secret; print what to fix."
    # The system checks are part of the report; a failing one must not stop the report from printing.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--timeout", type=float, default=5.0, help="Seconds each network check may take (default 5)."
        )
        parser.add_argument("--strict", action="store_true", help="Warnings fail too (exit status 1).")

    def handle(self, *args: Any, timeout: float, strict: bool, **options: Any) -> None:
        findings = run_all(timeout_s=timeout)
        for finding in findings:
            self.stdout.write(self.format(finding))
        errors = sum(1 for f in findings if f.level == "error")
        warnings = sum(1 for f in findings if f.level == "warning")
        summary = f"{errors} error(s), {warnings} warning(s)."
        if errors or (strict and warnings):
            self.stdout.write(self.style.ERROR(f"{summary} Fix the above before serving."))
            raise SystemExit(1)
        self.stdout.write(self.style.SUCCESS(f"{summary} Ready to serve."))

    def format(self, finding: Finding) -> str:
        style = {"ok": self.style.SUCCESS, "warning": self.style.WARNING, "error": self.style.ERROR}
        line = f"{style[finding.level](LABELS[finding.level])} {finding.topic:<9} {finding.message}"
        if finding.fix:
            line += f"\n{'':18}fix: {finding.fix}"
        return line
