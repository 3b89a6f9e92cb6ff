"""Access records: which objects a response exposed, and which fields of each.

An object enters a response through a field whose value is the object (a
relay node, an edge's node, a foreign key, a custom resolver) or a list of
objects (a list field, a queryset). ``AuditMiddleware`` looks at every field's
value for that (one set lookup for the usual scalar) and records each object of
an auditlog-registered model with the fields the query selects on it, as
graphql-core collects them (fragments, aliases, ``@include``/``@skip``), once
per list rather than once per field. Records are kept by object identity and
merged by model and primary key when written: one ``LogEntry`` per object per
request. A record holds its model instance only where the store needs it
(``RequestContext.keep_objects``): otherwise the instance is freed with the
response's data, and an id met again is believed to be the same object only if
the model and primary key agree (a freed object's id may be another's).
"""

from __future__ import annotations

import datetime
import decimal
import functools
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.apps import apps
from django.db.models import Model, QuerySet
from graphql import GraphQLObjectType, get_named_type

from gql_audit import context
from gql_audit.compat import auditlog_block_values, collect_sub_fields

#: Values that can never be, or contain, a model instance: the common case.
SCALARS = frozenset(
    {
        str,
        int,
        float,
        bool,
        type(None),
        bytes,
        decimal.Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
    }
)
NO_FIELDS: frozenset[str] = frozenset()


def plain_path(path: Any) -> str:
    """``publicDocuments.owner`` for the graphql-core path ``publicDocuments/0/owner``."""
    keys = []
    while path is not None:
        if isinstance(path.key, str):
            keys.append(path.key)
        path = path.prev
    return ".".join(reversed(keys))


class AccessRecord:
    __slots__ = ("obj", "model", "pk", "fields", "paths", "block", "key")

    def __init__(
        self, obj: Any, model: type[Model], pk: Any, paths: frozenset[str], fields: frozenset[str], block: Any = None
    ) -> None:
        #: The object read, or None when the request's records do not keep them.
        self.obj = obj
        self.model = model
        self.pk = pk
        self.fields = fields
        #: Shared by the objects of one list: a new set only for an object reached twice.
        self.paths = paths
        #: auditlog's ``set_actor`` / ``set_extra_data`` block in force when the object was read.
        self.block = block
        #: ``"app_label.model:pk"``, set when the records are merged for writing.
        self.key = ""


def path_set(path: str) -> frozenset[str]:
    return frozenset((path,)) if path else NO_FIELDS


def registered_models() -> frozenset[type[Model]]:
    """The models registered with django-auditlog, as its registry holds them now."""
    from auditlog.registry import auditlog

    return frozenset(auditlog.get_models())


def track(
    ctx: context.RequestContext,
    obj: Any,
    model: type[Model],
    pk: Any,
    path: str,
    fields: frozenset[str],
    block: Any = None,
) -> AccessRecord | None:
    """Start, or add to, the record of ``obj`` for this request."""
    accessed = ctx.accessed
    if accessed is None or pk is None:
        return None
    record = accessed.get(id(obj))
    if record is not None and (record.obj is obj or (record.obj is None and (record.model, record.pk) == (model, pk))):
        add_read(record, path_set(path), fields)
        return record
    if record is not None:
        retire(accessed, record)
    record = accessed[id(obj)] = AccessRecord(obj, model, pk, path_set(path), fields, block)
    return record


def add_read(record: AccessRecord, paths: frozenset[str], fields: frozenset[str]) -> None:
    """``record``'s object was reached again, maybe by another path or for other fields."""
    if not paths <= record.paths:
        record.paths = record.paths | paths
    if not fields <= record.fields:
        record.fields = record.fields | fields


def selected_fields(ctx: context.RequestContext, info: Any, object_type: Any) -> frozenset[str]:
    """Names of the fields the query selects on a value of ``info``'s field (cached per request)."""
    nodes = info.field_nodes
    key = (object_type, *map(id, nodes))
    names = ctx.selections.get(key)
    if names is None:
        groups = collect_sub_fields(info, object_type)
        names = ctx.selections[key] = frozenset(
            group[0].name.value for group in groups.values() if not group[0].name.value.startswith("__")
        )
    return names


def object_type_for(info: Any, model: type[Model]) -> Any:
    """The GraphQL object type a ``model`` instance is shown as in ``info``'s field."""
    named = get_named_type(info.return_type)
    if isinstance(named, GraphQLObjectType):
        return named
    try:
        candidates = info.schema.get_possible_types(named)
    except Exception:  # noqa: BLE001 - not an abstract type either
        return None
    for candidate in candidates:
        meta = getattr(getattr(candidate, "graphene_type", None), "_meta", None)
        if getattr(meta, "model", None) is model:
            return candidate
    return None


