"""``AuditMiddleware``: the Graphene middleware that decides and records each field.

Where it can (graphene-django's ``GraphQLView``, whose schema the Django
middleware learns before the view runs), it does its work through the schema's
instrumented fields (``gql_audit.resolving``) and asks graphql-core for no call
on every field at all. Elsewhere it works as any Graphene middleware does, and
runs for every field of every response. For a nested field it then does: is the
field marked ``@private`` (one truthiness test when nothing is), a ``try``
around the resolver (free in Python 3.11 unless it raises), and is the value a
scalar (one set lookup): only other values can bring objects to access-log, and
a list of them is recorded once, not field by field. Root fields, a handful per
operation, do the rest: record the operation, and turn a deferred
authentication error, or a missing user, into a GraphQL error on that field only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gql_audit.resolving import (
    Denied,
    check_private,
    denied,
    instrument,
    resolve_nested,
    resolve_root,
    rules_for,
)

if TYPE_CHECKING:
    from collections.abc import Callable

from gql_audit import context

__all__ = ["AuditMiddleware", "Denied", "denied", "rules_for"]

_current = context._current.get


class AuditMiddleware:
    """Public and private fields, access records and failure events.

    List it in ``GRAPHENE["MIDDLEWARE"]``. graphql-core runs the *last* listed
    middleware first, so if graphql_jwt's ``JSONWebTokenMiddleware`` is kept it
    must be listed after this one.
    """

    def __init__(self) -> None:
        self._private_nested: dict[Any, frozenset[str]] = {}

    @property
    def resolve(self) -> Callable[..., Any] | None:
        """What graphql-core wraps every field's resolver in: nothing at all when the
        request's schema is instrumented (graphql-core skips a middleware whose
        ``resolve`` is None), else :meth:`resolve_field`."""
        ctx = _current()
        if ctx is not None and ctx.view_schema is not None and instrument(ctx.view_schema):
            ctx.instrumented = True
            return None
        return self.resolve_field

    def resolve_field(self, next: Any, root: Any, info: Any, **args: Any) -> Any:
        if info.path.prev is None:
            self._private_nested = rules_for(info.schema).private_nested
            return resolve_root(next, root, info, args)
        if self._private_nested:
            names = self._private_nested.get(info.parent_type)
            if names is not None and info.field_name in names:
                check_private(root, info)
        return resolve_nested(next, root, info, args)
