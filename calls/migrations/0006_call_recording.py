# Call recordings (issue 7): the per-profile switch and the recording of a call's audio.

import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("calls", "0005_mcp_server")]

    operations = [
        migrations.AddField(
            model_name="agentprofile",
            name="record_calls",
            field=models.BooleanField(
                default=True,
                help_text="Keep the audio of web calls with this agent (the console records and uploads it); untick to switch recording off.",
            ),
        ),
        migrations.CreateModel(
            name="CallRecording",
            fields=[
                (
                    "call",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="recording",
                        serialize=False,
                        to="calls.call",
                    ),
                ),
                (
                    "content_type",
                    models.CharField(help_text="As the browser sent it, e.g. audio/webm.", max_length=100),
                ),
                (
                    "size",
                    models.PositiveBigIntegerField(
                        default=0, help_text="Bytes received so far: the offset the next chunk must start at."
                    ),
                ),
                ("chunk_count", models.PositiveIntegerField(default=0)),
                (
                    "started_at",
                    models.DateTimeField(
                        default=django.utils.timezone.now,
                        help_text="When the browser started recording (server clock).",
                    ),
                ),
                ("updated_at", models.DateTimeField(auto_now=True, help_text="When the last chunk arrived.")),
                (
                    "finished_at",
                    models.DateTimeField(
                        blank=True,
                        help_text="Set once no more chunks are accepted (the chunks are merged).",
                        null=True,
                    ),
                ),
                (
                    "playable_name",
                    models.CharField(
                        blank=True,
                        help_text="Storage name of the seekable copy; empty until made.",
                        max_length=255,
                    ),
                ),
                (
                    "playable_source_size",
                    models.PositiveBigIntegerField(
                        default=0,
                        help_text="How many received bytes the seekable copy covers (stale when < size).",
                    ),
                ),
                (
                    "duration_s",
                    models.FloatField(blank=True, help_text="Length of the seekable copy.", null=True),
                ),
            ],
            options={"ordering": ["-started_at"]},
        ),
    ]
