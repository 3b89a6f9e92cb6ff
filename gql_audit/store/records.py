"""A request's reads as records: one per object, its fields and paths merged, grouped by reader."""

from __future__ import annotations

import logging
from typing import Any

from django.db.models import Model
from django.utils.encoding import smart_str

from gql_audit import context
from gql_audit.access import add_read
from gql_audit.redaction import safe_data, safe_text

logger = logging.getLogger("gql_audit.store")


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


def object_key(model: type[Model], pk: Any) -> str:
    """``"app_label.model:pk"``: how the ``gql_audit`` store names an object it indexes."""
    return f"{model._meta.label_lower}:{safe_text(str(pk))}"


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


def object_repr(record: Any) -> str:
    """The object as auditlog's ``object_repr`` names it: its ``__str__``, or its model and key."""
    if isinstance(record.obj, record.model):
        try:
            return safe_text(smart_str(record.obj))
        except Exception:  # noqa: BLE001 - a broken __str__ must not lose the entry
            pass
    return safe_text(f"{record.model._meta.label} {record.pk}")


def model_data(record: Any) -> Any:
    """The model's own ``get_additional_data()`` for this object (auditlog calls it for every entry), or None."""
    method = getattr(record.obj, "get_additional_data", None) if isinstance(record.obj, record.model) else None
    if not callable(method):
        return None
    try:
        return safe_data(method())
    except Exception:  # noqa: BLE001 - a broken method must not lose the read
        logger.exception("%s.get_additional_data() failed", record.model._meta.label)
        return None
