"""The schema laid out for a distributed database: migration operations that act on CockroachDB only.

CockroachDB keeps each table and each index as sorted key ranges, and a range is
served by one node at a time. Keys that only grow (a timestamp, a sequence, CockroachDB's
own ``unique_rowid()``) send every insert to the last range: one node takes all
the writes of that index, whatever the size of the cluster. The operations here
change that on CockroachDB, and do nothing on any other database (PostgreSQL and
SQLite keep the plain indexes, which suit one server):

- :class:`HashShardIndex`: the index on a time-ordered column becomes hash-sharded
  (``USING HASH``): the same index, spread over buckets;
- :class:`UnorderedRowid`: an integer key's default becomes ``unordered_unique_rowid()``
  (unique, not ordered);
- :class:`CockroachDBIndex`: an index Django creates everywhere but on CockroachDB
  (django-cockroachdb does not index foreign keys).

The model state does not change: to Django the columns keep their ``db_index``.
"""

from __future__ import annotations

from typing import Any

from django.db.migrations.operations.base import Operation

from gql_audit.compat import field_index_name

VENDOR = "cockroachdb"


class _CockroachDBOperation(Operation):
    """An operation on one field of a model (``"app_label.Model"``), on CockroachDB only."""

    reversible = True

    def __init__(self, model: str, field: str) -> None:
        self.model = model
        self.field = field

    def state_forwards(self, app_label: str, state: Any) -> None:
        pass  # the database only: to Django the field is as it was

    def _target(self, schema_editor: Any, state: Any) -> tuple[Any, Any] | None:
        """``(model, field)`` when the operation applies to this database, else None."""
        if schema_editor.connection.vendor != VENDOR:
            return None
        app_label, model_name = self.model.split(".")
        try:
            model = state.apps.get_model(app_label, model_name)
        except LookupError:
            return None
        if not self.allow_migrate_model(schema_editor.connection.alias, model):
            return None  # routed elsewhere, unmanaged, or swapped for a service's own model
        return model, model._meta.get_field(self.field)

    def database_forwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        target = self._target(schema_editor, to_state)
        if target is not None:
            self.forwards(schema_editor, *target)

    def database_backwards(self, app_label: str, schema_editor: Any, from_state: Any, to_state: Any) -> None:
        target = self._target(schema_editor, to_state)
        if target is not None:
            self.backwards(schema_editor, *target)

    def forwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        raise NotImplementedError

    def backwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        raise NotImplementedError


class HashShardIndex(_CockroachDBOperation):
    """On CockroachDB, the index on a time-ordered column becomes a hash-sharded one, named ``name``.

    The hash-sharded index is built first (online, as every CockroachDB index), then
    the plain one is dropped: the column is never without an index. The number of
    buckets is the cluster's (``sql.defaults.default_hash_sharded_index_bucket_count``).
    """

    def __init__(self, model: str, field: str, name: str) -> None:
        super().__init__(model, field)
        self.name = name

    def describe(self) -> str:
        return f"Hash-shard the index on {self.model}.{self.field} (CockroachDB only)"

    def forwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        quote, table = schema_editor.quote_name, model._meta.db_table
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(self.name)} ON {quote(table)} ({quote(field.column)}) USING HASH"
        )
        for name in plain_indexes(schema_editor.connection, table, field.column):
            if name != self.name:
                schema_editor.execute(f"DROP INDEX IF EXISTS {quote(table)}@{quote(name)}")

    def backwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        quote, table = schema_editor.quote_name, model._meta.db_table
        plain = field_index_name(schema_editor, model, field)
        schema_editor.execute(f"CREATE INDEX IF NOT EXISTS {quote(plain)} ON {quote(table)} ({quote(field.column)})")
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(table)}@{quote(self.name)}")


class UnorderedRowid(_CockroachDBOperation):
    """On CockroachDB, an integer primary key's default becomes ``unordered_unique_rowid()``:
    new keys are unique and scattered over the key space instead of growing with time."""

    def describe(self) -> str:
        return f"Unordered keys for {self.model}.{self.field} (CockroachDB only)"

    def forwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        self._set_default(schema_editor, model, field, "unordered_unique_rowid()")

    def backwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        self._set_default(schema_editor, model, field, "unique_rowid()")

    @staticmethod
    def _set_default(schema_editor: Any, model: Any, field: Any, default: str) -> None:
        quote = schema_editor.quote_name
        schema_editor.execute(
            f"ALTER TABLE {quote(model._meta.db_table)} ALTER COLUMN {quote(field.column)} SET DEFAULT {default}"
        )


class CockroachDBIndex(_CockroachDBOperation):
    """On CockroachDB, an index on a foreign key column (django-cockroachdb creates none;
    Django creates one on every other database)."""

    def __init__(self, model: str, field: str, name: str) -> None:
        super().__init__(model, field)
        self.name = name

    def describe(self) -> str:
        return f"Index {self.model}.{self.field} (CockroachDB only)"

    def forwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        quote = schema_editor.quote_name
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {quote(self.name)} ON {quote(model._meta.db_table)} ({quote(field.column)})"
        )

    def backwards(self, schema_editor: Any, model: Any, field: Any) -> None:
        quote = schema_editor.quote_name
        schema_editor.execute(f"DROP INDEX IF EXISTS {quote(model._meta.db_table)}@{quote(self.name)}")


def plain_indexes(connection: Any, table: str, column: str) -> list[str]:
    """The names of the non-unique indexes on exactly ``column`` of ``table``."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return sorted(
        name
        for name, info in constraints.items()
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == [column]
    )
