"""CockroachDB: migrations that run where DDL cannot be rolled back, and the checks that guard what
only a cluster would refuse.

The tests marked ``postgres`` also run in the CockroachDB-backend pass (django-cockroachdb's own
backend on PostgreSQL, ``GQL_AUDIT_TEST_DB=cockroachdb``).
"""

from __future__ import annotations

import contextlib

import pytest
from django.core import checks
from django.db import connection, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder
from django.db.utils import load_backend

from gql_audit.checks import AUDITLOG_JSON_MIGRATION
from gql_audit.layout import plain_indexes

CRDB_ON_POSTGRES = "tests.crdb_on_postgres"


def database_ids(databases):
    found = checks.run_checks(tags=[checks.Tags.database], databases=databases)
    return sorted(m.id for m in found if m.id.startswith("gql_audit."))


@contextlib.contextmanager
def alias(name, **overrides):
    """A connection under ``name`` for the block: the test database's settings with ``overrides``
    (made here, not in DATABASES: Django's test cases let such connections through)."""
    settings_dict = {**connections["default"].settings_dict, **overrides}
    wrapper = load_backend(settings_dict["ENGINE"]).DatabaseWrapper(settings_dict, name)
    connections[name] = wrapper
    try:
        yield name
    finally:
        wrapper.close()
        del connections[name]


# --- migrations -------------------------------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_migrations_run_with_django_guard_against_ddl_in_a_transaction(monkeypatch):
    """On a backend that cannot roll back DDL (CockroachDB), Django refuses DDL inside a transaction.
    gql_audit's migrations run there backwards and forwards, with that guard on."""
    monkeypatch.setattr(connection.features, "can_rollback_ddl", False)
    executor = MigrationExecutor(connection)
    leaf = executor.loader.graph.leaf_nodes("gql_audit")
    executor.migrate([("gql_audit", "0002_login_failed_kind")])
    executor.loader.build_graph()
    executor.migrate(leaf)
    applied = MigrationRecorder(connection).applied_migrations()
    assert set(leaf) <= set(applied)


# --- django-auditlog's JSON migration on CockroachDB (gql_audit.E060) ---------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_auditlog_json_migration_still_to_run_on_cockroachdb_is_an_error(monkeypatch, settings):
    settings.AUDITLOG_TWO_STEP_MIGRATION = False
    settings.DISABLE_COCKROACHDB_TELEMETRY = True  # W060's own test is below
    recorder = MigrationRecorder(connection)
    with alias("crdb", ENGINE=CRDB_ON_POSTGRES) as crdb:
        assert AUDITLOG_JSON_MIGRATION in recorder.applied_migrations()
        assert database_ids([crdb]) == []  # applied already: nothing left to run
        recorder.record_unapplied(*AUDITLOG_JSON_MIGRATION)
        try:
            # A django-cockroachdb that sends combined ALTERs as they are (the 5.2 and 6.0 series;
            # 6.1 splits them itself).
            monkeypatch.setattr(connections[crdb].features, "supports_combined_alters", True)
            assert database_ids([crdb]) == ["gql_audit.E060"]
            (error,) = [m for m in checks.run_checks(databases=[crdb]) if m.id == "gql_audit.E060"]
            assert "AUDITLOG_TWO_STEP_MIGRATION = True" in error.hint
            # Not on PostgreSQL, nor without --database, nor with the two-step migration.
            combined = connection.vendor == "cockroachdb" and connection.features.supports_combined_alters
            assert database_ids(["default"]) == (["gql_audit.E060"] if combined else [])
            assert database_ids(None) == []
            settings.AUDITLOG_TWO_STEP_MIGRATION = True
            assert database_ids([crdb]) == []
            settings.AUDITLOG_TWO_STEP_MIGRATION = False
            # A django-cockroachdb that splits combined ALTERs itself.
            monkeypatch.setattr(connections[crdb].features, "supports_combined_alters", False)
            assert database_ids([crdb]) == []
        finally:
            recorder.record_applied(*AUDITLOG_JSON_MIGRATION)


