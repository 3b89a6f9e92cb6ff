"""Reading the trail, whatever the access store.

``reads_of`` answers "who read this object", ``request_trail`` "what did this
request do". Reads come from both stores, merged newest first, so a service
that moves from ``ACCESS_STORE = "auditlog"`` to ``"gql_audit"`` keeps one
history: the ``gql_audit`` store's rows (found by the object index) and
auditlog's ACCESS ``LogEntry`` rows alike become :class:`Read` objects.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import connections
from django.db.models import Model, Q, QuerySet

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import ReadObject, RequestReads, SecurityEvent
from gql_audit.storage import audit_alias, object_key

__all__ = ["Read", "Trail", "reads_of", "request_trail"]


@dataclass(frozen=True)
class Read:
    """One object read by one request."""

    #: When the request's reads were written (the end of the request).
    at: datetime.datetime
    #: The model's label, ``"app_label.ModelName"``.
    model: str
    object_pk: str
    #: The reader's primary key then (None when anonymous), and ``{"id", "username"}``.
    actor_id: Any
    actor: dict[str, Any] | None
    request_id: str
    remote_addr: str | None
    #: The GraphQL field names read on the object, sorted.
    fields: list[str]
    #: The response paths it appeared at, list indices left out.
    paths: list[str]
    #: ``{"type", "name", "hash"}`` of the operation.
    operation: dict[str, Any] | None


@dataclass(frozen=True)
class Trail:
    """Everything one request left: its reads, its change entries, its security events."""

    request_id: str
    reads: list[Read]
    #: The request's auditlog entries other than ACCESS (CREATE, UPDATE, DELETE...).
    changes: QuerySet[Any]
    events: QuerySet[SecurityEvent]


def reads_of(target: Model | type[Model], pk: Any = None, *, using: str | None = None) -> list[Read]:
    """The reads of one object, newest first: ``reads_of(instance)`` or ``reads_of(Model, pk)``."""
    if isinstance(target, Model):
        model: type[Model] = type(target)
        pk = target.pk
    else:
        model = target
    if pk is None:
        raise ValueError("reads_of() needs an instance, or a model and a primary key")
    alias = using or audit_alias()
    key = object_key(model, pk)
    rows = RequestReads.objects.using(alias)
    if connections[alias].vendor in POSTGRES_VENDORS:
        rows = rows.filter(keys__contains=[key])
    else:
        rows = rows.filter(id__in=ReadObject.objects.using(alias).filter(key=key).values("reads_id"))
    reads = [read for row in rows for read in _reads_in(row, only=key)]
    reads.extend(_auditlog_reads(alias, model=model, pk=pk))
    return sorted(reads, key=lambda read: read.at, reverse=True)


def request_trail(request_id: str, *, using: str | None = None) -> Trail:
    """The reads (list), change entries and security events (querysets) of one request."""
    from auditlog import get_logentry_model

    alias = using or audit_alias()
    reads = [read for row in RequestReads.objects.using(alias).filter(request_id=request_id) for read in _reads_in(row)]
    reads.extend(_auditlog_reads(alias, request_id=request_id))
    LogEntry = get_logentry_model()
    return Trail(
        request_id=request_id,
        reads=sorted(reads, key=lambda read: (read.model, read.object_pk)),
        changes=LogEntry.objects.using(alias).filter(_of_request(request_id)).exclude(action=LogEntry.Action.ACCESS),
        events=SecurityEvent.objects.using(alias).filter(request_id=request_id),
    )


def _of_request(request_id: str) -> Q:
    """auditlog entries of one request: by ``cid``, and, where ``AUDITLOG_CID_GETTER``
    gives the cid, by the request id in their ``gql_audit`` object (not indexed)."""
    from django.conf import settings

    condition = Q(cid=request_id)
    if getattr(settings, "AUDITLOG_CID_GETTER", None):
        condition |= Q(additional_data__gql_audit__request_id=request_id)
    return condition


def _label(label_lower: str) -> str:
    try:
        label: str = apps.get_model(label_lower)._meta.label
    except LookupError:  # a model since removed: its reads stay readable
        return label_lower
    return label


def _reads_in(row: RequestReads, only: str | None = None) -> list[Read]:
    reads = []
    for key, shape_index in zip(row.keys, row.shape_of, strict=False):
        if only is not None and key != only:
            continue
        label_lower, _, object_pk = key.partition(":")
        shape = row.shapes[shape_index] if 0 <= shape_index < len(row.shapes) else {}
        reads.append(
            Read(
                at=row.at,
                model=_label(label_lower),
                object_pk=object_pk,
                actor_id=(row.actor or {}).get("id"),
                actor=row.actor,
                request_id=row.request_id,
                remote_addr=row.remote_addr,
                fields=list(shape.get("fields", [])),
                paths=list(shape.get("paths", [])),
                operation=row.operation,
            )
        )
    return reads


def _auditlog_reads(
    alias: str, *, model: type[Model] | None = None, pk: Any = None, request_id: str | None = None
) -> list[Read]:
    """ACCESS ``LogEntry`` rows (``ACCESS_STORE = "auditlog"``, or written before a move) as reads."""
    from auditlog import get_logentry_model
    from django.contrib.contenttypes.models import ContentType

    LogEntry = get_logentry_model()
    entries = LogEntry.objects.using(alias).filter(action=LogEntry.Action.ACCESS).select_related("content_type")
    if model is not None:
        content_type = ContentType.objects.db_manager(alias).get_for_model(model)
        entries = entries.filter(content_type=content_type, object_pk=str(pk))
    if request_id is not None:
        entries = entries.filter(_of_request(request_id))
    reads = []
    for entry in entries:
        data = entry.additional_data if isinstance(entry.additional_data, dict) else {}
        found = data.get("gql_audit")
        ours: dict[str, Any] = found if isinstance(found, dict) else {}
        model_class = entry.content_type.model_class()
        reads.append(
            Read(
                at=entry.timestamp,
                model=model_class._meta.label if model_class is not None else entry.content_type.model,
                object_pk=entry.object_pk,
                actor_id=entry.actor_id,
                actor=ours.get("actor"),
                request_id=entry.cid or "",
                remote_addr=entry.remote_addr,
                fields=list(ours.get("fields") or []),
                paths=list(ours.get("path") or []),
                operation=ours.get("operation"),
            )
        )
    return reads
