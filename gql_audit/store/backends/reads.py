"""``ACCESS_STORE = "gql_audit"``: a request's reads as one ``RequestReads`` row.

One INSERT a request, whatever the number of objects. "Who read this object" is
answered by the object index (:mod:`gql_audit.store.index`): on PostgreSQL and
CockroachDB the row's own ``keys``, indexed; on SQLite ``ReadObject`` rows built in
bulk off the request path, the row queued for them by the INSERT's own statement.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from django.db import connections, transaction
from django.utils import timezone

from gql_audit import context
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing
from gql_audit.export import outbox
from gql_audit.models import RequestReads
from gql_audit.redaction import safe_data
from gql_audit.store import index
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
        row = built(ctx, records, alias, reader)
        if not deferred:
            sealing.insert(alias, row)
        counted_when_committed(alias, row)
        return ([row] if sealed or outbox.enabled() else []), ([row] if deferred else [])

    def save_alone(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> bool:
        if sealed and (ctx.changes_to_seal or connections[alias].vendor not in POSTGRES_VENDORS):
            return False
        if not sealing.autocommit(alias):
            return False
        # One statement, its own transaction: the row's INSERT (sealed: with its seal's
        # INSERT and the chain's UPDATE).
        row = built(ctx, records, alias, reader)
        exported = outbox.rows({sealing.READS: [row]})  # EXPORT: its outbox row, in the same statement
        if sealed:
            sealing.seal(alias, {sealing.READS: [row]}, insert=[row, *exported])
        elif exported:
            outbox.insert_together(alias, [row, *exported])
        else:
            sealing.insert(alias, row)
        counted_when_committed(alias, row)
        return True


def built(ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader) -> RequestReads:
    """The request's row, its observers told."""
    row = request_reads_row(ctx, records, alias, reader)
    if observers:
        notify("reads", alias, [row])
    return row


def counted_when_committed(alias: str, row: RequestReads) -> None:
    """The row's objects counted for the index's catch-up once the row is committed (at
    once in autocommit): counted before, a catch-up another thread of the process runs
    meanwhile would take the count without finding the row queued, and leave it there
    until the next catch-up was due."""
    if index.queued(alias):
        transaction.on_commit(partial(index.wrote, alias, len(row.keys)), using=alias)


def request_reads_row(
    ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader
) -> RequestReads:
    """The ``RequestReads`` row of ``records`` read by ``reader``, not yet saved."""
    data = ctx.record_context(alias)
    actor = reader.actor
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
        position = index_of.get(read_alike)
        if position is None:
            position = index_of[read_alike] = len(shapes)
            shapes.append(shape(record))
        keys.append(record.key or object_key(record.model, record.pk))
        shape_of.append(position)
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
