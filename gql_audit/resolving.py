"""What gql_audit does around a resolver, and the schema instrumented to do it.

``AuditMiddleware`` is listed in ``GRAPHENE["MIDDLEWARE"]``, and graphql-core
calls a middleware on *every* field of a response: 4,000 calls for a list of
1,000 objects of four scalars, each doing nothing for a scalar. So when the view
is graphene-django's ``GraphQLView`` (the Django middleware learns its schema
before the view runs), the work is done inside the schema instead, once per
schema and only where there is work to do:

- a root field gets the root checks (public or private, introspection) and
  records the operation;
- a field marked ``@private`` gets the denial check;
- a field whose type can carry objects (object, interface or union types, and
  lists of them) records what its value exposes;
- a custom resolver of a scalar field gets a ``try`` that records and masks its
  failure;
- a scalar read from an attribute or a key by graphene's default resolver gets
  gql_audit's own default resolver, which does the same lookup inside a ``try``:
  no call is added to the path of the field a list holds thousands of.

The instrumented fields act only for a request whose ``AuditMiddleware``
chose this path; anywhere else (``schema.execute`` in a test, a view without
the middleware) they call the original resolver and nothing else.
"""

from __future__ import annotations

import functools
import threading
from typing import TYPE_CHECKING, Any, NoReturn

from django.db.models import QuerySet
from django.utils.translation import gettext
from graphql import GraphQLError, GraphQLObjectType, get_named_type, is_leaf_type

from gql_audit import context
from gql_audit.access import SCALARS, plain_path, record_value, unread
from gql_audit.auth import django_graphql_jwt
from gql_audit.compat import introspection_field_defs, variable_values
from gql_audit.conf import conf
from gql_audit.errors import (
    CLIENT_CERT_REQUIRED,
    INTERNAL_ERROR,
    INTROSPECTION_DISABLED,
    MESSAGES,
    UNAUTHENTICATED,
    describe_database_error,
)
from gql_audit.events import classify_resolver_error, record_event
from gql_audit.visibility import INTROSPECTION_FIELDS, PRIVATE, SchemaRules, build_rules, marking, root_types

if TYPE_CHECKING:
    from collections.abc import Callable

_rules_cache: dict[int, tuple[Any, int, SchemaRules]] = {}
_current = context._current.get


class Denied(GraphQLError):
    """A field gql_audit refused; recorded as its own security event, not as an error."""

    def __init__(self, message: str, extensions: dict[str, Any] | None = None) -> None:
        super().__init__(message, extensions=extensions)
        ctx = _current()
        if ctx is not None and extensions:
            ctx.error_codes.add(str(extensions.get("code")))


def denied(code: str, message: str | None = None) -> Denied:
    return Denied(message or MESSAGES[code], extensions={"code": code})


def rules_for(schema: Any) -> SchemaRules:
    """The rules of ``schema`` under the current settings (computed once)."""
    entry = _rules_cache.get(id(schema))
    if entry is not None and entry[0] is schema and entry[1] == conf.generation:
        return entry[2]
    rules = build_rules(schema, conf.PUBLIC_FIELDS)
    _rules_cache[id(schema)] = (schema, conf.generation, rules)
    return rules


def denial(info: Any, rule: str = "PUBLIC_FIELDS") -> GraphQLError | None:
    """The error a private field gets for this request, or None if it may resolve
    (``rule``: what made the field private, named on the event)."""
    ctx = context.current()
    if ctx is not None and ctx.auth_error is not None:
        error = ctx.auth_error
        record_event(error.event_kind, message=error.message, path=plain_path(info.path), once=True)
        return denied(error.code, error.message)
    if conf.REQUIRE_CLIENT_CERT and not _has_valid_certificate(ctx):
        if ctx is not None:
            record_event(
                "forbidden",
                message="no verified client certificate",
                path=plain_path(info.path),
                details={"rule": "REQUIRE_CLIENT_CERT"},
            )
        return denied(CLIENT_CERT_REQUIRED)
    user = getattr(info.context, "user", None)
    if user is None or not user.is_authenticated:
        if ctx is not None:
            record_event(
                "unauthenticated", message="Authentication required", path=plain_path(info.path), details={"rule": rule}
            )
        return denied(UNAUTHENTICATED)
    return None


