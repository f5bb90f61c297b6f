"""MCP servers whose tools agent profiles offer (issue 6)."""

from django.db import migrations, models

import calls.models


class Migration(migrations.Migration):
    dependencies = [
        ("calls", "0004_telephony_phone_fields"),
    ]

    operations = [
        migrations.CreateModel(
            name="McpServer",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "name",
                    models.CharField(
                        help_text="Prefixes the tool names offered to the model (weather → weather__get_weather).",
                        max_length=24,
                        unique=True,
                        validators=[calls.models._validate_mcp_name],
                    ),
                ),
                (
                    "transport",
                    models.CharField(
                        choices=[("stdio", "stdio (subprocess)"), ("streamable-http", "Streamable HTTP")],
                        default="stdio",
                        max_length=16,
                    ),
                ),
                (
                    "command",
                    models.CharField(blank=True, help_text="stdio: the executable to run.", max_length=500),
                ),
                (
                    "args",
                    models.JSONField(
                        blank=True, default=list, help_text='stdio: arguments, a JSON list ["-m", "server"].'
                    ),
                ),
                (
                    "url",
                    models.URLField(
                        blank=True, help_text="Streamable HTTP: the endpoint, e.g. …/mcp.", max_length=500
                    ),
                ),
                (
                    "headers",
                    models.JSONField(
                        blank=True,
                        default=dict,
                        help_text="Streamable HTTP: request headers (JSON object); kept secret.",
                    ),
                ),
                ("enabled", models.BooleanField(default=True)),
                (
                    "allowed_tools",
                    models.JSONField(
                        blank=True,
                        default=list,
                        help_text="Tool names (as the server names them) to offer; empty offers all.",
                    ),
                ),
                (
                    "timeout_s",
                    models.FloatField(
                        default=10.0, help_text="Bound on connecting, and on each tool call, in seconds."
                    ),
                ),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
                (
                    "agents",
                    models.ManyToManyField(
                        blank=True,
                        help_text="The agent profiles that offer this server's tools.",
                        related_name="mcp_servers",
                        to="calls.agentprofile",
                    ),
                ),
            ],
            options={
                "verbose_name": "MCP server",
                "ordering": ["name"],
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("timeout_s__gt", 0)), name="calls_mcpserver_timeout_positive"
                    )
                ],
            },
        ),
    ]
