"""``ACCESS_STORE = "auditlog"``: one auditlog ACCESS ``LogEntry`` per object read.

Few statements whatever the number of entries: values shared by every entry of the
request are prepared once, objects read alike share one ``additional_data``
document, and auditlog's ``pre_log`` / ``post_log`` are sent per entry only when a
receiver other than gql_audit's listens.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from django.db import connections
from django.db.models import Model
from django.utils import timezone

from gql_audit import context
from gql_audit.compat import other_receivers
from gql_audit.evidence import sealing
from gql_audit.export import outbox
from gql_audit.store.backends import AccessStore
from gql_audit.store.observe import notify, observers
from gql_audit.store.records import access_data, model_data, object_repr, shape_key

#: Rows per INSERT at most, whatever the driver allows: bounds statement size.
MAX_ROWS_PER_INSERT = 2000
MAX_ROWS_PER_ARRAY_INSERT = 10000


class AuditlogStore(AccessStore):
    seal_kind = sealing.ENTRY

    def save(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> tuple[list[Any], list[Any]]:
        return insert_access_entries(ctx, records, alias, reader, written=sealed or outbox.enabled()), []


def max_query_params(connection: Any) -> int:
    """Bound parameters one statement may carry on this connection.

    Django assumes SQLite's historic 999; SQLite builds since 3.32 allow
    32,766 or more and report it. PostgreSQL's wire protocol allows 65,535.
    """
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        limit: int = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return limit
    return int(connection.features.max_query_params or 65535)


#: Columns that differ from one ACCESS entry of a request to the next.
PER_ROW = ("content_type_id", "object_pk", "object_id", "object_repr", "additional_data")
#: Backends taking whole columns as array parameters (``unnest``).
ARRAY_VENDORS = frozenset({"postgresql", "cockroachdb"})


class AccessInsert:
    """The INSERT of one request's ACCESS entries into auditlog's table.

    Values shared by every entry of the request are prepared once. Objects
    read alike share one ``additional_data`` document: a row holds the index of
    its document in ``documents``.
    """

    def __init__(self, ctx: context.RequestContext, alias: str, reader: context.Reader) -> None:
        from auditlog import get_logentry_model

        LogEntry = get_logentry_model()
        self.alias = alias
        self.connection = connections[alias]
        self.meta = LogEntry._meta
        self.data_field = self.meta.get_field("additional_data")
        self.shared = ctx.record_data(alias, reader)
        # auditlog's set_extra_data sets the LogEntry fields its block names; so do reads.
        settable = {f.attname for f in self.meta.concrete_fields if not f.primary_key} - set(PER_ROW)
        extra = {k: v for k, v in reader.extra.items() if k in settable or k == "additional_data"}
        self.extra_data = extra.pop("additional_data", None)
        shared = {
            "action": LogEntry.Action.ACCESS,
            "changes_text": "",
            "actor_id": reader.actor_id,
            "actor_email": reader.actor_email,
            "cid": ctx.correlation_id(),
            "remote_addr": reader.remote_addr,
            "remote_port": reader.remote_port,
            "timestamp": timezone.now(),
            **extra,
        }
        self.values = shared
        self.per_row = [self.meta.get_field(name) for name in PER_ROW]
        # Columns not set here take their default; NULLs are left to the column.
        self.constant = []
        #: The same values as Python has them: what the entries are, as written.
        self.constant_values: dict[str, Any] = {}
        for field in self.meta.concrete_fields:
            if field.primary_key or field.attname in PER_ROW:
                continue
            value = shared[field.attname] if field.attname in shared else field.get_default()
            self.constant_values[field.attname] = value
            if value is not None:
                self.constant.append((field, field.get_db_prep_save(value, self.connection)))
        self.rows: list[tuple[Any, ...]] = []
        self.documents: list[dict[str, Any]] = []
        self._index_of: dict[tuple[Any, ...], int] = {}
        self._content_types: dict[type[Model], int] = {}

    def add(self, record: Any) -> None:
        from django.contrib.contenttypes.models import ContentType

        model = record.model
        if model not in self._content_types:
            self._content_types[model] = ContentType.objects.db_manager(self.alias).get_for_model(model).pk
        own = model_data(record)
        # Objects read alike share one document, unless the model adds its own data (auditlog's get_additional_data).
        key: tuple[Any, ...] = shape_key(record) if own is None else (id(record),)
        index = self._index_of.get(key)
        if index is None:
            index = self._index_of[key] = len(self.documents)
            document = access_data(self.shared, record)
            for data in (self.extra_data, own):
                if isinstance(data, dict):
                    document = {**data, **document}
                elif data is not None:
                    document = {"value": data, **document}
            self.documents.append(document)
        pk = record.pk
        self.rows.append(
            (self._content_types[model], str(pk), pk if isinstance(pk, int) else None, object_repr(record), index)
        )

    def execute_as_objects(self) -> list[Any]:
        """The entries as saved ``LogEntry`` objects (one ``bulk_create``), for ``post_log``'s receivers."""
        from auditlog import get_logentry_model

        LogEntry = get_logentry_model()
        names = [f.attname for f in self.per_row]
        values = {k: v for k, v in self.values.items() if v is not None}
        entries = []
        for row in self.rows:
            fields = dict(zip(names, row, strict=True))
            fields["additional_data"] = self.documents[row[-1]]
            entries.append(LogEntry(**values, **fields))
        created: list[Any] = LogEntry.objects.using(self.alias).bulk_create(entries)
        if observers:
            notify("access", self.alias, created)
        return created

    def execute(self, returning: bool = False) -> list[Any]:
        """Insert the entries; when ``returning``, the entries as written (``LogEntry``
        objects with their primary keys, from ``RETURNING``: no extra statement, and
        nothing read back for their seal)."""
        if not self.rows:
            return []
        quote = self.connection.ops.quote_name
        self.table = quote(self.meta.db_table)
        self.columns = ", ".join(quote(f.column) for f in [*self.per_row, *(f for f, _ in self.constant)])
        # The key with what tells the rows apart: one object is one entry of a request's reader.
        named = [self.meta.pk, self.meta.get_field("content_type"), self.meta.get_field("object_pk")]
        self.returning = f" RETURNING {', '.join(quote(f.column) for f in named)}" if returning else ""
        self.ids: list[Any] = []
        with self.connection.cursor() as cursor:
            if self.connection.vendor in ARRAY_VENDORS:
                self._by_arrays(cursor)
            else:
                self._by_values(cursor)
        return self.entries(self.ids) if returning else []

    def entries(self, returned: list[Any]) -> list[Any]:
        """The ``LogEntry`` objects the rows are, each with the key ``returned`` names for it."""
        from auditlog import get_logentry_model

        LogEntry = get_logentry_model()
        key_of = {(content_type, str(object_pk)): pk for pk, content_type, object_pk in returned}
        names = [f.attname for f in self.per_row]
        written = []
        for row in self.rows:
            fields = dict(zip(names, row, strict=True))
            fields["additional_data"] = self.documents[row[-1]]
            pk = key_of[(fields["content_type_id"], fields["object_pk"])]
            written.append(LogEntry(pk=pk, **self.constant_values, **fields))
        return written

    def _run(self, cursor: Any, sql: str, params: list[Any]) -> None:
        cursor.execute(sql + self.returning, params)
        if self.returning:
            self.ids.extend(cursor.fetchall())

    def _by_values(self, cursor: Any) -> None:
        """``INSERT ... VALUES (...), (...)``: as many rows a statement as parameters allow."""
        documents = [self.data_field.get_db_prep_save(d, self.connection) for d in self.documents]
        constants = [value for _, value in self.constant]
        width = len(self.per_row) + len(constants)
        placeholder = "(" + ", ".join(["%s"] * width) + ")"
        batch = max(1, min(MAX_ROWS_PER_INSERT, max_query_params(self.connection) // width))
        for start in range(0, len(self.rows), batch):
            chunk = self.rows[start : start + batch]
            params: list[Any] = []
            for row in chunk:
                params.extend(row[:-1])
                params.append(documents[row[-1]])
                params.extend(constants)
            sql = f"INSERT INTO {self.table} ({self.columns}) VALUES " + ", ".join([placeholder] * len(chunk))
            self._run(cursor, sql, params)

    def _by_arrays(self, cursor: Any) -> None:
        """``INSERT ... SELECT FROM unnest(arrays)``: one short statement, one parameter a column.

        Thousands of placeholders make psycopg parse a huge query text on every
        request, and JSON inside an array literal is slow to escape: rows
        carry the index of their document, each document travels once.
        """
        connection = self.connection
        types = ["integer" if f.attname == "additional_data" else f.db_type(connection) for f in self.per_row]
        selects = [
            f"(%s::jsonb[])[u.c{i} + 1]" if f.attname == "additional_data" else f"u.c{i}"
            for i, f in enumerate(self.per_row)
        ] + [f"CAST(%s AS {f.db_type(connection)})" for f, _ in self.constant]
        arrays = ", ".join(f"%s::{t}[]" for t in types)
        names = ", ".join(f"c{i}" for i in range(len(self.per_row)))
        sql = (
            f"INSERT INTO {self.table} ({self.columns}) SELECT {', '.join(selects)} FROM unnest({arrays}) AS u({names})"
        )
        documents = [json.dumps(d, cls=self.data_field.encoder) for d in self.documents]
        for start in range(0, len(self.rows), MAX_ROWS_PER_ARRAY_INSERT):
            chunk = self.rows[start : start + MAX_ROWS_PER_ARRAY_INSERT]
            columns = [list(column) for column in zip(*chunk, strict=True)]
            self._run(cursor, sql, [documents, *(value for _, value in self.constant), *columns])


#: gql_audit's own receivers of auditlog's signals: sending those per object is only worth it for others.
OUR_RECEIVERS = ("gql_audit.defer_access_entry", "gql_audit.log_failed_change_entry")


def insert_access_entries(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, written: bool = False
) -> list[Any]:
    """Few statements whatever the number of entries; auditlog's ``pre_log`` and
    ``post_log`` sent for each entry when a receiver other than gql_audit's listens.
    The entries as written (``LogEntry`` objects) when ``written`` (else none)."""
    from auditlog import get_logentry_model
    from auditlog.signals import post_log, pre_log

    action = get_logentry_model().Action.ACCESS
    models = {record.model for record in records}
    vetoable = {m for m in models if other_receivers(pre_log, m, OUR_RECEIVERS)}
    results: dict[int, Any] = {}
    if vetoable:
        kept = []
        for record in records:
            if record.model in vetoable and isinstance(record.obj, record.model):
                results[id(record)] = pre_log.send(record.model, instance=record.obj, action=action)
                if any(result is False for _, result in results[id(record)]):
                    continue
            kept.append(record)
        records = kept
    insert = AccessInsert(ctx, alias, reader)
    for record in records:
        insert.add(record)
    announced = {m for m in models if other_receivers(post_log, m, OUR_RECEIVERS)}
    if not announced:
        rows = insert.execute(returning=written)
        if observers and records:
            notify("access_cid", alias, [ctx.correlation_id()])
        return rows
    entries = insert.execute_as_objects()
    for record, entry in zip(records, entries, strict=True):
        if record.model in announced:
            post_log.send(
                record.model,
                instance=record.obj,
                instance_old=None,
                action=action,
                error=None,
                pre_log_results=results.get(id(record), []),
                changes=None,
                log_entry=entry,
                log_created=True,
            )
    return entries if written else []