def _has_valid_certificate(ctx: context.RequestContext | None) -> bool:
    from django.utils import timezone

    cert = ctx.client_cert if ctx is not None else None
    return cert is not None and cert.problem(timezone.now()) is None


def _deliberate(exc: BaseException) -> bool:
    """An error raised to be shown: a ``GraphQLError``, or graphql_jwt's own messages."""
    return isinstance(exc, (GraphQLError, *django_graphql_jwt.error_types()))


def masked(exc: Exception, kind: str, ctx: context.RequestContext) -> GraphQLError | None:
    """What the client gets instead of ``exc`` under ``MASK_ERRORS``, or None to let it through."""
    mode = conf.MASK_ERRORS
    if mode == "none" or isinstance(exc, Denied):
        return None
    if mode == "database" and kind != "db_error":
        return None
    if mode == "all" and kind != "db_error" and _deliberate(exc):
        return None
    return GraphQLError(
        f"{MESSAGES[INTERNAL_ERROR]} Request id: {ctx.request_id}",
        extensions={"code": INTERNAL_ERROR, "request_id": ctx.request_id},
        original_error=None,
    )


def failed(exc: Exception, info: Any, args: dict[str, Any] | None = None) -> GraphQLError | None:
    """Record a resolver's failure; the error the client gets instead, or None for ``exc`` itself."""
    ctx = _current()
    if isinstance(exc, Denied) or ctx is None:
        return None
    path = plain_path(info.path)
    if args is not None and (info.parent_type.name, info.field_name) in rules_for(info.schema).login_fields:
        from django.db import DataError

        jwt_errors = django_graphql_jwt.error_types()
        # Credentials the database or the encoder cannot even hold (NUL, lone
        # surrogates) are wrong credentials too, and say so in the same words.
        if isinstance(exc, (*jwt_errors, DataError, ValueError)):
            ctx.error_codes.add("LOGIN_FAILED")
            record_event(
                "login_failed",
                message=str(exc),
                path=path,
                details={"username": _username_tried(args), "exception": type(exc).__name__},
            )
            if isinstance(exc, jwt_errors):
                return None
            return GraphQLError(gettext("Please enter valid credentials"))
    kind, sqlstate = classify_resolver_error(exc)
    original = getattr(exc, "original_error", None) or exc
    replacement = masked(exc, kind, ctx)
    code = (getattr(exc, "extensions", None) or {}).get("code")
    ctx.error_codes.add(INTERNAL_ERROR if replacement is not None else str(code) if code else kind.upper())
    record_event(
        kind,
        # A database's own text can name hosts and hold the values of rows: not stored.
        message=describe_database_error(original)[0] if kind == "db_error" else str(exc),
        path=path,
        sqlstate=sqlstate,
        details={
            "exception": type(original).__name__,
            "variables": ctx.redacted_variables(),
            **({"rule": "resolver"} if kind == "forbidden" else {}),
        },
    )
    return replacement


def _username_tried(args: dict[str, Any]) -> Any:
    """The username argument of a token mutation, inline or from a variable (relay: in ``input``)."""
    from django.contrib.auth import get_user_model

    field = get_user_model().USERNAME_FIELD
    nested = args.get("input")
    source: dict[str, Any] = nested if isinstance(nested, dict) else args
    return source.get(field)


def record(value: Any, info: Any) -> None:
    """Access-log what ``value`` exposes; a queryset is evaluated here, so that a
    database error it raises is recorded (and masked) like the resolver's own."""
    ctx = _current()
    if ctx is not None and ctx.accessed is not None:
        record_value(ctx, value, info)
    elif isinstance(value, QuerySet):
        bool(value)


def unread_field(root: Any, info: Any) -> None:
    """The field of ``root`` failed (denied, raised): it was not read after all."""
    ctx = _current()
    if ctx is not None:
        unread(ctx, root, info.field_name)


def raise_failure(exc: Exception, root: Any, info: Any) -> NoReturn:
    """A nested field's resolver raised ``exc``: record it and raise what the client gets."""
    unread_field(root, info)
    replacement = failed(exc, info)
    if replacement is None:
        raise exc
    raise replacement from exc


def check_private(root: Any, info: Any) -> None:
    """A field marked ``@private``: raise its denial, if this request gets one."""
    error = denial(info, "@private")
    if error is not None:
        unread_field(root, info)
        raise error


