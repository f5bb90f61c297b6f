# The observer lease (issue 8): one row per claimed live call; see calls.observer.lease.
import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("calls", "0006_call_recording")]

    operations = [
        migrations.CreateModel(
            name="ObserverLease",
            fields=[
                (
                    "call",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="observer_lease",
                        serialize=False,
                        to="calls.call",
                    ),
                ),
                (
                    "owner",
                    models.CharField(
                        blank=True, help_text="The worker instance holding the lease.", max_length=100
                    ),
                ),
                (
                    "epoch",
                    models.PositiveBigIntegerField(
                        default=0, help_text="Raised by every claim (the fencing token)."
                    ),
                ),
                ("heartbeat_at", models.DateTimeField(blank=True, null=True)),
                ("expires_at", models.DateTimeField(db_index=True)),
            ],
        ),
    ]