def record_value(ctx: context.RequestContext, value: Any, info: Any) -> None:
    """Record the registered model instances ``value`` is, or lists.

    This is the per-object path of every list a response holds: one dictionary
    lookup and, the first time an object is seen, one small record.
    """
    audited = ctx.audited
    accessed = ctx.accessed
    if accessed is None:
        return
    if value.__class__ in audited:
        items: Iterable[Any] = (value,)
    elif isinstance(value, (list, tuple, QuerySet)):
        items = value
    else:
        return
    paths = path_set(plain_path(info.path))
    block = auditlog_block_values()
    keep = ctx.keep_objects
    # Per model of the list: the fields selected on it, and the attribute holding
    # its primary key (``Model.pk`` is a property: a call per object).
    seen: dict[type[Model], tuple[frozenset[str], str]] = {}
    for item in items:
        model = item.__class__
        if model not in audited:
            continue
        how = seen.get(model)
        if how is None:
            object_type = object_type_for(info, model)
            fields = selected_fields(ctx, info, object_type) if object_type else NO_FIELDS
            how = seen[model] = (fields, model._meta.pk.attname)
        record = accessed.get(id(item))
        if record is not None and (record.obj is item or _same(record, item, how[1])):
            add_read(record, paths, how[0])
            continue
        pk = getattr(item, how[1])
        if pk is not None:
            if record is not None:
                retire(accessed, record)
            accessed[id(item)] = AccessRecord(item if keep else None, model, pk, paths, how[0], block)


def _same(record: AccessRecord, item: Any, attname: str) -> bool:
    """Whether ``item``, a model instance, is the object ``record`` was made for (which
    no longer holds it): same model, same primary key."""
    return record.obj is None and record.model is item.__class__ and record.pk == getattr(item, attname, None)


def retire(accessed: dict[int, AccessRecord], record: AccessRecord) -> None:
    """Keep ``record`` under a key no object's id can be (its object was freed, and its
    id is now another object's): the caller puts the new object's record in its place."""
    accessed[-id(record)] = record


def unread(ctx: context.RequestContext, obj: Any, field_name: str) -> None:
    """A field of ``obj`` failed (denied, raised): it was not read after all."""
    if ctx.accessed is not None:
        record = ctx.accessed.get(id(obj))
        if record is None or not (record.obj is obj or _same(record, obj, record.model._meta.pk.attname)):
            return
        if field_name in record.fields:
            record.fields = record.fields - {field_name}


def record_instance(instance: Any) -> None:
    """Record an access to a model instance without fields (auditlog's ``accessed``)."""
    ctx = context.current()
    if ctx is not None:
        track(ctx, instance, type(instance), instance.pk, "", NO_FIELDS, auditlog_block_values())


def _resolve_model(model: type[Model] | str) -> type[Model]:
    if isinstance(model, str):
        return apps.get_model(model)
    return model


def audit_access(model: type[Model] | str, pk: str | Callable[[Any], Any] = "pk") -> Callable[[Any], Any]:
    """Decorate a resolver whose values are not model instances (dicts, dataclasses).

    ``model`` is the model class (or ``"app_label.Model"``) the values stand
    for; ``pk`` is the key or attribute holding each value's primary key, or a
    callable returning it. Every value the resolver returns (one, or each of an
    iterable) is recorded as an access to that model's object, with the fields
    the query selects on it (for a list of scalars: the field itself).
    """

    def get_pk(item: Any) -> Any:
        if callable(pk):
            return pk(item)
        if isinstance(item, Mapping):
            return item.get(pk)
        return getattr(item, pk, None)

    def decorator(resolver: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(resolver)
        def wrapper(root: Any, info: Any, **kwargs: Any) -> Any:
            result = resolver(root, info, **kwargs)
            ctx = context.current()
            if ctx is None or ctx.accessed is None or result is None:
                return result
            target = _resolve_model(model)
            single = isinstance(result, (Mapping, str, bytes)) or not isinstance(result, Iterable)
            items = [result] if single else list(result)
            named = get_named_type(info.return_type)
            if isinstance(named, GraphQLObjectType):
                fields = selected_fields(ctx, info, named)
            else:
                fields = frozenset({info.field_name})
            path = plain_path(info.path)
            block = auditlog_block_values()
            for item in items:
                if item is not None:
                    track(ctx, item, target, get_pk(item), path, fields, block)
            return items[0] if single else items

        return wrapper

    return decorator
