# Evidence: chains numbered by a sealed counter (a whole chain deleted shows); the
# append-only log of records and its signed checkpoints (CHECKPOINTS).

from typing import Any

from django.db import migrations, models


def create_chain_counter(apps: Any, schema_editor: Any) -> None:
    # The one row writers raise when they start a chain; sealed at its first use.
    SealCounter = apps.get_model("gql_audit", "SealCounter")
    SealCounter.objects.using(schema_editor.connection.alias).get_or_create(name="chains", defaults={"value": 0})


class Migration(migrations.Migration):

    dependencies = [
        ("gql_audit", "0006_distributed_layout"),
    ]

    operations = [
        migrations.CreateModel(
            name="SealCounter",
            fields=[
                ("name", models.CharField(max_length=16, primary_key=True, serialize=False)),
                ("value", models.BigIntegerField(default=0)),
                ("restarted_after", models.BigIntegerField(blank=True, null=True)),
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
        migrations.CreateModel(
            name="Checkpoint",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("created_at", models.DateTimeField(db_index=True)),
                ("tree_size", models.BigIntegerField()),
                ("root_hash", models.CharField(max_length=64)),
                ("key_id", models.CharField(max_length=8)),
                ("note", models.TextField()),
                ("frontier", models.JSONField(default=list)),
            ],
            options={
                "ordering": ["-created_at"],
                "get_latest_by": "created_at",
            },
        ),
        migrations.CreateModel(
            name="LogCursor",
            fields=[
                ("chain", models.CharField(max_length=64, primary_key=True, serialize=False)),
                ("seq", models.BigIntegerField()),
                ("mac", models.CharField(max_length=64)),
            ],
        ),
        migrations.CreateModel(
            name="LogLeaf",
            fields=[
                ("index", models.BigIntegerField(primary_key=True, serialize=False)),
                ("kind", models.CharField(max_length=16)),
                ("record_id", models.CharField(max_length=255)),
                ("type", models.CharField(max_length=32)),
                ("at", models.DateTimeField(null=True)),
                ("leaf", models.TextField()),
            ],
            options={
                "verbose_name": "logged record",
                "indexes": [
                    models.Index(fields=["kind", "record_id"], name="gql_audit_leaf_record"),
                    models.Index(fields=["kind", "type", "at"], name="gql_audit_leaf_age"),
                ],
            },
        ),
    ]
