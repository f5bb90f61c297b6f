"""Create the default agent profile, so a fresh install can take calls without any set-up."""

from django.apps.registry import Apps
from django.db import migrations
from django.db.backends.base.schema import BaseDatabaseSchemaEditor

# Frozen here on purpose: a migration must not change when the model's defaults change later.
DEFAULT_PROFILE = {
    "name": "Default",
    "instructions": "Greet the user in English. Keep replies brief and conversational.",
    "voice": "marin",
    "model": "gpt-realtime",
    "tools": [],
    "turn_detection": {
        "type": "server_vad",
        "threshold": 0.5,
        "prefix_padding_ms": 300,
        "silence_duration_ms": 500,
        "create_response": True,
        "interrupt_response": True,
    },
    "is_default": True,
}


def create_default_profile(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    AgentProfile = apps.get_model("calls", "AgentProfile")
    if not AgentProfile.objects.filter(is_default=True).exists():
        AgentProfile.objects.create(**DEFAULT_PROFILE)


def remove_default_profile(apps: Apps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    AgentProfile = apps.get_model("calls", "AgentProfile")
    AgentProfile.objects.filter(name=DEFAULT_PROFILE["name"], calls__isnull=True).delete()


class Migration(migrations.Migration):
    dependencies = [("calls", "0001_initial")]

    operations = [migrations.RunPython(create_default_profile, remove_default_profile)]
