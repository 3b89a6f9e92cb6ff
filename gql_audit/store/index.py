"""The object index of reads: which requests read an object, newest first.

PostgreSQL and CockroachDB index ``RequestReads.keys`` itself (a GIN index, an inverted
index): the row is its own index entry. SQLite cannot index inside a JSON array, so
there :class:`~gql_audit.models.ReadObject` holds one ``(reads_id, key, at)`` row per
object read, indexed by ``(key, at)``; inserting a thousand of those into an index of
millions costs a request far more than its own row (each lands on another page), so
they are built in bulk, off the request path:

- a trigger queues every new ``RequestReads`` row in :class:`~gql_audit.models.ReadIndexQueue`,
  in the INSERT's own statement: the row and its place in the queue commit together,
  whatever wrote the row, and no crash between them can lose it;
- :func:`catch_up` moves queued rows into ``ReadObject`` in one statement per batch
  (the keys taken from the rows' JSON by SQLite, sorted, so that each page of the index
  is written once for many entries) and removes them from the queue, in one transaction:
  a crash leaves both as they were;
- each process catches up after a response (``request_finished``, when the client has
  it) or a Celery task, once its writes since the last time hold :data:`CATCH_UP_KEYS` keys;
- readers search the index and the queued rows together, in one statement (one
  snapshot), so a read is found the moment its row is committed, indexed or not.

The rows stay the truth: the index only finds candidate rows, and every read is taken
from its row's own ``keys``, so an index row naming an object its row does not hold
adds nothing. ``gql_audit_verify`` reports a sealed row that is neither queued nor
wholly indexed (an index row deleted or moved would hide a read from the index).
"""

from __future__ import annotations

import datetime
import json
import logging
import threading
from typing import Any

from django.db import connections, transaction
from django.db.models import Q, QuerySet
from django.db.models.expressions import RawSQL

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import ReadIndexQueue, ReadObject, RequestReads

logger = logging.getLogger("gql_audit.store")

#: A process catches up once the rows it wrote since it last did hold this many keys
#: (objects): large enough that each page of the index is written once for many
#: entries, small enough that readers scan few queued rows and a catch-up takes
#: milliseconds.
CATCH_UP_KEYS = 20_000
#: Queued rows indexed per transaction: a long backlog is indexed in short transactions,
#: so that the requests' own writes never wait long behind it.
BATCH_ROWS = 500

_ROWS = RequestReads._meta.db_table
_INDEX = ReadObject._meta.db_table
_QUEUE = ReadIndexQueue._meta.db_table

#: Up to this many objects, queued rows are narrowed down by their text before their JSON is walked.
FEW_KEYS = 8
#: PostgreSQL: the newest reads of an object are first looked for among the newest
#: ``PROBE_ROWS * limit`` rows (an object read often is there), then in the object index.
PROBE_ROWS = 10

_written: dict[str, int] = {}
_lock = threading.Lock()


def queued(alias: str) -> bool:
    """Whether rows written on ``alias`` wait in the queue to be indexed (SQLite)."""
    return connections[alias].vendor not in POSTGRES_VENDORS


def wrote(alias: str, keys: int) -> None:
    """The store wrote a row of ``keys`` objects on ``alias``, queued for the index."""
    with _lock:
        _written[alias] = _written.get(alias, 0) + keys


def catch_up_when_due(**kwargs: Any) -> None:
    """Catch up where this process wrote :data:`CATCH_UP_KEYS` keys since it last did: after
    a response (``request_finished``, the client has it) and after a task. A failure is
    logged; the rows stay queued (and found by readers) until the next catch-up."""
    if not _written:
        return
    with _lock:
        due = [alias for alias, keys in _written.items() if keys >= CATCH_UP_KEYS]
        for alias in due:
            _written[alias] = 0
    for alias in due:
        connection = connections[alias]
        closed = connection.connection is None
        try:
            catch_up(alias)
        except Exception:  # noqa: BLE001 - the rows stay queued: the next catch-up takes them
            logger.warning("the object index of reads could not catch up on %r", alias, exc_info=True)
        finally:
            if closed:  # as the request left it (CONN_MAX_AGE = 0 closed it already)
                connection.close()


def catch_up(alias: str) -> int:
    """Index every queued row on ``alias``, :data:`BATCH_ROWS` a transaction; how many rows."""
    if not queued(alias):
        return 0
    connection = connections[alias]
    quote = connection.ops.quote_name
    batch = f"SELECT {quote('id')} FROM {quote(_QUEUE)} ORDER BY {quote('id')} LIMIT {BATCH_ROWS}"
    # The INSERT comes first: it takes the write lock before reading the queue, so
    # that no other writer's commit can make this transaction's reads stale.
    index = (
        f"INSERT INTO {quote(_INDEX)} (reads_id, key, at) "
        f"SELECT r.id, j.value, r.at FROM {quote(_QUEUE)} q JOIN {quote(_ROWS)} r ON r.id = q.reads_id, "
        f"json_each(r.keys) j WHERE q.id IN ({batch}) ORDER BY j.value, r.at"
    )
    done = 0
    while True:
        with transaction.atomic(using=alias), connection.cursor() as cursor:
            cursor.execute(index)
            cursor.execute(f"DELETE FROM {quote(_QUEUE)} WHERE {quote('id')} IN ({batch})")
            count: int = cursor.rowcount
        done += count
        if count < BATCH_ROWS:
            return done


