"""The records an outbox names, loaded in a few queries and laid out as plain JSON.

The plain layout is the ``"json"`` export format, and what the OCSF mapping reads.
Values are as stored (text made safe when it was written); every sink encodes them
as data.
Every record says who, when, from where and in which operation, under the same
keys whatever its kind. A change entry names the fields that changed, never their
old or new values (a value may be a secret the auditlog registration did not
exclude, as in the subject report).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from django.db import connections
from django.db.models import Model, QuerySet

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.history import reads_in_row
from gql_audit.models import Checkpoint, RequestReads, SecurityEvent

#: Record kinds, as ``gql_audit_verify`` names them, and the signed checkpoints
#: (``CHECKPOINTS``), exported beside the records they vouch for.
READS = "reads"
ENTRY = "entry"
EVENT = "event"
CHECKPOINT = "checkpoint"
KINDS = (READS, ENTRY, EVENT, CHECKPOINT)

#: Version of the plain layout (``"json"`` format); a change that removes or renames a key bumps it.
LAYOUT = 1


def uid(kind: str, pk: Any) -> str:
    """A record's stable id: its kind and primary key (``metadata.uid`` in OCSF)."""
    return f"{kind}:{pk}"


def when(value: datetime.datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def load(names: Iterable[tuple[str, str]], alias: str) -> dict[tuple[str, str], dict[str, Any]]:
    """``(kind, record id) -> plain record`` of the records ``names`` (``(kind, record id)`` pairs, as
    outbox rows name them) that still exist, in one query a kind."""
    wanted: dict[str, set[str]] = {}
    for kind, record_id in names:
        wanted.setdefault(kind, set()).add(record_id)
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for kind, ids in wanted.items():
        loader = LOADERS.get(kind)
        if loader is None:
            continue
        for record in loader(alias, sorted(ids)):
            found[(kind, str(record["pk"]))] = record["data"]
    return found


def by_keys(queryset: QuerySet[Any], ids: list[Any]) -> QuerySet[Any]:
    """``queryset`` narrowed to the primary keys ``ids``: on PostgreSQL and CockroachDB one array
    parameter (``= ANY``), not a thousand placeholders the driver parses on every batch."""
    if connections[queryset.db].vendor not in POSTGRES_VENDORS or not ids:
        return queryset.filter(pk__in=ids)
    meta = queryset.model._meta
    quote = connections[queryset.db].ops.quote_name
    column = f"{quote(meta.db_table)}.{quote(meta.pk.column)}"
    kind = meta.pk.db_type(connections[queryset.db])
    return queryset.extra(where=[f"{column} = ANY(%s::{kind}[])"], params=[[str(value) for value in ids]])


def _reads(alias: str, ids: list[str]) -> Iterable[dict[str, Any]]:
    for row in by_keys(RequestReads.objects.using(alias), ids):
        yield {"pk": row.pk, "data": reads_record(row)}


def _entries(alias: str, ids: list[str]) -> Iterable[dict[str, Any]]:
    from auditlog import get_logentry_model

    LogEntry = get_logentry_model()
    for entry in by_keys(LogEntry.objects.using(alias), _keys_of(LogEntry, ids, alias)).select_related("content_type"):
        yield {"pk": entry.pk, "data": entry_record(entry)}


def _events(alias: str, ids: list[str]) -> Iterable[dict[str, Any]]:
    for row in by_keys(SecurityEvent.objects.using(alias), ids).values(*EVENT_COLUMNS):
        yield {"pk": row["id"], "data": event_record(row)}


def _checkpoints(alias: str, ids: list[str]) -> Iterable[dict[str, Any]]:
    for row in by_keys(Checkpoint.objects.using(alias), _keys_of(Checkpoint, ids, alias)):
        yield {"pk": row.pk, "data": checkpoint_record(row)}


def _keys_of(model: type[Model], ids: list[str], alias: str) -> list[Any]:
    """The outbox's record ids that can be keys of ``model`` on ``alias``: of its type, and
    in its column's range (no row has another key; one out of range would fail the query)."""
    field = model._meta.pk
    bounds = connections[alias].ops.integer_field_ranges.get(field.get_internal_type())
    pks = []
    for value in ids:
        try:
            pk = field.to_python(value)
        except Exception:  # noqa: BLE001 - not a key of this model: no such record
            continue
        if bounds is None or bounds[0] <= pk <= bounds[1]:
            pks.append(pk)
    return pks


LOADERS = {READS: _reads, ENTRY: _entries, EVENT: _events, CHECKPOINT: _checkpoints}


def _actor(snapshot: Any, actor_id: Any) -> dict[str, Any] | None:
    """``{"id", "username"}``: the snapshot taken when the record was written, else the key alone."""
    if isinstance(snapshot, dict) and snapshot.get("id") is not None:
        return {"id": str(snapshot["id"]), "username": snapshot.get("username")}
    return {"id": str(actor_id), "username": None} if actor_id is not None else None


def reads_record(row: RequestReads) -> dict[str, Any]:
    """A request's reads: every object, with the fields read on it and the paths."""
    context = dict(row.context) if isinstance(row.context, dict) else {}
    return {
        "layout": LAYOUT,
        "uid": uid(READS, row.pk),
        "record": READS,
        "time": when(row.at),
        "request_id": row.request_id,
        "actor": _actor(row.actor, row.actor_id),
        "remote_addr": row.remote_addr,
        "operation": row.operation,
        "objects": [
            {"model": read.model, "pk": read.object_pk, "fields": read.fields, "paths": read.paths}
            for read in reads_in_row(row)
        ],
        "context": context,
    }


#: auditlog's actions, in English whatever the active language.
ACTIONS = {0: "create", 1: "update", 2: "delete", 3: "access"}


def entry_record(entry: Any) -> dict[str, Any]:
    """An auditlog entry: a change (the fields changed, no values) or an ACCESS entry (the fields read)."""
    data = entry.additional_data if isinstance(entry.additional_data, dict) else {}
    found = data.get("gql_audit")
    ours: dict[str, Any] = dict(found) if isinstance(found, dict) else {}
    action = ACTIONS.get(entry.action, str(entry.action))
    try:
        changed = sorted(str(name) for name in (entry.changes_dict or {})) if action != "access" else []
    except (ValueError, TypeError, AttributeError):  # a hand-written entry whose changes are not a dict
        changed = []
    model_class = entry.content_type.model_class() if entry.content_type_id else None
    record = {
        "layout": LAYOUT,
        "uid": uid(ENTRY, entry.pk),
        "record": ENTRY,
        "action": action,
        "time": when(entry.timestamp),
        "request_id": ours.pop("request_id", None) or entry.cid or "",
        "actor": _actor(ours.pop("actor", None), entry.actor_id),
        "remote_addr": entry.remote_addr,
        "operation": ours.pop("operation", None),
        "object": {
            "model": model_class._meta.label if model_class is not None else str(entry.content_type),
            "pk": entry.object_pk,
            "repr": entry.object_repr,
        },
        "changed_fields": changed,
        "fields": ours.pop("fields", []) if action == "access" else [],
        "paths": ours.pop("path", None) or [],
        "context": ours,
    }
    ours.pop("remote_addr", None)
    return record


EVENT_COLUMNS = (
    "id",
    "kind",
    "severity",
    "created_at",
    "request_id",
    "actor_id",
    "remote_addr",
    "operation",
    "path",
    "message",
    "sqlstate",
    "details",
)


def event_record(event: SecurityEvent | dict[str, Any]) -> dict[str, Any]:
    """A security event (a row, or its ``EVENT_COLUMNS`` as a dict), its details as stored (redacted when written)."""
    row = event if isinstance(event, dict) else {name: getattr(event, name) for name in EVENT_COLUMNS}
    stored = row["details"]
    details = dict(stored) if isinstance(stored, dict) else {"value": stored}
    snapshot = details.pop("actor", None)
    return {
        "layout": LAYOUT,
        "uid": uid(EVENT, row["id"]),
        "record": EVENT,
        "kind": row["kind"],
        "severity": row["severity"],
        "time": when(row["created_at"]),
        "request_id": row["request_id"],
        "actor": _actor(snapshot, row["actor_id"]),
        "remote_addr": row["remote_addr"],
        "operation": row["operation"],
        "path": row["path"],
        "message": row["message"],
        "sqlstate": row["sqlstate"],
        "details": details,
    }


def kind_of(instance: Model) -> str:
    """The record kind of a model instance gql_audit writes."""
    if isinstance(instance, RequestReads):
        return READS
    if isinstance(instance, SecurityEvent):
        return EVENT
    return ENTRY


def checkpoint_record(row: Checkpoint) -> dict[str, Any]:
    """A signed checkpoint: the log's size and root at its time, and the whole signed note
    (what ``gql_audit_verify --anchor`` and a consumer check it by, with the public key)."""
    return {
        "layout": LAYOUT,
        "uid": uid(CHECKPOINT, row.pk),
        "record": CHECKPOINT,
        "time": when(row.created_at),
        "request_id": None,
        "actor": None,
        "remote_addr": None,
        "operation": None,
        "tree_size": row.tree_size,
        "root_hash": row.root_hash,
        "key_id": row.key_id,
        "note": row.note,
    }
