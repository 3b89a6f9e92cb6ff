"""Refusals decided before the view runs: limits, the allow-list and throttling.

``AuditContextMiddleware`` asks :func:`check_address` before it authenticates and
:func:`check_operation` once the view is known (``process_view``); a
:class:`Refusal` it gets back is answered without running the view: no
resolver, no read, no password hash. Each refusal, and each request over a
limit in ``measure`` or ``observe`` mode, is a security event naming its rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gql_audit import context
from gql_audit.compat import replace_body, replace_query_params
from gql_audit.conf import conf
from gql_audit.errors import (
    MESSAGES,
    OPERATION_NOT_ALLOWED,
    PERSISTED_QUERY_NOT_FOUND,
    QUERY_TOO_COMPLEX,
    THROTTLED,
)
from gql_audit.events import record_event
from gql_audit.limits import Analysis, Operation, analyse, document_hash, over_limits
from gql_audit.params import body_data
from gql_audit.persisted import lookup, manifest, requested_hash
from gql_audit.throttle import Rate, ThrottleUnavailable, count, hit, normalised, rate

if TYPE_CHECKING:
    from django.http import HttpRequest

#: Rule names, as refusal events' ``details.rule`` and errors' ``extensions.rule`` give them.
RULE_LIMITS = "QUERY_LIMITS"
RULE_ALLOW_LIST = "PERSISTED_OPERATIONS"
RULE_THROTTLE = "THROTTLE"
#: Failures counted against an address's ``auth_failures`` rate.
FAILURE_KINDS = frozenset({"token_invalid", "cert_failed", "login_failed"})


@dataclass
class Refusal:
    """What the client is told instead of running the view."""

    code: str
    rule: str
    status: int
    retry_after: int | None = None

    def body(self, entries: int | None) -> Any:
        error = {"message": MESSAGES[self.code], "extensions": {"code": self.code, "rule": self.rule}}
        one = {"errors": [error]}
        return one if entries is None else [one] * entries


@dataclass(frozen=True)
class Protections:
    """The protection settings, read once per settings generation (not per request)."""

    #: ``QUERY_LIMITS`` set: the limits given (``mode`` aside), and whether they are enforced.
    limits: dict[str, int] | None
    limits_enforced: bool
    #: ``PERSISTED_OPERATIONS`` set, and whether its mode is ``enforce``.
    persisted: bool
    persisted_enforced: bool
    throttle: bool


def active() -> Protections | None:
    """The protections configured, or None when there are none (one lookup per request)."""

    def build() -> Protections | None:
        limits, persisted = conf.QUERY_LIMITS, conf.PERSISTED_OPERATIONS
        if not (limits or persisted or conf.THROTTLE):
            return None
        return Protections(
            limits={k: v for k, v in limits.items() if k != "mode" and v is not None} if limits else None,
            limits_enforced=bool(limits) and limits.get("mode", "enforce") == "enforce",
            persisted=bool(persisted),
            persisted_enforced=bool(persisted) and persisted.get("mode", "observe") == "enforce",
            throttle=bool(conf.THROTTLE),
        )

    found: Protections | None = conf.derived("protections", build)
    return found


# --- throttling ---------------------------------------------------------------------


def _unavailable(exc: ThrottleUnavailable) -> None:
    """A cache that is down lets requests through (fail open), and says so."""
    record_event(
        "throttle_unavailable",
        message=f"throttle cache {conf.THROTTLE_CACHE!r} unavailable ({exc}); request not throttled",
        details={"rule": RULE_THROTTLE, "cache": conf.THROTTLE_CACHE},
        once=True,
    )


def _throttled(name: str, limit: Rate, attempts: int, left: int, **details: Any) -> Refusal:
    record_event(
        "throttled",
        message=f"over the {name} rate {limit.text}",
        details={"rule": RULE_THROTTLE, "limit": name, "rate": limit.text, "attempts": attempts, **details},
    )
    return Refusal(THROTTLED, RULE_THROTTLE, 429, retry_after=left)


def _address(ctx: context.RequestContext) -> str:
    return ctx.remote_addr or "unknown"


def check_address(ctx: context.RequestContext) -> Refusal | None:
    """Refuse every request from an address past its ``auth_failures`` rate, before it authenticates."""
    limit = rate("auth_failures") if conf.THROTTLE else None
    if limit is None:
        return None
    try:
        failures, left = count("auth_failures", limit, _address(ctx))
    except ThrottleUnavailable as exc:
        _unavailable(exc)
        return None
    if failures >= limit.limit:
        return _throttled("auth_failures", limit, failures, left, scope="address")
    return None


def count_failures(ctx: context.RequestContext) -> None:
    """Add this request's authentication and certificate failures to its address's count."""
    limit = rate("auth_failures") if conf.THROTTLE else None
    if limit is None:
        return
    failures = 0
    for event in list(ctx.events.values()):
        if event["kind"] in FAILURE_KINDS:
            failures += event["details"].get("count", 1) if event["kind"] == "login_failed" else 1
    if failures:
        try:
            hit("auth_failures", limit, _address(ctx), failures)
        except ThrottleUnavailable as exc:
            _unavailable(exc)


def _username(root_field: Any, path: tuple[str, ...], variables: Any) -> Any:
    from graphql import Undefined, value_from_ast_untyped

    arguments = dict(root_field.arguments)
    node = arguments.get(path[0])
    if node is None:
        return None
    try:
        value = value_from_ast_untyped(node, variables if isinstance(variables, dict) else None)
    except Exception:  # noqa: BLE001 - a value no parser could read: no username, still an attempt
        return None
    for key in path[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is Undefined else value


def _check_logins(ctx: context.RequestContext, schema: Any, operation: Operation, variables: Any) -> Refusal | None:
    """Count each login this operation would attempt; refuse before any password is hashed."""
    from gql_audit.visibility import login_arguments

    logins = login_arguments(schema) if schema is not None else {}
    attempts = [(rf, logins[rf.name]) for rf in operation.root_fields if rf.name in logins]
    if not attempts:
        return None
    total = len(attempts) if not operation.truncated else max(len(attempts), 1000)
    by_user: dict[str, tuple[Any, int]] = {}
    for root_field, path in attempts:
        tried = _username(root_field, path, variables)
        key = normalised(tried)
        by_user[key] = (tried, by_user.get(key, (tried, 0))[1] + 1)
    address = _address(ctx)
    try:
        per_address = rate("login_address")
        if per_address is not None:
            seen, left = hit("login_address", per_address, address, total)
            if seen > per_address.limit:
                return _throttled("login_address", per_address, seen, left, scope="address")
        per_user = rate("login")
        if per_user is not None:
            for key, (tried, n) in by_user.items():
                seen, left = hit("login", per_user, key, n)
                if seen > per_user.limit:
                    return _throttled("login", per_user, seen, left, scope="username", username=tried)
        failures = rate("auth_failures")
        if failures is not None:
            seen, left = count("auth_failures", failures, address)
            if seen + total > failures.limit:
                return _throttled("auth_failures", failures, seen + total, left, scope="address")
    except ThrottleUnavailable as exc:
        _unavailable(exc)
    return None


# --- limits and the allow-list --------------------------------------------------------


def _check_limits(
    analysis: Analysis, operation: Operation | None, limits: dict[str, int], enforced: bool
) -> Refusal | None:
    cost = operation.cost if operation is not None else analysis.worst()
    exceeded = over_limits(cost, limits)
    if analysis.over_tokens:
        # The parser stopped counting there: the value says "more than max".
        exceeded.insert(0, ("max_tokens", limits["max_tokens"] + 1, limits["max_tokens"]))
    for name, value, maximum in exceeded:
        record_event(
            "query_limit",
            message=f"{name} {maximum} exceeded" + (f": {analysis.problem}" if analysis.problem else ""),
            details={"rule": RULE_LIMITS, "limit": name, "value": value, "max": maximum, "enforced": enforced},
        )
    if exceeded and enforced:
        return Refusal(QUERY_TOO_COMPLEX, RULE_LIMITS, 400)
    return None


def _unknown(sha256: str, enforced: bool, message: str = "operation not in the persisted-operation manifest") -> None:
    record_event(
        "operation_unknown",
        message=message,
        details={"rule": RULE_ALLOW_LIST, "sha256": sha256[:128], "enforced": enforced},
    )


def _set_operation(ctx: context.RequestContext, analysis: Analysis, operation: Operation | None) -> None:
    """Name the operation on the request's records now: a refused one never reaches a resolver."""
    if ctx.operation is None and operation is not None:
        ctx.operation = {"type": operation.type, "name": operation.name, "hash": analysis.sha256}


