"""Access records: which objects a response exposed, and which fields of each.

``AuditMiddleware`` records, per request, every object of an
auditlog-registered model that a field is resolved on, with the GraphQL field
names read on it. The records are kept by object identity (the object is held,
so its id cannot be reused mid-request) and merged by model and primary key
when they are written, one ``LogEntry`` per object per request.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.apps import apps
from django.db.models import Model

from gql_audit import context
from gql_audit.events import plain_path


class AccessRecord:
    __slots__ = ("obj", "model", "pk", "fields", "paths", "parent")

    def __init__(self, obj: Any, model: type[Model], pk: Any, path: str) -> None:
        self.obj = obj
        self.model = model
        self.pk = pk
        self.fields: set[str] = set()
        self.paths = {path} if path else set()
        #: The graphql-core Path the object was last seen at: sibling fields
        #: share it, so a new location is one identity test away.
        self.parent: Any = None


def registered_models() -> dict[type[Model], Any]:
    """The models registered with django-auditlog (its live registry)."""
    from auditlog.registry import auditlog

    registry: dict[type[Model], Any] = auditlog._registry
    return registry


def object_path(info: Any) -> str:
    """Where the object ``info``'s field is resolved on sits in the response."""
    return plain_path(info.path.prev)


def track(ctx: context.RequestContext, obj: Any, model: type[Model], pk: Any, path: str) -> AccessRecord | None:
    """Start (or continue) the record of ``obj`` for this request."""
    if ctx.accessed is None or pk is None:
        return None
    record = ctx.accessed.get(id(obj))
    if record is None:
        record = ctx.accessed[id(obj)] = AccessRecord(obj, model, pk, path)
    elif path:
        record.paths.add(path)
    return record


def record_instance(instance: Any) -> None:
    """Record an access to a model instance without fields (auditlog's ``accessed``)."""
    ctx = context.current()
    if ctx is not None:
        track(ctx, instance, type(instance), instance.pk, "")


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
    read on it.
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
            single = isinstance(result, Mapping) or not isinstance(result, Iterable) or isinstance(result, (str, bytes))
            items = [result] if single else list(result)
            path = plain_path(info.path)
            for item in items:
                if item is None:
                    continue
                record = track(ctx, item, target, get_pk(item), path)
                if record is not None and isinstance(item, (str, bytes, int, float)):
                    record.fields.add(info.field_name)  # a scalar: the field itself is what was read
            return items[0] if single else items

        return wrapper

    return decorator