#: What :func:`reads` hands back of each read: its row's columns, then the object's key and
#: the index of its shape in ``shapes``.
READ_COLUMNS = ("at", "request_id", "actor", "remote_addr", "operation", "shapes")


def reads(
    alias: str,
    keys: list[str],
    *,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
    limit: int | None = None,
) -> list[tuple[Any, ...]]:
    """The reads of the objects ``keys`` (``"app_label.model:pk"``), newest first (the newest
    ``limit`` of them): for each, the values of :data:`READ_COLUMNS` of its row as the ORM
    reads them, its key and its shape's index. Found and sorted in SQL; no row's ``keys``
    or ``shape_of`` leaves the database. ``since`` and ``until``: the reads written at or
    after, at or before."""
    if not keys or limit == 0:
        return []
    connection = connections[alias]
    fields: list[Any] = [RequestReads._meta.get_field(name) for name in READ_COLUMNS]
    at_field: Any = RequestReads._meta.get_field("at")
    window = [
        (operator, at_field.get_db_prep_value(moment, connection))
        for operator, moment in ((">=", since), ("<=", until))
        if moment is not None
    ]
    if connection.vendor in POSTGRES_VENDORS:
        found = _postgres_reads(connection, keys, window, limit)
    else:
        found = _sqlite_reads(connection, keys, window, limit)
    convert = [_converters(field, connection) for field in fields]
    # Rows of one actor, one operation or one way of reading share that JSON column's
    # text: each text is decoded once (its value shared, as one row's reads share it).
    decoded: dict[tuple[int, Any], Any] = {}

    def value(n: int, raw: Any) -> Any:
        if n not in _JSON_COLUMNS:
            return _apply(convert[n], raw)
        if (n, raw) not in decoded:
            decoded[n, raw] = _apply(convert[n], raw)
        return decoded[n, raw]

    return [(*(value(n, raw) for n, raw in enumerate(row[:6])), row[6], _shape_index(row[7])) for row in found]


#: The columns of :data:`READ_COLUMNS` holding JSON (text from the database, never a list or dict).
_JSON_COLUMNS = frozenset(n for n, name in enumerate(READ_COLUMNS) if name in ("actor", "operation", "shapes"))


