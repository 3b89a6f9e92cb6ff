"""The schema laid out for a distributed database: on CockroachDB only (see gql_audit.layout).

Time-ordered indexes written on every request become hash-sharded, auditlog's integer
keys unordered, and SecurityEvent.actor gets the index django-cockroachdb leaves out.
Nothing changes on PostgreSQL or SQLite, nor in the model state.
"""

from django.db import migrations

from gql_audit.layout import CockroachDBIndex, HashShardIndex, UnorderedRowid


class Migration(migrations.Migration):

    dependencies = [
        ("gql_audit", "0005_seals_and_task_failed_kind"),
        # The last auditlog migration to change LogEntry.timestamp's index.
        ("auditlog", "0013_alter_logentry_timestamp"),
    ]

    operations = [
        HashShardIndex("gql_audit.SecurityEvent", "created_at", name="gql_audit_event_created_at_hash"),
        HashShardIndex("gql_audit.RequestReads", "at", name="gql_audit_reads_at_hash"),
        CockroachDBIndex("gql_audit.SecurityEvent", "actor", name="gql_audit_event_actor_id"),
        HashShardIndex("auditlog.LogEntry", "timestamp", name="auditlog_logentry_timestamp_hash"),
        UnorderedRowid("auditlog.LogEntry", "id"),
    ]
