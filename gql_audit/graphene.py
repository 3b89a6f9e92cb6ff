"""``AuditMiddleware``: the Graphene middleware that decides each field.

It runs for every field of every response, so the common case (a nested field
not marked private) costs one attribute read and one truthiness test. Root
fields, a handful per operation, do the real work: they record the operation
on the request context and turn a deferred authentication error, or a missing
user, into a GraphQL error on that field only.
"""

from __future__ import annotations

from typing import Any

from graphql import GraphQLError

from gql_audit import context
from gql_audit.conf import conf
from gql_audit.errors import INTROSPECTION_DISABLED, UNAUTHENTICATED, graphql_error
from gql_audit.visibility import INTROSPECTION_FIELDS, SchemaRules, build_rules

_rules_cache: dict[int, tuple[Any, int, SchemaRules]] = {}


def rules_for(schema: Any) -> SchemaRules:
    """The rules of ``schema`` under the current settings (computed once)."""
    entry = _rules_cache.get(id(schema))
    if entry is not None and entry[0] is schema and entry[1] == conf.generation:
        return entry[2]
    rules = build_rules(schema, conf.PUBLIC_FIELDS)
    _rules_cache[id(schema)] = (schema, conf.generation, rules)
    return rules


def denial(info: Any) -> GraphQLError | None:
    """The error a private field gets for this request, or None if it may resolve."""
    ctx = context.current()
    if ctx is not None and ctx.auth_error is not None:
        return graphql_error(ctx.auth_error.code, ctx.auth_error.message)
    user = getattr(info.context, "user", None)
    if user is None or not user.is_authenticated:
        return graphql_error(UNAUTHENTICATED)
    return None


class AuditMiddleware:
    """Public and private fields, and the operation on the audit context.

    List it in ``GRAPHENE["MIDDLEWARE"]``. graphql-core runs the *last* listed
    middleware first, so if graphql_jwt's ``JSONWebTokenMiddleware`` is kept it
    must be listed after this one.
    """

    def __init__(self) -> None:
        self._private_nested: dict[Any, frozenset[str]] = {}

    def resolve(self, next: Any, root: Any, info: Any, **args: Any) -> Any:
        if info.path.prev is not None:
            # Nested field: only fields marked @private need a look.
            if self._private_nested:
                names = self._private_nested.get(info.parent_type)
                if names is not None and info.field_name in names:
                    error = denial(info)
                    if error is not None:
                        raise error
            return next(root, info, **args)
        return self._resolve_root(next, root, info, args)

    def _resolve_root(self, next: Any, root: Any, info: Any, args: dict[str, Any]) -> Any:
        rules = rules_for(info.schema)
        self._private_nested = rules.private_nested
        ctx = context.current()
        if ctx is not None:
            ctx.set_operation(info.operation)
            ctx.path = [info.path.key]
        name = info.field_name
        if name == "__typename":
            return next(root, info, **args)
        if name in INTROSPECTION_FIELDS:
            mode = conf.INTROSPECTION
            if mode == "disabled":
                raise graphql_error(INTROSPECTION_DISABLED)
            if mode == "public":
                return next(root, info, **args)
        elif (info.parent_type.name, name) in rules.public_roots:
            return next(root, info, **args)
        error = denial(info)
        if error is not None:
            raise error
        return next(root, info, **args)
