"""``ACCESS_STORE = "gql_audit"``: a request's reads as one ``RequestReads`` row.

Where the database cannot index an array (SQLite), one narrow ``ReadObject`` row per
object answers "who read this object", written in one statement.
"""

from __future__ import annotations

from typing import Any

from django.db import connections
from django.utils import timezone

from gql_audit import context
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing
from gql_audit.export import outbox
from gql_audit.models import ReadObject, RequestReads
from gql_audit.redaction import safe_data
from gql_audit.store.backends import AccessStore
from gql_audit.store.observe import notify, observers
from gql_audit.store.records import object_key, shape


class ReadsStore(AccessStore):
    seal_kind = sealing.READS

    def save(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> tuple[list[Any], list[Any]]:
        # Sealed on PostgreSQL, the row is inserted by the seal's own statement: one round trip.
        deferred = sealed and connections[alias].vendor in POSTGRES_VENDORS
        row = insert_request_reads(ctx, records, alias, reader, deferred=deferred)
        return ([row] if sealed or outbox.enabled() else []), ([row] if deferred else [])

    def save_alone(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> bool:
        if connections[alias].vendor not in POSTGRES_VENDORS or (sealed and ctx.changes_to_seal):
            return False
        if not sealing.autocommit(alias):
            return False
        # One statement, its own transaction: the row's INSERT (sealed: with its seal's
        # INSERT and the chain's UPDATE).
        row = insert_request_reads(ctx, records, alias, reader, deferred=True)
        exported = outbox.rows({sealing.READS: [row]})  # EXPORT: its outbox row, in the same statement
        if sealed:
            sealing.seal(alias, {sealing.READS: [row]}, insert=[row, *exported])
        elif exported:
            outbox.insert_together(alias, [row, *exported])
        else:
            sealing.insert(alias, row)
        return True


def insert_request_reads(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, deferred: bool = False
) -> RequestReads:
    """The request's reads as one row (and, where the database cannot index an array,
    one narrow row per object, in one statement). ``deferred``: the row is built, and
    left for the seal's statement to INSERT (PostgreSQL and CockroachDB)."""
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
    return RequestReads(
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
