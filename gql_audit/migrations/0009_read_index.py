"""The object index of reads on SQLite, built in bulk off the request path.

``ReadObject`` is indexed by (key, at), so an object's newest reads are the first
entries of its range; ``ReadIndexQueue`` holds the rows not yet indexed, filled by a
trigger in the statement that inserts each ``RequestReads`` row. Nothing changes on
PostgreSQL and CockroachDB (their index on ``keys`` answers).
"""

from typing import Any

from django.db import migrations, models

TRIGGER = "gql_audit_requestreads_to_index"


def create_trigger(apps: Any, schema_editor: Any) -> None:
    if schema_editor.connection.vendor != "sqlite":
        return
    schema_editor.execute(
        f"CREATE TRIGGER IF NOT EXISTS {TRIGGER} AFTER INSERT ON gql_audit_requestreads "
        "BEGIN INSERT INTO gql_audit_readindexqueue (reads_id) VALUES (NEW.id); END"
    )


def drop_trigger(apps: Any, schema_editor: Any) -> None:
    """Back to an index written with each row: the rows still queued are indexed first."""
    if schema_editor.connection.vendor != "sqlite":
        return
    schema_editor.execute(f"DROP TRIGGER IF EXISTS {TRIGGER}")
    schema_editor.execute(
        "INSERT INTO gql_audit_readobject (reads_id, key, at) "
        "SELECT r.id, j.value, r.at FROM gql_audit_readindexqueue q "
        "JOIN gql_audit_requestreads r ON r.id = q.reads_id, json_each(r.keys) j"
    )
    schema_editor.execute("DELETE FROM gql_audit_readindexqueue")


class Migration(migrations.Migration):

    dependencies = [
        ("gql_audit", "0008_outbox"),
    ]

    operations = [
        migrations.AlterField(
            model_name="readobject",
            name="key",
            field=models.CharField(max_length=255),
        ),
        migrations.AddIndex(
            model_name="readobject",
            index=models.Index(fields=["key", "at"], name="gql_audit_readobject_key_at"),
        ),
        migrations.CreateModel(
            name="ReadIndexQueue",
            fields=[
                ("id", models.IntegerField(primary_key=True, serialize=False)),
                ("reads_id", models.UUIDField()),
            ],
            options={
                "verbose_name": "reads row to index",
            },
        ),
        migrations.RunPython(create_trigger, drop_trigger, elidable=False),
    ]
