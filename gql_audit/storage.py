"""Writing what a request recorded: access entries and security events.

``flush`` runs in ``AuditContextMiddleware`` after the view returned, so it is
outside the view's transaction (``ATOMIC_REQUESTS``, ``ATOMIC_MUTATIONS``): a
rollback of the request cannot take the audit rows with it. Everything is
written in one transaction on ``AUDIT_DATABASE``, access entries with one
multi-row INSERT per batch. If the write fails, every record goes, complete, to
the ``gql_audit.audit`` logger as JSON, and with ``FAIL_CLOSED`` the response
is replaced by a 503.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from django.db import connections, transaction
from django.db.models import Model
from django.utils import timezone
from django.utils.encoding import smart_str

from gql_audit import context, sealing
from gql_audit.access import add_read
from gql_audit.compat import other_receivers
from gql_audit.conf import conf
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.errors import sqlstate_of
from gql_audit.logging import log_payload
from gql_audit.models import ReadObject, RequestReads, SecurityEvent
from gql_audit.redaction import safe_data, safe_text

logger = logging.getLogger("gql_audit.storage")
audit_logger = logging.getLogger("gql_audit.audit")
security_logger = logging.getLogger("gql_audit.security")

#: Rows per INSERT at most, whatever the driver allows: bounds statement size.
MAX_ROWS_PER_INSERT = 2000
MAX_ROWS_PER_ARRAY_INSERT = 10000
#: After a failed write, records are tried one by one, this many at most.
MAX_SINGLE_RETRIES = 200


def audit_alias() -> str:
    alias: str = conf.AUDIT_DATABASE or "default"
    return alias


def _object_repr(record: Any) -> str:
    if isinstance(record.obj, record.model):
        try:
            return safe_text(smart_str(record.obj))
        except Exception:  # noqa: BLE001 - a broken __str__ must not lose the entry
            pass
    return safe_text(f"{record.model._meta.label} {record.pk}")


def merge_records(ctx: context.RequestContext) -> list[Any]:
    """The request's access records, one per object (model and primary key), fields
    and paths merged, each with its ``key`` (``"app_label.model:pk"``)."""
    merged: dict[str, Any] = {}
    prefixes: dict[type[Model], str] = {}
    for record in (ctx.accessed or {}).values():
        model = record.model
        prefix = prefixes.get(model)
        if prefix is None:
            prefix = prefixes[model] = f"{model._meta.label_lower}:"
        pk = record.pk
        key = prefix + (str(pk) if pk.__class__ is int else safe_text(str(pk)))
        seen = merged.get(key)
        if seen is None:
            record.key = key
            merged[key] = record
        elif seen is not record:
            add_read(seen, record.paths, record.fields)
    return list(merged.values())


def shape_key(record: Any) -> tuple[frozenset[str], frozenset[str]]:
    """How an object was read (its fields and paths): objects read alike are stored alike, once."""
    return record.fields, record.paths


def shape(record: Any) -> dict[str, list[str]]:
    """The fields read on an object (GraphQL's ``__typename`` is not one of them) and its paths, sorted."""
    return {
        "fields": sorted(name for name in record.fields if not name.startswith("__")),
        "paths": sorted(record.paths),
    }


def access_data(shared: dict[str, Any], record: Any) -> dict[str, Any]:
    """``additional_data`` of an ACCESS entry: the request's context (``shared``,
    from ``RequestContext.record_data``) with the object's own paths and fields."""
    read = shape(record)
    return {"gql_audit": {**shared, "path": read["paths"], "fields": read["fields"]}}


def describe(ctx: context.RequestContext, alias: str, records: list[Any]) -> list[dict[str, Any]]:
    """The entries as plain data, for the logs: what the rows would have held."""
    now = timezone.now()
    entries: list[dict[str, Any]] = []
    for reader, group in by_reader(ctx, records):
        shared = {**ctx.record_data(alias), "actor": reader.actor, "remote_addr": reader.remote_addr}
        entries.extend(
            {
                "model": record.model._meta.label,
                "object_pk": str(record.pk),
                "object_repr": _object_repr(record),
                "actor_id": reader.actor_id,
                "actor_email": reader.actor_email,
                "cid": ctx.correlation_id(),
                "remote_addr": reader.remote_addr,
                "remote_port": reader.remote_port,
                "timestamp": now,
                **access_data(shared, record),
            }
            for record in group
        )
    return entries


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
        self.shared = {**ctx.record_data(alias), "actor": reader.actor, "remote_addr": reader.remote_addr}
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
        for field in self.meta.concrete_fields:
            if field.primary_key or field.attname in PER_ROW:
                continue
            value = shared[field.attname] if field.attname in shared else field.get_default()
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
        own = _model_data(record)
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
            (self._content_types[model], str(pk), pk if isinstance(pk, int) else None, _object_repr(record), index)
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
        """Insert the entries; their primary keys when ``returning`` (``RETURNING``, no extra statement)."""
        if not self.rows:
            return []
        quote = self.connection.ops.quote_name
        self.table = quote(self.meta.db_table)
        self.columns = ", ".join(quote(f.column) for f in [*self.per_row, *(f for f, _ in self.constant)])
        self.returning = f" RETURNING {quote(self.meta.pk.column)}" if returning else ""
        self.ids: list[Any] = []
        with self.connection.cursor() as cursor:
            if self.connection.vendor in ARRAY_VENDORS:
                self._by_arrays(cursor)
            else:
                self._by_values(cursor)
        return self.ids

    def _run(self, cursor: Any, sql: str, params: list[Any]) -> None:
        cursor.execute(sql + self.returning, params)
        if self.returning:
            self.ids.extend(row[0] for row in cursor.fetchall())

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


def _model_data(record: Any) -> Any:
    """The model's own ``get_additional_data()`` for this object (auditlog calls it for every entry), or None."""
    method = getattr(record.obj, "get_additional_data", None) if isinstance(record.obj, record.model) else None
    if not callable(method):
        return None
    try:
        return safe_data(method())
    except Exception:  # noqa: BLE001 - a broken method must not lose the read
        logger.exception("%s.get_additional_data() failed", record.model._meta.label)
        return None


#: gql_audit's own receivers of auditlog's signals: sending those per object is only worth it for others.
OUR_RECEIVERS = ("gql_audit.defer_access_entry", "gql_audit.log_failed_change_entry")


def insert_access_entries(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, ids: bool = False
) -> list[Any]:
    """Few statements whatever the number of entries; auditlog's ``pre_log`` and
    ``post_log`` sent for each entry when a receiver other than gql_audit's listens.
    The primary keys of the entries when ``ids`` (else none)."""
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
        written = insert.execute(returning=ids)
        if observers and records:
            notify("access_cid", alias, [ctx.correlation_id()])
        return written
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
    return [entry.pk for entry in entries]


def by_reader(ctx: context.RequestContext, records: list[Any]) -> list[tuple[context.Reader, list[Any]]]:
    """The records grouped by who read them: the request's user, or an auditlog
    ``set_actor`` / ``set_extra_data`` block in force when they were read."""
    first = records[0].block if records else None
    if all(record.block is first for record in records):
        return [(ctx.reader(first), records)]
    groups: dict[int, tuple[Any, list[Any]]] = {}
    for record in records:
        groups.setdefault(id(record.block), (record.block, []))[1].append(record)
    return [(ctx.reader(block), group) for block, group in groups.values()]


def object_key(model: type[Model], pk: Any) -> str:
    """``"app_label.model:pk"``: how the ``gql_audit`` store names an object it indexes."""
    return f"{model._meta.label_lower}:{safe_text(str(pk))}"


def insert_request_reads(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, deferred: bool = False
) -> RequestReads:
    """``ACCESS_STORE = "gql_audit"``: the request's reads as one row (and, where the
    database cannot index an array, one narrow row per object, in one statement).
    ``deferred``: the row is built, and left for the seal's statement to INSERT
    (PostgreSQL and CockroachDB, ``TAMPER_EVIDENCE``)."""
    row = request_reads_row(ctx, records, alias, reader)
    if not deferred:
        RequestReads.objects.using(alias).bulk_create([row])
    if observers:
        notify("reads", alias, [row])
    _side_table(row, row.keys, alias)
    return row


def request_reads_row(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader
) -> RequestReads:
    """The ``RequestReads`` row of ``records`` read by ``reader``, not yet saved."""
    data = ctx.record_data(alias)
    actor = reader.actor
    for key in ("request_id", "operation", "remote_addr", "path", "actor"):
        data.pop(key, None)
    if reader.remote_port is not None:
        data["remote_port"] = reader.remote_port
    if reader.extra:
        data["extra_data"] = safe_data(reader.extra)
    if ctx.correlation_id() != ctx.request_id:
        data["cid"] = ctx.correlation_id()
    keys: list[str] = []
    shape_of: list[int] = []
    shapes: list[dict[str, list[str]]] = []
    index_of: dict[tuple[frozenset[str], frozenset[str]], int] = {}
    for record in records:
        read_alike = (record.fields, record.paths)
        index = index_of.get(read_alike)
        if index is None:
            index = index_of[read_alike] = len(shapes)
            shapes.append(shape(record))
        keys.append(record.key or object_key(record.model, record.pk))
        shape_of.append(index)
    row = RequestReads(
        at=timezone.now(),
        request_id=ctx.request_id,
        actor_id=str(actor["id"]) if actor else None,
        actor=actor,
        remote_addr=reader.remote_addr,
        operation=ctx.operation,
        context=data,
        keys=keys,
        shape_of=shape_of,
        shapes=shapes,
    )
    return row


def _side_table(row: RequestReads, keys: list[str], alias: str) -> None:
    """:class:`ReadObject` rows, where the database cannot index ``keys`` (one statement)."""
    connection = connections[alias]
    if connection.vendor not in POSTGRES_VENDORS:
        meta = ReadObject._meta
        quote = connection.ops.quote_name
        fields: list[Any] = [meta.get_field(name) for name in ("reads_id", "key", "at")]
        columns = ", ".join(quote(f.column) for f in fields)
        reads_id = fields[0].get_db_prep_save(row.id, connection)
        at = fields[2].get_db_prep_save(row.at, connection)
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {quote(meta.db_table)} ({columns}) VALUES (%s, %s, %s)",
                [(reads_id, key, at) for key in keys],
            )