def resolve_nested(resolve: Callable[..., Any], root: Any, info: Any, args: dict[str, Any]) -> Any:
    """A nested field: resolved, what its value exposes recorded, its failure recorded."""
    try:
        value = resolve(root, info, **args)
        if value.__class__ not in SCALARS:
            record(value, info)
    except Exception as exc:
        raise_failure(exc, root, info)
    return value


def resolve_root(resolve: Callable[..., Any], root: Any, info: Any, args: dict[str, Any]) -> Any:
    """A root field: the operation recorded, the field checked, resolved and recorded."""
    rules = rules_for(info.schema)
    ctx = _current()
    if ctx is not None:
        ctx.set_operation(info.operation, info.fragments)
        ctx.path = [info.path.key]
        if ctx.variables is None:
            ctx.variables = variable_values(info)  # redacted when written, not per request
        if ctx.admitted is not None and (ctx.refusal is not None or _hash(ctx) not in ctx.admitted):
            unadmitted(ctx, info)
    name = info.field_name
    if name == "__typename":
        pass
    elif name in INTROSPECTION_FIELDS:
        check_introspection(info)
    elif (info.parent_type.name, name) not in rules.public_roots:
        error = denial(info)
        if error is not None:
            raise error
    try:
        value = resolve(root, info, **args)
        if value.__class__ not in SCALARS:
            record(value, info)
    except Exception as exc:
        replacement = failed(exc, info, args)
        if replacement is None:
            raise
        raise replacement from exc
    if ctx is not None and (info.parent_type.name, name) in rules.login_fields:
        logged_in(info, args)
    return value


def _hash(ctx: context.RequestContext) -> str | None:
    return ctx.operation["hash"] if ctx.operation is not None else None


def unadmitted(ctx: context.RequestContext, info: Any) -> None:
    """The view executes a document admission did not see: check it now; raise its refusal."""
    from gql_audit.protect.admission import admit_execution

    if ctx.refusal is None:
        loc = getattr(info.operation, "loc", None)
        document = loc.source.body if loc is not None else ""
        admit_execution(ctx, document, variable_values(info), info.schema)
    refusal = ctx.refusal
    if refusal is not None:
        raise GraphQLError(MESSAGES[refusal.code], extensions={"code": refusal.code, "rule": refusal.rule})


def logged_in(info: Any, args: dict[str, Any]) -> None:
    """A login field resolved without raising: the credentials were good."""
    record_event(
        "login_succeeded",
        message="login succeeded",
        path=plain_path(info.path),
        details={"username": _username_tried(args)},
    )


def check_introspection(info: Any) -> None:
    mode = conf.INTROSPECTION
    if mode == "disabled":
        record_event("forbidden", message="introspection is disabled", details={"rule": "INTROSPECTION"})
        raise denied(INTROSPECTION_DISABLED)
    if mode != "public":
        error = denial(info, "INTROSPECTION")
        if error is not None:
            raise error


# --- the instrumented schema ----------------------------------------------------------------

#: Marks an instrumented resolver; its value is the resolver it wraps.
ORIGINAL = "_gql_audit_original"

#: id -> (schema, its instrumented fields with their resolvers).
_instrumented: dict[int, tuple[Any, tuple[tuple[Any, Any], ...]]] = {}
_instrument_lock = threading.Lock()


def _active() -> bool:
    ctx = _current()
    return ctx is not None and ctx.instrumented


def _root_resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    def root_field(root: Any, info: Any, **args: Any) -> Any:
        ctx = _current()
        if ctx is None or not ctx.instrumented:
            return resolve(root, info, **args)
        return resolve_root(resolve, root, info, args)

    return root_field


def _meta_resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """``__schema`` and ``__type``: graphql-core's own fields, shared by every schema."""

    def introspection_field(root: Any, info: Any, **args: Any) -> Any:
        if _active():
            return resolve_root(resolve, root, info, args)
        return resolve(root, info, **args)

    return introspection_field


def _private_resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    def private_field(root: Any, info: Any, **args: Any) -> Any:
        ctx = _current()
        if ctx is None or not ctx.instrumented:
            return resolve(root, info, **args)
        check_private(root, info)
        return resolve_nested(resolve, root, info, args)

    return private_field


