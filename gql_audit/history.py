"""Reading the trail, whatever the access store.

``reads_of`` answers "who read this object", ``reads_of_objects`` the same for
many objects at once, ``changes_of_objects`` "who changed them", and
``request_trail`` "what did this request do". Reads come from both stores, merged newest first, so a service
that moves from ``ACCESS_STORE = "auditlog"`` to ``"gql_audit"`` keeps one
history: the ``gql_audit`` store's rows (found by the object index) and
auditlog's ACCESS ``LogEntry`` rows alike become [`Read`][gql_audit.history.Read] objects.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db.models import Model, Q, QuerySet

from gql_audit.models import RequestReads, SecurityEvent
from gql_audit.store import audit_alias, index, object_key

__all__ = [
    "Read",
    "Trail",
    "changes_of_objects",
    "entries_of_request",
    "reads_in_row",
    "reads_of",
    "reads_of_entries",
    "reads_of_objects",
    "request_trail",
]

#: Objects looked up per query: keeps each statement under every database's parameter limit.
CHUNK = 500

#: An object, or a model and a primary key.
Target = Model | tuple[type[Model], Any]


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


def reads_of(
    target: Model | type[Model],
    pk: Any = None,
    *,
    using: str | None = None,
    limit: int | None = None,
    since: datetime.datetime | None = None,
    until: datetime.datetime | None = None,
) -> list[Read]:
    """The reads of one object, newest first: ``reads_of(instance)`` or ``reads_of(Model, pk)``;
    the newest ``limit`` of them when given, written within ``since`` and ``until`` (both included) when given."""
    model, pk = (type(target), target.pk) if isinstance(target, Model) else (target, pk)
    if pk is None:
        raise ValueError("reads_of() needs an instance, or a model and a primary key")
    return reads_of_objects([(model, pk)], using=using, limit=limit, since=since, until=until)


def reads_of_objects(
    targets: Iterable[Target],
    *,
    since: datetime.datetime | None = None,
    using: str | None = None,
    limit: int | None = None,
    until: datetime.datetime | None = None,
) -> list[Read]:
    """The reads of many objects, newest first, in a few queries whatever their number.

    ``targets`` holds instances or ``(Model, pk)`` pairs; an instance without a
    primary key is skipped. ``since`` keeps the reads written at or after it, ``until`` at or before it;
    ``limit`` the newest that many, found and ordered by the database however many
    times the objects were read (no row is loaded whole: only what its reads show).
    """
    if limit is not None and limit < 0:
        raise ValueError("limit must be None or at least 0")
    objects = _objects(targets)
    alias = using or audit_alias()
    keys = {object_key(model, pk): (model, pk) for model, pk in objects}
    found: list[Read] = []
    labels: dict[str, str] = {}
    for chunk in _chunks(sorted(keys)):
        for *values, shapes, key, shape_index in index.reads(alias, chunk, since=since, until=until, limit=limit):
            found.append(_read(values, _shape(shapes, shape_index), key, labels))
    found.extend(reads_of_entries(_entries_of(objects, alias, since=since, until=until, access=True, limit=limit)))
    found.sort(key=lambda read: read.at, reverse=True)
    return found if limit is None else found[:limit]


def changes_of_objects(
    targets: Iterable[Target],
    *,
    since: datetime.datetime | None = None,
    using: str | None = None,
    until: datetime.datetime | None = None,
    limit: int | None = None,
) -> list[Any]:
    """The auditlog entries other than ACCESS (create, update, delete...) of many objects, newest first
    (the newest ``limit`` when given)."""
    entries = _entries_of(
        _objects(targets), using or audit_alias(), since=since, until=until, access=False, limit=limit
    )
    found = sorted(entries, key=lambda entry: (entry.timestamp, entry.pk), reverse=True)
    return found if limit is None else found[:limit]


def _objects(targets: Iterable[Target]) -> list[tuple[type[Model], Any]]:
    """``(model, pk)`` of each target, once each, in the order given."""
    seen: dict[tuple[str, str], tuple[type[Model], Any]] = {}
    for target in targets:
        if isinstance(target, Model):
            model, pk = type(target), target.pk
        else:
            model, pk = target
        if pk is not None:
            seen.setdefault((model._meta.label_lower, str(pk)), (model, pk))
    return list(seen.values())


def _chunks(items: list[Any]) -> Iterable[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _entries_of(
    objects: list[tuple[type[Model], Any]],
    alias: str,
    *,
    since: datetime.datetime | None,
    access: bool,
    limit: int | None = None,
    until: datetime.datetime | None = None,
) -> list[Any]:
    """auditlog entries of these objects: only ACCESS ones, or all but those (the newest
    ``limit`` of each chunk of objects when given: enough for the newest ``limit`` overall)."""
    from auditlog import get_logentry_model
    from django.contrib.contenttypes.models import ContentType

    LogEntry = get_logentry_model()
    entries = LogEntry.objects.using(alias).select_related("content_type")
    is_access = Q(action=LogEntry.Action.ACCESS)
    entries = entries.filter(is_access if access else ~is_access)
    if since is not None:
        entries = entries.filter(timestamp__gte=since)
    if until is not None:
        entries = entries.filter(timestamp__lte=until)
    pks_by_type: dict[Any, list[str]] = {}
    for model, pk in objects:
        content_type = ContentType.objects.db_manager(alias).get_for_model(model)
        pks_by_type.setdefault(content_type, []).append(str(pk))
    found: list[Any] = []
    for content_type, pks in pks_by_type.items():
        for chunk in _chunks(pks):
            chunk_entries = entries.filter(content_type=content_type, object_pk__in=chunk)
            found.extend(chunk_entries if limit is None else chunk_entries.order_by("-timestamp")[:limit])
    return found


def request_trail(request_id: str, *, using: str | None = None) -> Trail:
    """The reads (list), change entries and security events (querysets) of one request."""
    from auditlog import get_logentry_model

    alias = using or audit_alias()
    reads = [
        read for row in RequestReads.objects.using(alias).filter(request_id=request_id) for read in reads_in_row(row)
    ]
    LogEntry = get_logentry_model()
    access = LogEntry.objects.using(alias).filter(action=LogEntry.Action.ACCESS).select_related("content_type")
    reads.extend(reads_of_entries(access.filter(entries_of_request(request_id))))
    return Trail(
        request_id=request_id,
        reads=sorted(reads, key=lambda read: (read.model, read.object_pk)),
        changes=LogEntry.objects.using(alias)
        .filter(entries_of_request(request_id))
        .exclude(action=LogEntry.Action.ACCESS),
        events=SecurityEvent.objects.using(alias).filter(request_id=request_id),
    )


def entries_of_request(request_id: str) -> Q:
    """The condition on auditlog ``LogEntry`` rows of one request: by ``cid``, and, where
    ``AUDITLOG_CID_GETTER`` gives the cid, by the request id in their ``gql_audit`` object
    (not indexed)."""
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


def reads_in_row(row: RequestReads) -> list[Read]:
    """The reads one ``RequestReads`` row holds."""
    labels: dict[str, str] = {}
    values = [row.at, row.request_id, row.actor, row.remote_addr, row.operation]
    return [
        _read(values, _shape(row.shapes, shape_index), key, labels)
        for key, shape_index in zip(row.keys, row.shape_of, strict=False)
    ]


def _shape(shapes: Any, index: Any) -> dict[str, Any]:
    """The shape at ``index`` of a row's ``shapes`` (nothing read, if there is none there)."""
    if isinstance(shapes, list) and isinstance(index, int) and 0 <= index < len(shapes):
        shape = shapes[index]
        if isinstance(shape, dict):
            return shape
    return {}


def _read(row: list[Any], shape: dict[str, Any], key: str, labels: dict[str, str]) -> Read:
    """The read of the object ``key``: ``row`` is its row's ``at``, ``request_id``,
    ``actor``, ``remote_addr`` and ``operation`` (``labels``: the models' labels, looked up once)."""
    at, request_id, actor, remote_addr, operation = row
    label_lower, _, object_pk = key.partition(":")
    label = labels.get(label_lower)
    if label is None:
        label = labels[label_lower] = _label(label_lower)
    return Read(
        at=at,
        model=label,
        object_pk=object_pk,
        actor_id=actor.get("id") if isinstance(actor, dict) else None,
        actor=actor,
        request_id=request_id,
        remote_addr=remote_addr,
        fields=list(shape.get("fields", [])),
        paths=list(shape.get("paths", [])),
        operation=operation,
    )


def reads_of_entries(entries: Iterable[Any]) -> list[Read]:
    """ACCESS ``LogEntry`` rows (``ACCESS_STORE = "auditlog"``, or written before a move) as reads."""
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
