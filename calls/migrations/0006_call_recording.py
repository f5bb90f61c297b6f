# Placeholder reserved for call recordings (issue 7); its owner replaces the operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("calls", "0005_mcp_server")]

    operations: list[migrations.operations.base.Operation] = []