@pytest.mark.django_db
def test_auditlog_json_migration_check_on_an_unreachable_database(settings):
    settings.AUDITLOG_TWO_STEP_MIGRATION = False
    settings.DISABLE_COCKROACHDB_TELEMETRY = True
    with alias("crdb", ENGINE=CRDB_ON_POSTGRES, HOST="127.0.0.1", PORT="1", NAME="nowhere") as crdb:
        assert database_ids([crdb]) == []  # migrate itself reports an unreachable database


# --- django-cockroachdb's telemetry (gql_audit.W060) ----------------------------------------


def test_cockroachdb_telemetry_is_a_warning_until_disabled(settings):
    settings.DISABLE_COCKROACHDB_TELEMETRY = False
    settings.AUDITLOG_TWO_STEP_MIGRATION = True  # E060 would look at the database
    with alias("crdb", ENGINE="django_cockroachdb") as crdb:
        assert database_ids([crdb]) == ["gql_audit.W060"]
        (warning,) = [m for m in checks.run_checks(databases=[crdb]) if m.id == "gql_audit.W060"]
        assert "DISABLE_COCKROACHDB_TELEMETRY = True" in warning.hint and "'crdb'" in warning.msg
        assert database_ids(None) == []  # a database check: migrate and check --database run it
        settings.DISABLE_COCKROACHDB_TELEMETRY = True
        assert database_ids([crdb]) == []
    settings.DISABLE_COCKROACHDB_TELEMETRY = False
    if connection.vendor != "cockroachdb":
        assert database_ids(["default"]) == []


# --- the distributed layout (migration 0006) ------------------------------------------------

#: Table -> (model, field, the hash-sharded index CockroachDB gets on it).
HASH_SHARDED = {
    "gql_audit_securityevent": ("gql_audit.SecurityEvent", "created_at", "gql_audit_event_created_at_hash"),
    "gql_audit_requestreads": ("gql_audit.RequestReads", "at", "gql_audit_reads_at_hash"),
    "auditlog_logentry": ("auditlog.LogEntry", "timestamp", "auditlog_logentry_timestamp_hash"),
}
ACTOR_INDEX = "gql_audit_event_actor_id"
LAYOUT = ("gql_audit", "0006_distributed_layout")


def indexes_on(table, column):
    return plain_indexes(connection, table, column)


def id_default(table):
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT column_default FROM information_schema.columns WHERE table_name = %s AND column_name = 'id'",
            [table],
        )
        return cursor.fetchone()[0] or ""  # PostgreSQL's identity columns have none


def layout():
    found = {table: indexes_on(table, column) for table, (_, column, _) in HASH_SHARDED.items()}
    found["actor"] = indexes_on("gql_audit_securityevent", "actor_id")
    return found