def _postgres_reads(
    connection: Any, keys: list[str], window: list[tuple[str, Any]], limit: int | None
) -> list[tuple[Any, ...]]:
    rows = connection.ops.quote_name(_ROWS)
    json_field: Any = RequestReads._meta.get_field("keys")
    contained = [json_field.get_db_prep_value([key], connection) for key in keys]
    since = "".join(f" AND at {operator} %s" for operator, _ in window)
    moments = [moment for _, moment in window]
    ids: list[Any] | None = None
    if limit is not None:
        # An object read often: its newest reads are among the newest rows, found by
        # walking the time index back a few times ``limit`` rows; if they hold fewer than
        # ``limit`` reads of it, the object index finds them all instead.
        tests = " OR ".join(["keys @> %s"] * len(keys))
        probe = (
            f"SELECT id FROM (SELECT id, at, keys FROM {rows} WHERE TRUE{since} ORDER BY at DESC "
            f"LIMIT {PROBE_ROWS * int(limit)}) recent WHERE {tests} ORDER BY at DESC LIMIT {int(limit)}"
        )
        with connection.cursor() as cursor:
            cursor.execute(probe, [*moments, *contained])
            found = [row_id for (row_id,) in cursor.fetchall()]
        if len(found) == limit:
            ids = found
    if ids is None:
        # The object index, one containment test a statement part: each row found is
        # checked against the one object it was found for (an OR would check every row
        # against every object). MATERIALIZED: an ORDER BY ... LIMIT beside the tests
        # would tempt the planner into walking the time index through every row.
        each = f"SELECT id, at FROM {rows} WHERE keys @> %s{since}"
        params: list[Any] = []
        for value in contained:
            params.extend([value, *moments])
        sql = f"WITH found AS MATERIALIZED ({' UNION ALL '.join([each] * len(keys))}) SELECT DISTINCT id, at FROM found"
        if limit is not None:
            # Each row holds at least one of the reads: the newest ``limit`` are in the newest ``limit`` rows.
            sql += f" ORDER BY at DESC LIMIT {int(limit)}"
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            ids = [row_id for row_id, _ in cursor.fetchall()]
    if not ids:
        return []
    quote = connection.ops.quote_name
    columns = ", ".join(f"r.{quote(name)}" for name in READ_COLUMNS)
    # The reads taken from their rows; with one object, each row holds it (it was found
    # for it), and its shape is the row's only one, or found by walking the row's keys.
    if len(keys) == 1:
        sql = (
            f"SELECT {columns}, %s::text, CASE WHEN jsonb_array_length(r.shapes) = 1 THEN '0' ELSE ("
            "SELECT r.shape_of ->> (e.i - 1)::int FROM jsonb_array_elements_text(r.keys) WITH ORDINALITY AS e(v, i) "
            f"WHERE e.v = %s LIMIT 1) END FROM {rows} r WHERE r.id = ANY(%s)"
        )
        params = [keys[0], keys[0], ids]
    else:
        sql = (
            f"SELECT {columns}, e.v, r.shape_of ->> (e.i - 1)::int FROM {rows} r "
            "CROSS JOIN LATERAL jsonb_array_elements_text(r.keys) WITH ORDINALITY AS e(v, i) "
            "WHERE r.id = ANY(%s) AND e.v = ANY(%s)"
        )
        params = [ids, list(keys)]
    sql += " ORDER BY r.at DESC" + (f" LIMIT {int(limit)}" if limit is not None else "")
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _sqlite_reads(
    connection: Any, keys: list[str], window: list[tuple[str, Any]], limit: int | None
) -> list[tuple[Any, ...]]:
    quote = connection.ops.quote_name
    marks = ", ".join(["%s"] * len(keys))
    since = [moment for _, moment in window]
    within = "".join(f" AND at {operator} %s" for operator, _ in window)
    within_row = "".join(f" AND r.at {operator} %s" for operator, _ in window)
    params: list[Any] = [*keys, *since]
    indexed = f"SELECT reads_id, key, at FROM {quote(_INDEX)} WHERE key IN ({marks}){within}"
    if limit is not None:
        indexed = f"SELECT * FROM ({indexed} ORDER BY at DESC LIMIT {int(limit)})"
    # Queued rows are searched whole; for a few objects, only the rows whose text holds
    # one of them as the store spells it (instr is far cheaper than walking the JSON).
    spelled = [json.dumps(key) for key in keys] if len(keys) <= FEW_KEYS else []
    holding = " OR ".join(["instr(r.keys, %s) > 0"] * len(spelled))
    waiting = (
        f"SELECT r.id, j.value, r.at FROM {quote(_QUEUE)} q JOIN {quote(_ROWS)} r ON r.id = q.reads_id"
        f"{f' AND ({holding})' if holding else ''}, json_each(r.keys) j "
        f"WHERE j.value IN ({marks}){within_row}"
    )
    params.extend([*spelled, *keys, *since])
    # One statement, one snapshot: a row is either queued or indexed in it.
    found = f"SELECT reads_id, key, at FROM ({indexed} UNION ALL {waiting}) ORDER BY at DESC"
    if limit is not None:
        found += f" LIMIT {int(limit)}"
    columns = ", ".join(f"r.{quote(name)}" for name in READ_COLUMNS)
    # The reads taken from their rows: the key is looked for in the row's keys as the
    # store spells it (a JSON string after "[" or ", "), else, exactly, among its
    # elements (a row not written by the store); the shape is the row's only one, or
    # found by walking the keys.
    sql = (
        f"SELECT {columns}, f.key, CASE WHEN json_array_length(r.shapes) = 1 THEN 0 ELSE ("
        "SELECT json_extract(r.shape_of, '$[' || e.key || ']') FROM json_each(r.keys) e WHERE e.value = f.key "
        f"LIMIT 1) END FROM ({found}) f JOIN {quote(_ROWS)} r ON r.id = f.reads_id "
        "WHERE (substr(r.keys, 1, length(json_quote(f.key)) + 1) = '[' || json_quote(f.key) "
        "OR instr(r.keys, ', ' || json_quote(f.key)) > 0 "
        "OR EXISTS (SELECT 1 FROM json_each(r.keys) e WHERE e.value = f.key)) ORDER BY f.at DESC"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return list(cursor.fetchall())


def _converters(field: Any, connection: Any) -> tuple[Any, Any, list[Any]]:
    """How the ORM turns what ``field``'s column returns into its value."""
    expression = field.get_col(field.model._meta.db_table)
    converters = [*connection.ops.get_db_converters(expression), *expression.get_db_converters(connection)]
    return expression, connection, converters


def _apply(how: tuple[Any, Any, list[Any]], value: Any) -> Any:
    expression, connection, converters = how
    for converter in converters:
        value = converter(value, expression, connection)
    return value


def _shape_index(value: Any) -> int:
    """The index of a read's shape as stored; -1 (no shape) when it is not one."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def reading(queryset: QuerySet[Any], key: str) -> QuerySet[Any]:
    """``RequestReads`` rows of ``queryset`` holding a read of the object ``key``."""
    connection = connections[queryset.db]
    if connection.vendor in POSTGRES_VENDORS:
        return queryset.filter(keys__contains=[key])  # the index on keys
    quote = connection.ops.quote_name
    ids = RawSQL(
        f"SELECT reads_id FROM {quote(_INDEX)} WHERE key = %s UNION ALL "
        f"SELECT r.id FROM {quote(_QUEUE)} q JOIN {quote(_ROWS)} r ON r.id = q.reads_id, json_each(r.keys) j "
        "WHERE j.value = %s",
        [key, key],
    )
    return queryset.filter(Q(id__in=ids))
