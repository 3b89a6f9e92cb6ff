"""The one place a GraphQL request is admitted: limits, the allow-list and throttling.

``AuditContextMiddleware`` asks :func:`gql_audit.protect.failures.check_address`
before it authenticates and :func:`check_operation` once the view is known
(``process_view``); a :class:`~gql_audit.protect.refusal.Refusal` it gets back
is answered without running the view: no resolver, no read, no password hash.
Each refusal, and each request over a limit in ``measure`` or ``observe`` mode,
is a security event naming its rule.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gql_audit import context
from gql_audit.compat import replace_body, replace_query_params
from gql_audit.conf import conf
from gql_audit.errors import OPERATION_NOT_ALLOWED, PERSISTED_QUERY_NOT_FOUND
from gql_audit.events import record_event
from gql_audit.params import body_data
from gql_audit.protect.document import Analysis, Operation, analyse, document_hash
from gql_audit.protect.limits import check_limits
from gql_audit.protect.logins import check_logins
from gql_audit.protect.manifest import lookup, manifest, requested_hash
from gql_audit.protect.refusal import RULE_ALLOW_LIST, Refusal
from gql_audit.protect.views import graphql_view

if TYPE_CHECKING:
    from django.http import HttpRequest


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
        refusal = check_limits(analysis, operation, limits, protections.limits_enforced)
        if refusal is not None:
            return refusal, None
    if protections.throttle and operation is not None and operation.type == "mutation":
        if isinstance(variables, str):
            try:
                variables = json.loads(variables)
            except (ValueError, RecursionError):
                variables = None
        refusal = check_logins(ctx, schema, operation, variables)
        if refusal is not None:
            return refusal, None
    return None, substitute


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
