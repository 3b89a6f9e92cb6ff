"""``AuditMiddleware``: the Graphene middleware that decides and records each field.

It runs for every field of every response. For a nested field it does: is the
field marked ``@private`` (one truthiness test when nothing is), a ``try``
around the resolver (free in Python 3.11 unless it raises), and is the value
a scalar (one set lookup): only other values can bring objects to access-log,
and a list of them is recorded once, not field by field. Root
fields, a handful per operation, do the rest: record the operation, and turn a
deferred authentication error, or a missing user, into a GraphQL error on that
field only.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import gettext
from graphql import GraphQLError

from gql_audit import context
from gql_audit.access import SCALARS, plain_path, record_value, unread
from gql_audit.conf import conf
from gql_audit.errors import CLIENT_CERT_REQUIRED, INTERNAL_ERROR, INTROSPECTION_DISABLED, MESSAGES, UNAUTHENTICATED
from gql_audit.events import classify_resolver_error, record_event
from gql_audit.visibility import INTROSPECTION_FIELDS, SchemaRules, build_rules

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
    from graphql_jwt.exceptions import JSONWebTokenError

    return isinstance(exc, (GraphQLError, JSONWebTokenError))


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
        from graphql_jwt.exceptions import JSONWebTokenError

        # Credentials the database or the encoder cannot even hold (NUL, lone
        # surrogates) are wrong credentials too, and say so in the same words.
        if isinstance(exc, (JSONWebTokenError, DataError, ValueError)):
            ctx.error_codes.add("LOGIN_FAILED")
            record_event(
                "login_failed",
                message=str(exc),
                path=path,
                details={"username": _username_tried(args), "exception": type(exc).__name__},
            )
            if isinstance(exc, JSONWebTokenError):
                return None
            return GraphQLError(gettext("Please enter valid credentials"))
    kind, sqlstate = classify_resolver_error(exc)
    original = getattr(exc, "original_error", None) or exc
    replacement = masked(exc, kind, ctx)
    code = (getattr(exc, "extensions", None) or {}).get("code")
    ctx.error_codes.add(INTERNAL_ERROR if replacement is not None else str(code) if code else kind.upper())
    record_event(
        kind,
        message=str(exc),
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


class AuditMiddleware:
    """Public and private fields, access records and failure events.

    List it in ``GRAPHENE["MIDDLEWARE"]``. graphql-core runs the *last* listed
    middleware first, so if graphql_jwt's ``JSONWebTokenMiddleware`` is kept it
    must be listed after this one.
    """

    def __init__(self) -> None:
        self._private_nested: dict[Any, frozenset[str]] = {}

    def resolve(self, next: Any, root: Any, info: Any, **args: Any) -> Any:
        if info.path.prev is None:
            return self._resolve_root(next, root, info, args)
        if self._private_nested:
            names = self._private_nested.get(info.parent_type)
            if names is not None and info.field_name in names:
                error = denial(info, "@private")
                if error is not None:
                    self._unread(root, info)
                    raise error
        try:
            value = next(root, info, **args)
            if value.__class__ not in SCALARS:
                self._record(value, info)
        except Exception as exc:
            self._unread(root, info)
            replacement = failed(exc, info)
            if replacement is None:
                raise
            raise replacement from exc
        return value

    @staticmethod
    def _record(value: Any, info: Any) -> None:
        """Access-log what ``value`` exposes; a queryset is evaluated here, so that a
        database error it raises is recorded (and masked) like the resolver's own."""
        ctx = _current()
        if ctx is not None and ctx.accessed is not None:
            record_value(ctx, value, info)
        elif isinstance(value, QuerySet):
            bool(value)

    @staticmethod
    def _unread(root: Any, info: Any) -> None:
        ctx = _current()
        if ctx is not None:
            unread(ctx, root, info.field_name)

    def _resolve_root(self, next: Any, root: Any, info: Any, args: dict[str, Any]) -> Any:
        rules = rules_for(info.schema)
        self._private_nested = rules.private_nested
        ctx = context.current()
        if ctx is not None:
            ctx.set_operation(info.operation, info.fragments)
            ctx.path = [info.path.key]
            if ctx.variables is None:
                ctx.variables = info.variable_values  # redacted when written, not per request
        name = info.field_name
        if name == "__typename":
            pass
        elif name in INTROSPECTION_FIELDS:
            mode = conf.INTROSPECTION
            if mode == "disabled":
                record_event("forbidden", message="introspection is disabled", details={"rule": "INTROSPECTION"})
                raise denied(INTROSPECTION_DISABLED)
            if mode != "public":
                error = denial(info, "INTROSPECTION")
                if error is not None:
                    raise error
        elif (info.parent_type.name, name) not in rules.public_roots:
            error = denial(info)
            if error is not None:
                raise error
        try:
            value = next(root, info, **args)
            if value.__class__ not in SCALARS:
                self._record(value, info)
        except Exception as exc:
            replacement = failed(exc, info, args)
            if replacement is None:
                raise
            raise replacement from exc
        return value