def _check_entry(
    ctx: context.RequestContext, request: HttpRequest, entry: Any, schema: Any, protections: Protections
) -> tuple[Refusal | None, str | None]:
    """One GraphQL request (a batch has several): the refusal, and the document to substitute."""
    get = request.GET
    data = entry if hasattr(entry, "get") else {}
    try:
        if get:  # graphene-django reads the query string first, whatever the method
            query = get.get("query") or data.get("query")
            operation_name = get.get("operationName") or data.get("operationName")
            variables = get.get("variables") or data.get("variables")
        else:
            query, operation_name, variables = data.get("query"), data.get("operationName"), data.get("variables")
    except Exception:  # noqa: BLE001 - a query string Django refuses: the view answers it
        return None, None
    substitute = None
    if protections.persisted and not query:
        sha256 = requested_hash(data, get)
        if sha256 is None:
            return None, None
        query = lookup(sha256)
        if query is None:
            _unknown(sha256, True, "persisted operation hash not in the manifest")
            return Refusal(PERSISTED_QUERY_NOT_FOUND, RULE_ALLOW_LIST, 400), None
        substitute = query
    if not isinstance(query, str):
        return None, None  # the view says what is wrong with it
    listed = substitute is not None or not protections.persisted
    if not listed and protections.persisted_enforced:
        # Refused on its hash alone: an unlisted document is never parsed.
        sha256 = document_hash(query)
        if sha256 not in manifest():
            _unknown(sha256, True)
            return Refusal(OPERATION_NOT_ALLOWED, RULE_ALLOW_LIST, 400), None
        listed = True
    limits = protections.limits
    analysis = analyse(query, limits.get("max_tokens") if limits else None, stop=protections.limits_enforced)
    operation = analysis.operation(operation_name)
    _set_operation(ctx, analysis, operation)
    if not listed and analysis.sha256 not in manifest():
        _unknown(analysis.sha256, False)
    if limits is not None:
        refusal = _check_limits(analysis, operation, limits, protections.limits_enforced)
        if refusal is not None:
            return refusal, None
    if protections.throttle and operation is not None and operation.type == "mutation":
        if isinstance(variables, str):
            try:
                variables = json.loads(variables)
            except (ValueError, RecursionError):
                variables = None
        refusal = _check_logins(ctx, schema, operation, variables)
        if refusal is not None:
            return refusal, None
    return None, substitute


