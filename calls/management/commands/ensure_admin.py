"""`manage.py ensure_admin`: make sure someone can sign in to a fresh install.

Creates the superuser `admin` when no superuser exists. The password comes from ADMIN_PASSWORD or is
generated, and is printed once, here, with the login URL. When a superuser already exists nothing is
created and nothing secret is printed.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

ADMIN_USERNAME = "admin"


class Command(BaseCommand):
    help = "Create the superuser 'admin' if no superuser exists (password: $ADMIN_PASSWORD or generated)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument(
            "--url",
            default=f"http://127.0.0.1:{settings.PORT}",
            help="Base URL printed with the credentials (default: http://127.0.0.1:$PORT).",
        )

    def handle(self, *args: Any, url: str, **options: Any) -> None:
        user_model = get_user_model()
        base_url = url.rstrip("/")
        with transaction.atomic():
            if user_model.objects.filter(is_superuser=True).exists():
                self.stdout.write(f"An admin account exists; sign in at {base_url}/admin/")
                return
            if user_model.objects.filter(**{user_model.USERNAME_FIELD: ADMIN_USERNAME}).exists():
                raise CommandError(
                    f"A user named {ADMIN_USERNAME!r} exists but is not a superuser: promote it "
                    "in the shell, or create another superuser with `manage.py createsuperuser`."
                )
            password = os.environ.get("ADMIN_PASSWORD", "")
            generated = not password
            if generated:
                password = secrets.token_urlsafe(18)
            user_model.objects.create_superuser(username=ADMIN_USERNAME, email="", password=password)

        rule = "=" * 64
        lines = [
            rule,
            "  Admin account created",
            f"  Sign in:   {base_url}/accounts/login/   (admin: {base_url}/admin/)",
            f"  Username:  {ADMIN_USERNAME}",
            f"  Password:  {password}" if generated else "  Password:  the value of ADMIN_PASSWORD",
        ]
        if generated:
            lines.append("  This password is shown only once; change it in the admin after signing in.")
        lines.append(rule)
        self.stdout.write(self.style.SUCCESS("\n".join(lines)))