def insert_events(events: list[dict[str, Any]], alias: str) -> list[Any]:
    rows = SecurityEvent.objects.using(alias).bulk_create([SecurityEvent(**event) for event in events])
    if observers:
        notify("events", alias, rows)
    return [row.pk for row in rows]


#: Callables told of every row written: ``(kind, alias, rows)`` with ``kind`` one of
#: ``"reads"`` (``RequestReads``), ``"access"`` (ACCESS ``LogEntry``), ``"events"``, or
#: ``"access_cid"`` (the correlation id of ACCESS entries written without objects).
#: ``gql_audit.testing.capture()`` listens here; empty, it costs one truthiness test.
observers: list[Any] = []


def notify(kind: str, alias: str, rows: list[Any]) -> None:
    for observer in list(observers):
        observer(kind, alias, rows)


def log_records(entries: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """The records as log lines: access entries to ``gql_audit.audit``, events to ``gql_audit.security``."""
    for entry in entries:
        log_payload(audit_logger, logging.INFO, {"event": "access", **entry})
    for event in events:
        log_payload(security_logger, logging.WARNING, {"event": "security_event", **event})


def log_unwritten(
    entries: list[dict[str, Any]],
    events: list[dict[str, Any]],
    exc: BaseException,
    ctx: context.RequestContext | None = None,
) -> None:
    """Nothing is silently lost: every record goes to the log, one JSON object a line."""
    error = _error_text(exc, ctx)
    log_payload(
        audit_logger,
        logging.ERROR,
        {
            "event": "audit_write_failed",
            "error": error,
            "access_entries": len(entries),
            "security_events": len(events),
        },
    )
    for entry in entries:
        log_payload(audit_logger, logging.ERROR, {"event": "access", **entry})
    for event in events:
        log_payload(audit_logger, logging.ERROR, {"event": "security_event", **event})


def _store(
    ctx: context.RequestContext | None,
    records: list[Any],
    events: list[dict[str, Any]],
    alias: str,
    seal: bool = True,
) -> None:
    """Write the records, and seal them in the same transaction (``TAMPER_EVIDENCE``):
    no savepoint, so a seal that fails takes the records with it, and ``write`` tries
    again without the seal."""
    sealed = seal and sealing.enabled()
    gql_audit_store = conf.ACCESS_STORE == "gql_audit"
    postgres = connections[alias].vendor in POSTGRES_VENDORS
    groups = by_reader(ctx, records) if records and ctx is not None else []
    if ctx is not None and len(groups) == 1 and gql_audit_store and postgres and not events:
        if not (sealed and ctx.changes_to_seal) and sealing.autocommit(alias):
            # One statement, its own transaction: the reads row's INSERT (sealed: with its
            # seal's INSERT and the chain's UPDATE).
            [(reader, group)] = groups
            row = insert_request_reads(ctx, group, alias, reader, deferred=True)
            if sealed:
                sealing.seal(alias, {sealing.READS: [row]}, insert=[row])
            else:
                sealing.insert(alias, row)
            return
    written: dict[str, list[Any]] = {sealing.READS: [], sealing.ENTRY: [], sealing.EVENT: []}
    with transaction.atomic(using=alias):
        # Sealed on PostgreSQL, the reads row is inserted by the seal's own statement: one round trip.
        deferred = sealed and postgres
        if ctx is not None:
            for reader, group in groups:
                if gql_audit_store:
                    written[sealing.READS].append(insert_request_reads(ctx, group, alias, reader, deferred))
                else:
                    written[sealing.ENTRY].extend(insert_access_entries(ctx, group, alias, reader, ids=sealed))
        if events:
            written[sealing.EVENT] = insert_events(events, alias)
        if sealed:
            changes = ctx.changes_to_seal if ctx is not None else []
            written[sealing.ENTRY].extend(changes)
            rows = written[sealing.READS] if deferred else []
            sealing.seal(alias, written, insert=rows)
    if sealed and ctx is not None:
        ctx.changes_to_seal = []


def _error_text(exc: BaseException, ctx: context.RequestContext | None) -> str:
    text = f"{type(exc).__name__}: {exc}"[:1000]
    return ctx.scrubber().text(text) if ctx is not None else text


def _seal_failed(exc: BaseException, ctx: context.RequestContext | None, written: dict[str, Any] | None = None) -> None:
    """The fallback log's line for records written without their seal (the thread's next
    seal starts a new chain: whether this one's position was taken cannot be known)."""
    sealing.forget()
    payload = {"event": "seal_failed", "error": _error_text(exc, ctx), **(written or {})}
    log_payload(audit_logger, logging.ERROR, payload)


def seal_quietly(alias: str, written: dict[str, list[Any]]) -> None:
    """Seal what was just written; a seal that cannot be written must not lose the records
    (they are written unsealed, and the fallback log says so)."""
    try:
        with transaction.atomic(using=alias):
            sealing.seal(alias, written)
    except Exception as exc:  # noqa: BLE001 - the records matter more than their seal
        _seal_failed(exc, None, written)


#: SQLite result codes of a statement the database refused for its content or
#: its table (ERROR: "no such table", TOOBIG, CONSTRAINT, MISMATCH, RANGE): the
#: database itself answers, so other records may still be written.
SQLITE_RECORD_ERRORS = frozenset({1, 18, 19, 20, 25})
#: SQLSTATE classes of a database that is not answering: connection (08),
#: resources (53), operator intervention and timeouts (57), system (58).
UNREACHABLE_CLASSES = frozenset({"08", "53", "57", "58"})


def _unreachable(exc: BaseException) -> bool:
    """Whether trying again, record by record, is pointless: the database is not
    answering, or each try would wait out a lock or a timeout again."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = sqlstate_of(exc)
    if sqlstate:
        return sqlstate[:2] in UNREACHABLE_CLASSES
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) not in SQLITE_RECORD_ERRORS
    return True


def _refused_for_content(exc: BaseException) -> bool:
    """Whether the database refused a statement for a value in it (SQLSTATE classes
    22 and 23, SQLite's constraint, mismatch, size and range codes, an encoder's
    error): then trying the records one by one finds the one refused. A missing
    table or privilege would refuse every record alike."""
    from django.db import DataError, IntegrityError

    if isinstance(exc, (DataError, IntegrityError, ValueError)):
        return True
    sqlstate = sqlstate_of(exc)
    if sqlstate:
        return sqlstate[:2] in ("22", "23")
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in SQLITE_RECORD_ERRORS - {1}


def _store_apart(
    ctx: context.RequestContext | None, records: list[Any], events: list[dict[str, Any]], alias: str
) -> tuple[list[Any], list[dict[str, Any]], BaseException | None]:
    """After a failed write: each kind on its own, then, where a value was refused,
    each record, so that one record the database refuses cannot take the others
    with it. Returns what still could not be written and the last error."""
    failed_records: list[Any] = []
    failed_events: list[dict[str, Any]] = []
    error: BaseException | None = None
    budget = MAX_SINGLE_RETRIES
    for kind_records, kind_events, failed in ((records, [], failed_records), ([], events, failed_events)):
        batch = kind_records or kind_events
        if not batch:
            continue
        if error is not None and _unreachable(error):
            failed.extend(batch)
            continue
        try:
            _store(ctx, kind_records, kind_events, alias)
            continue
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            error = exc
        for item in batch:
            if budget <= 0 or not _refused_for_content(error):
                failed.append(item)
                continue
            budget -= 1
            try:
                _store(ctx, [item] if kind_records else [], [item] if kind_events else [], alias)
            except Exception as exc:  # noqa: BLE001 - this one goes to the log
                error = exc
                failed.append(item)
    return failed_records, failed_events, error


def _entries_for_log(ctx: context.RequestContext | None, records: list[Any], alias: str) -> list[dict[str, Any]]:
    if ctx is None or not records:
        return []
    try:
        return describe(ctx, alias, records)
    except Exception:  # noqa: BLE001 - still log what can be said without the database
        return [{"model": r.model._meta.label, "object_pk": str(r.pk), "fields": sorted(r.fields)} for r in records]


def write(ctx: context.RequestContext | None, records: list[Any], events: list[dict[str, Any]], alias: str) -> bool:
    """Write both kinds; what cannot be written goes, complete, to the log. True when all was written."""
    if not records and not events:
        if ctx is not None and ctx.changes_to_seal and sealing.enabled():
            try:
                _store(ctx, [], [], alias)
            except Exception as exc:  # noqa: BLE001 - sealing must not fail the request
                _seal_failed(exc, ctx)
        return True
    sink = conf.EVENT_SINK
    if sink != "database":
        log_records(_entries_for_log(ctx, records, alias), events)
        if sink == "logs":
            return True
    try:
        _store(ctx, records, events, alias)
        return True
    except Exception as exc:  # noqa: BLE001 - the request must not fail because auditing did
        error: BaseException = exc
    if sealing.enabled() and not _unreachable(error):
        # Maybe the seal failed, not the records: they matter more than their seal.
        try:
            _store(ctx, records, events, alias, seal=False)
        except Exception as exc:  # noqa: BLE001 - the records themselves were refused
            error = exc
        else:
            _seal_failed(error, ctx)
            return True
    if not _unreachable(error):
        records, events, last = _store_apart(ctx, records, events, alias)
        if not records and not events:
            return True
        error = last or error
    log_unwritten(_entries_for_log(ctx, records, alias), events, error, ctx)
    return False


def write_now(*, events: list[dict[str, Any]]) -> bool:
    """Write events recorded outside a request."""
    return write(None, [], events, audit_alias())


def flush(ctx: context.RequestContext) -> bool:
    """Write the request's records; True when all of them reached the database
    (what could not went, complete, to the fallback log)."""
    alias = audit_alias()
    events = list(ctx.events.values())
    if events:
        scrubber = ctx.scrubber()
        for event in events:
            # Recorded before the operation was known (at authentication): it is now.
            if event["operation"] is None:
                event["operation"] = ctx.operation
            if scrubber:
                event["message"] = scrubber.text(event["message"])
                event["details"] = scrubber.data(event["details"])
    records = merge_records(ctx)
    ctx.objects_accessed = len(records)
    # Closed while writing: auditlog's pre_log, sent for the entries, must not
    # route them back into the request's records.
    tracking, ctx.accessed = ctx.accessed is not None, None
    written = write(ctx, records, events, alias)
    ctx.accessed = {} if tracking else None
    ctx.events = {}
    return written
