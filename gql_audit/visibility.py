"""Which GraphQL fields need an authenticated user.

Root fields (Query, Mutation, Subscription) are private unless named in
``PUBLIC_FIELDS`` or resolved by a function marked with :func:`public`. Nested
fields inherit their root's decision, except those marked with :func:`private`.
The rules are computed once per schema and settings generation, so the
Graphene middleware only looks them up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from graphql import GraphQLNonNull, GraphQLObjectType, get_named_type

MARK = "_gql_audit_visibility"
PUBLIC = "public"
PRIVATE = "private"

F = TypeVar("F")


def _mark(target: F, value: str) -> F:
    if isinstance(target, type):
        # A graphene Mutation class: its Field() resolves through ``mutate``.
        mutate = target.__dict__.get("mutate")
        if mutate is None:
            raise TypeError(f"{target.__name__} defines no mutate(); mark the resolver function instead")
        function = getattr(mutate, "__func__", mutate)
        setattr(function, MARK, value)
        setattr(target, MARK, value)
        return target
    if not callable(target):
        raise TypeError(f"gql_audit.{value} decorates a resolver, not {target!r}")
    setattr(getattr(target, "__func__", target), MARK, value)
    return target


def public(resolver: F) -> F:
    """Mark a root field's resolver (or a Mutation class) as public."""
    return _mark(resolver, PUBLIC)


def private(resolver: F) -> F:
    """Mark a nested field's resolver as requiring an authenticated user."""
    return _mark(resolver, PRIVATE)


def marking(resolver: Callable[..., Any] | None) -> str | None:
    """The mark on ``resolver`` or on anything it wraps (partials, ``__wrapped__``).

    When both marks are found, ``private`` wins.
    """
    found: set[str] = set()
    stack: list[Any] = [resolver]
    seen: set[int] = set()
    while stack and len(seen) < 64:
        fn = stack.pop()
        if fn is None or id(fn) in seen:
            continue
        seen.add(id(fn))
        mark = getattr(fn, MARK, None)
        if mark in (PUBLIC, PRIVATE):
            found.add(mark)
        if isinstance(fn, functools.partial):
            stack.append(fn.func)
            stack.extend(a for a in fn.args if callable(a) and not isinstance(a, type))
        stack.append(getattr(fn, "__wrapped__", None))
        stack.append(getattr(fn, "__func__", None))
    if PRIVATE in found:
        return PRIVATE
    return PUBLIC if found else None


INTROSPECTION_FIELDS = frozenset({"__schema", "__type"})


@dataclass(frozen=True)
class SchemaRules:
    #: ``(root type name, field name)`` of every public root field.
    public_roots: frozenset[tuple[str, str]]
    #: Parent type -> names of nested fields marked private. Empty when none.
    private_nested: dict[Any, frozenset[str]]
    #: PUBLIC_FIELDS entries that name no root field of this schema.
    unknown_public: tuple[str, ...]
    #: ``Type.field`` of fields that can be denied but are declared Non-Null:
    #: denying one nulls its parent (the whole ``data`` for a root field).
    non_null_guarded: tuple[str, ...]
    #: ``(root type name, field name)`` of graphql_jwt's token mutations (``tokenAuth``).
    login_fields: frozenset[tuple[str, str]] = frozenset()


def root_types(schema: Any) -> list[Any]:
    return [t for t in (schema.query_type, schema.mutation_type, schema.subscription_type) if t]


def build_rules(schema: Any, public_fields: Any) -> SchemaRules:
    """Walk ``schema`` (a ``graphql.GraphQLSchema``) once."""
    configured = {str(name) for name in public_fields or ()}
    roots = root_types(schema)
    public_roots = set()
    known = set()
    non_null = []
    login_fields = set()
    for root in roots:
        for name, field in root.fields.items():
            key = f"{root.name}.{name}"
            known.add(key)
            if _is_login(field):
                login_fields.add((root.name, name))
            mark = marking(field.resolve)
            if mark != PRIVATE and (key in configured or mark == PUBLIC):
                public_roots.add((root.name, name))
            elif isinstance(field.type, GraphQLNonNull):
                non_null.append(key)
    root_set = set(roots)
    private_nested: dict[Any, frozenset[str]] = {}
    for graphql_type in schema.type_map.values():
        if graphql_type in root_set or not isinstance(graphql_type, GraphQLObjectType):
            continue
        names = frozenset(name for name, field in graphql_type.fields.items() if marking(field.resolve) == PRIVATE)
        if names:
            private_nested[graphql_type] = names
            non_null.extend(
                f"{graphql_type.name}.{name}"
                for name in sorted(names)
                if isinstance(graphql_type.fields[name].type, GraphQLNonNull)
            )
    return SchemaRules(
        public_roots=frozenset(public_roots),
        private_nested=private_nested,
        unknown_public=tuple(sorted(configured - known)),
        non_null_guarded=tuple(non_null),
        login_fields=frozenset(login_fields),
    )


def _is_login(field: Any) -> bool:
    """Whether ``field`` is graphql_jwt's ``ObtainJSONWebToken`` (or a subclass): a login."""
    from gql_audit.auth import django_graphql_jwt

    return django_graphql_jwt.is_login_mutation(getattr(get_named_type(field.type), "graphene_type", None))


@functools.lru_cache(maxsize=16)
def login_arguments(schema: Any) -> dict[str, tuple[str, ...]]:
    """Mutation field name -> where its username argument is, for each login field of ``schema``.

    The path is ``(argument,)`` (``tokenAuth(username: ...)``) or
    ``("input", field)`` for graphql_jwt's relay mutation.
    """
    from django.contrib.auth import get_user_model

    wanted = get_user_model().USERNAME_FIELD
    mutation = schema.mutation_type
    found: dict[str, tuple[str, ...]] = {}
    for name, field in mutation.fields.items() if mutation is not None else ():
        if not _is_login(field):
            continue
        found[name] = ("input", wanted)
        for arg_name, arg in field.args.items():
            if wanted in (arg_name, getattr(arg, "out_name", None)):
                found[name] = (arg_name,)
            elif arg_name == "input":
                inner = get_named_type(arg.type)
                for inner_name, inner_field in getattr(inner, "fields", {}).items():
                    if wanted in (inner_name, getattr(inner_field, "out_name", None)):
                        found[name] = ("input", inner_name)
    return found
