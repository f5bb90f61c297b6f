"""Phone calls: the dialled number and SIP headers on a call; per-agent numbers and transfer targets."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("calls", "0003_agent_max_call_duration_call_session_tampered"),
    ]

    operations = [
        migrations.AddField(
            model_name="agentprofile",
            name="phone_numbers",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text=(
                    'Dialled numbers this agent answers, e.g. ["+15551230000"]; a phone call to a number no '
                    "profile lists goes to the default profile."
                ),
            ),
        ),
        migrations.AddField(
            model_name="agentprofile",
            name="transfer_targets",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text=(
                    'Numbers or SIP URIs a phone call may be transferred to, e.g. ["+15551230001", '
                    '"sip:desk@pbx.example.com"]; nothing else is allowed (toll fraud).'
                ),
            ),
        ),
        migrations.AddField(
            model_name="call",
            name="callee_number",
            field=models.CharField(
                blank=True, help_text="The number the caller dialled (SIP calls).", max_length=64
            ),
        ),
        migrations.AddField(
            model_name="call",
            name="sip_headers",
            field=models.JSONField(
                blank=True,
                default=list,
                help_text='The SIP INVITE\'s headers as the webhook carried them ([{"name", "value"}, …]).',
            ),
        ),
    ]