def _carrier_resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """A field whose value may be, or list, objects to record."""

    def object_field(root: Any, info: Any, **args: Any) -> Any:
        try:
            value = resolve(root, info, **args)
            if value.__class__ not in SCALARS and _active():
                record(value, info)
        except Exception as exc:
            if not _active():
                raise
            raise_failure(exc, root, info)
        return value

    return object_field


def _scalar_resolver(resolve: Callable[..., Any]) -> Callable[..., Any]:
    """A custom resolver of a scalar field: only its failure needs gql_audit."""

    def scalar_field(root: Any, info: Any, **args: Any) -> Any:
        try:
            return resolve(root, info, **args)
        except Exception as exc:
            if not _active():
                raise
            raise_failure(exc, root, info)

    return scalar_field


def attribute_or_key(attname: str, default_value: Any, root: Any, info: Any, **args: Any) -> Any:
    """graphene's default resolver (a key of a dict, else an attribute), with its failure recorded."""
    try:
        if isinstance(root, dict):
            return root.get(attname, default_value)
        return getattr(root, attname, default_value)
    except Exception as exc:
        if not _active():
            raise
        raise_failure(exc, root, info)


def _default_resolvers() -> tuple[Any, ...]:
    from graphene.types.resolver import attr_resolver, dict_or_attr_resolver, dict_resolver

    return (dict_or_attr_resolver, attr_resolver, dict_resolver)


def _library_resolver(resolve: Any) -> bool:
    """graphene's and graphene-django's own scalar resolvers (ids, blank choices): they read a
    loaded object and are left as they are."""
    function = resolve.func if isinstance(resolve, functools.partial) else resolve
    module = getattr(function, "__module__", None) or ""
    return module.split(".", 1)[0] in {"graphene", "graphene_django"}


def instrumented_resolver(field: Any, root_level: bool, private: bool) -> Callable[..., Any] | None:
    """What ``field`` resolves with once instrumented, or None to leave it as it is."""
    resolve = field.resolve
    if resolve is None or getattr(resolve, ORIGINAL, None) is not None:
        return None
    if root_level:
        wrapped = _root_resolver(resolve)
    elif private:
        wrapped = _private_resolver(resolve)
    elif not is_leaf_type(get_named_type(field.type)):
        wrapped = _carrier_resolver(resolve)
    elif (
        isinstance(resolve, functools.partial)
        and resolve.func in _default_resolvers()
        and len(resolve.args) == 2
        and not resolve.keywords
    ):
        wrapped = functools.partial(attribute_or_key, *resolve.args)
    elif _library_resolver(resolve):
        return None
    else:
        wrapped = _scalar_resolver(resolve)
    if not isinstance(wrapped, functools.partial):
        functools.update_wrapper(wrapped, resolve)
        # ``@public`` and ``@private`` marks are found through ``__wrapped__``.
    setattr(wrapped, ORIGINAL, resolve)
    return wrapped


def instrument(schema: Any) -> bool:
    """Instrument ``schema`` (a ``graphql.GraphQLSchema``); whether it is instrumented.

    The first call walks the schema; later calls check, one identity test a field,
    that no resolver was set since (a test's monkeypatch, code that swaps resolvers),
    and instrument any that was: a field is never left unguarded.
    """
    entry = _instrumented.get(id(schema))
    if entry is not None and entry[0] is schema:
        for field, wrapped in entry[1]:
            if field.resolve is not wrapped:
                break
        else:
            return True
    with _instrument_lock:
        _instrument_introspection()
        roots = set(root_types(schema))
        fields: list[tuple[Any, Any]] = []
        for graphql_type in schema.type_map.values():
            if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
                continue
            root_level = graphql_type in roots
            for field in graphql_type.fields.values():
                private = not root_level and marking(field.resolve) == PRIVATE
                wrapped = instrumented_resolver(field, root_level, private)
                if wrapped is not None:
                    field.resolve = wrapped
                if getattr(field.resolve, ORIGINAL, None) is not None:
                    fields.append((field, field.resolve))
        _instrumented[id(schema)] = (schema, tuple(fields))
    return True


def _instrument_introspection() -> None:
    for field in introspection_field_defs():
        if getattr(field.resolve, ORIGINAL, None) is None:
            wrapped = _meta_resolver(field.resolve)
            setattr(wrapped, ORIGINAL, field.resolve)
            field.resolve = wrapped
