# Evidence: chains numbered by a sealed counter (a whole chain deleted shows).

from typing import Any

from django.db import migrations, models


def create_chain_counter(apps: Any, schema_editor: Any) -> None:
    # The one row writers raise when they start a chain; sealed at its first use.
    SealCounter = apps.get_model("gql_audit", "SealCounter")
    SealCounter.objects.using(schema_editor.connection.alias).get_or_create(name="chains", defaults={"value": 0})


class Migration(migrations.Migration):

    dependencies = [
        ("gql_audit", "0005_seals_and_task_failed_kind"),
    ]

    operations = [
        migrations.CreateModel(
            name="SealCounter",
            fields=[
                ("name", models.CharField(max_length=16, primary_key=True, serialize=False)),
                ("value", models.BigIntegerField(default=0)),
                ("key_id", models.CharField(blank=True, max_length=16)),
                ("mac", models.CharField(blank=True, max_length=64)),
            ],
        ),
        migrations.AddField(
            model_name="sealchain",
            name="number",
            field=models.BigIntegerField(null=True, unique=True),
        ),
        migrations.RunPython(create_chain_counter, migrations.RunPython.noop),
    ]