_views: dict[int, tuple[Any, tuple[Any, bool] | None]] = {}


def graphql_view(view_func: Any) -> tuple[Any, bool] | None:
    """``(GraphQL schema, batch)`` of a graphene-django view, or None for any other view."""
    entry = _views.get(id(view_func))
    if entry is None or entry[0] is not view_func:
        entry = _views[id(view_func)] = (view_func, _inspect_view(view_func))
    if entry[1] is None:
        return None
    schema, batch = entry[1]
    if schema is None:  # the view takes GRAPHENE["SCHEMA"], which settings may change
        from graphene_django.settings import graphene_settings

        schema = graphene_settings.SCHEMA
    return getattr(schema, "graphql_schema", schema), batch


def _inspect_view(view_func: Any) -> tuple[Any, bool] | None:
    """``(its own schema or None, batch)`` of a graphene-django view (once per view), or None."""
    from graphene_django.views import GraphQLView

    view_class = getattr(view_func, "view_class", None)
    if not (isinstance(view_class, type) and issubclass(view_class, GraphQLView)):
        return None
    initkwargs = getattr(view_func, "view_initkwargs", None) or {}
    schema = initkwargs.get("schema") or getattr(view_class, "schema", None)
    return schema, bool(initkwargs.get("batch") or getattr(view_class, "batch", False))


def check_operation(
    request: HttpRequest, ctx: context.RequestContext, view_func: Any, protections: Protections
) -> tuple[Refusal, int | None] | None:
    """Check what a GraphQL view is about to run: ``(refusal, batch size or None)``, or None to run it.

    A request naming a persisted operation by hash alone gets the document put
    in its place, so that the view runs it as if it had been sent.
    """
    view = graphql_view(view_func)
    if view is None:
        return None
    schema, batch = view
    if ctx.view_schema is not None:  # the schema the view will execute, when it could be told exactly
        schema = ctx.view_schema
    data = body_data(request)
    entries = [data] if not (batch and isinstance(data, list)) else data
    substitutes: list[str | None] = []
    for entry in entries:
        refusal, substitute = _check_entry(ctx, request, entry, schema, protections)
        if refusal is not None:
            return refusal, (len(entries) if batch and isinstance(data, list) else None)
        substitutes.append(substitute)
    if any(substitutes):
        _substitute(request, data, entries, substitutes, batch and isinstance(data, list))
    return None


def _substitute(request: HttpRequest, data: Any, entries: list[Any], documents: list[str | None], batch: bool) -> None:
    """Put allowed documents where graphene-django reads them: the query string
    (read before the body, whatever the method), or each entry of a batch body."""
    if not batch:
        params = request.GET.copy()
        params["query"] = documents[0] or ""
        replace_query_params(request, params)
        return
    for entry, document in zip(entries, documents, strict=True):
        if document is not None and isinstance(entry, dict):
            entry["query"] = document
    replace_body(request, json.dumps(data).encode("utf-8"))