@pytest.mark.django_db(transaction=True)
def test_distributed_layout_is_cockroachdb_only_and_reversible():
    from django.db.migrations.executor import MigrationExecutor

    from tests.conftest import SQLRecorder

    crdb = connection.vendor == "cockroachdb"
    now = layout()
    for table, (_, _, name) in HASH_SHARDED.items():
        # CockroachDB: the hash-sharded index alone (PostgreSQL, under the test backend, shows it plain).
        assert (now[table] == [name]) if crdb else (name not in now[table] and len(now[table]) == 1), now
    assert (ACTOR_INDEX in now["actor"]) if crdb else (ACTOR_INDEX not in now["actor"])
    assert len(now["actor"]) == 1  # one index on the actor everywhere: Django's or CockroachDB's own
    if connection.vendor != "sqlite":
        assert ("unordered_unique_rowid()" in id_default("auditlog_logentry")) == crdb

    sent = SQLRecorder()
    executor = MigrationExecutor(connection)
    latest = [node for node in executor.loader.graph.leaf_nodes() if node[0] == "gql_audit"]
    executor.migrate([LAYOUT])  # the migrations after it out of the way, unrecorded
    executor.loader.build_graph()
    try:
        with connection.execute_wrapper(sent):
            executor.migrate([("gql_audit", "0005_seals_and_task_failed_kind")])
            before = layout()
            executor.loader.build_graph()
            executor.migrate([LAYOUT])
    finally:
        executor.loader.build_graph()
        executor.migrate(latest)
    assert layout() == now
    ddl = [sql for sql in sent if "django_migrations" not in sql and not sql.startswith(("SAVEPOINT", "RELEASE"))]
    if not crdb:
        assert before == now and not [sql for sql in ddl if sql.startswith(("CREATE", "DROP", "ALTER"))], ddl
        return
    # Reversed, Django's own indexes come back under Django's names.
    from django.apps import apps

    from gql_audit.compat import field_index_name

    for table, (label, field, _) in HASH_SHARDED.items():
        model = apps.get_model(label)
        django_name = field_index_name(connection.SchemaEditorClass(connection), model, model._meta.get_field(field))
        assert before[table] == [django_name]
    assert before["actor"] == []
    assert any(sql.endswith("USING HASH") for sql in ddl)
    assert any("SET DEFAULT unordered_unique_rowid()" in sql for sql in ddl)
    assert any("SET DEFAULT unique_rowid()" in sql for sql in ddl)


@pytest.mark.django_db
def test_distributed_layout_leaves_the_model_state_alone():
    """Nothing for makemigrations to write: the layout is the database's, not the models'."""
    from django.core.management import call_command

    call_command("makemigrations", "gql_audit", "--check", "--dry-run", verbosity=0)


# --- the statement check of the CockroachDB-backend pass ------------------------------------


def test_the_statement_check_refuses_what_cockroachdb_refuses(tmp_path, capsys):
    """tests/crdb_on_postgres/check.py, which CI runs over every statement of the pass."""
    import os

    from tests.crdb_on_postgres import check
    from tests.crdb_on_postgres.base import SEPARATOR, to_postgres

    crdbparse = os.environ.get("CRDBPARSE") or str(check.DEFAULT_CRDBPARSE)
    if not os.access(crdbparse, os.X_OK):
        if os.environ.get("CI") == "true":
            pytest.fail(f"crdbparse is needed under CI: not found at {crdbparse} (set CRDBPARSE)")
        pytest.skip(f"crdbparse not found at {crdbparse} (set CRDBPARSE)")
    accepted = [
        'CREATE INDEX IF NOT EXISTS "i" ON "t" ("at") USING HASH',
        "CREATE INVERTED INDEX IF NOT EXISTS i ON t (keys)",
        'ALTER TABLE "t" ALTER COLUMN "c" TYPE jsonb USING "c"::jsonb',
        "SELECT 'a -- ;; b'",
    ]
    refused = [
        'ALTER TABLE "t" ALTER COLUMN "c" TYPE jsonb USING "c"::jsonb, ALTER COLUMN "c" DROP NOT NULL',
        "SELEC 1",
    ]
    log = tmp_path / "statements.sql"
    log.write_text("".join(sql + SEPARATOR for sql in [*accepted, *refused, accepted[0]]))
    assert check.main([str(log)]) == 1
    out = capsys.readouterr().out
    assert "6 distinct statements checked, 4 accepted, 2 refused" in out
    assert "documented CockroachDB limitation" in out and "syntax error" in out
    log.write_text("".join(sql + SEPARATOR for sql in accepted))
    assert check.main([str(log)]) == 0
    # What PostgreSQL is sent instead of CockroachDB's own spellings.
    assert to_postgres(accepted[0]) == 'CREATE INDEX IF NOT EXISTS "i" ON "t" ("at")'
    assert to_postgres(accepted[1]) == "CREATE INDEX IF NOT EXISTS i ON t USING GIN (keys)"
    assert to_postgres('DROP INDEX IF EXISTS "t"@"i"') == 'DROP INDEX IF EXISTS "i"'
