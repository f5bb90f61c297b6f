# Placeholder reserved for the observer lease (issue 8); its owner replaces the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("calls", "0006_call_recording")]

    operations: list[migrations.operations.base.Operation] = []
