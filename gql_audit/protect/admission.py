"""The one place a GraphQL request is admitted: limits, the allow-list and throttling.

``AuditContextMiddleware`` asks :func:`gql_audit.protect.failures.check_address`
before it authenticates and :func:`admit` once Django has resolved the view
(``process_view``), for every view that executes GraphQL (graphene-django's
``GraphQLView`` and its subclasses: multipart file-upload views, batch views).
What is checked is the request as received (:mod:`gql_audit.protect.request`),
not what a view class is expected to read. A refusal is answered without
running the view: no resolver, no read, no password hash. Each refusal, and
each request over a limit in ``measure`` or ``observe`` mode, is a security
event naming its rule.

The protections run in this order: the body's size (before anything parses
it), the batch's size, the session-cookie CSRF rule, then for each entry the
allow-list and the document's limits and cost, then the login throttle over
every login field of the request, then the per-actor operation throttle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gql_audit.compat import replace_body, replace_query_params
from gql_audit.conf import conf
from gql_audit.errors import BAD_REQUEST, OPERATION_NOT_ALLOWED, PERSISTED_QUERY_NOT_FOUND
from gql_audit.events import record_event
from gql_audit.params import content_type
from gql_audit.protect import cost, csrf, limits, logins, operations
from gql_audit.protect.document import Analysis, Operation, analyse, document_hash
from gql_audit.protect.manifest import lookup, manifest, requested_hash
from gql_audit.protect.refusal import RULE_ALLOW_LIST, Refusal, Refused, respond
from gql_audit.protect.request import Entry, GraphQLRequest, read
from gql_audit.protect.views import graphql_view

if TYPE_CHECKING:
    from django.http import HttpRequest

    from gql_audit import context

#: The rule of a request that is not a GraphQL request at all (a batch entry that is no object).
RULE_REQUEST = "GraphQL over HTTP"


@dataclass(frozen=True)
class Protections:
    """The protection settings, read once per settings generation (not per request)."""

    #: ``QUERY_LIMITS`` set: the limits given (``mode`` and cost tuning aside), and whether enforced.
    limits: dict[str, int] | None
    limits_enforced: bool
    #: ``PERSISTED_OPERATIONS`` set, and whether its mode is ``enforce``.
    persisted: bool
    persisted_enforced: bool
    throttle: bool


def active() -> Protections | None:
    """The protections configured, or None when there are none (one lookup per request)."""

    def build() -> Protections | None:
        from gql_audit.conf import QUERY_LIMIT_KEYS

        configured, persisted = conf.QUERY_LIMITS, conf.PERSISTED_OPERATIONS
        if not (configured or persisted or conf.THROTTLE):
            return None
        return Protections(
            limits={k: v for k, v in configured.items() if k in QUERY_LIMIT_KEYS and v is not None}
            if configured
            else None,
            limits_enforced=bool(configured) and configured.get("mode", "enforce") == "enforce",
            persisted=bool(persisted),
            persisted_enforced=bool(persisted) and persisted.get("mode", "observe") == "enforce",
            throttle=bool(conf.THROTTLE),
        )

    found: Protections | None = conf.derived("protections", build)
    return found


def admit(request: HttpRequest, ctx: context.RequestContext, view_func: Any) -> Refused | None:
    """The response refusing the request ``view_func`` is about to run, or None to run it."""
    view = graphql_view(view_func)
    if view is None:
        return None
    schema, batch_view = view
    ctx.graphql_view = True
    if ctx.view_schema is not None:  # the schema the view will execute, when it could be told exactly
        schema = ctx.view_schema
    protections = active()
    refusal, entries = (
        _admit(request, ctx, schema, protections) if protections is not None else _plain(request, ctx, batch_view)
    )
    return respond(ctx, refusal, entries) if refusal is not None else None


def _plain(request: HttpRequest, ctx: context.RequestContext, batch_view: bool) -> tuple[Refusal | None, int | None]:
    """With no protection configured: the CSRF rule, and a batch whose entries are not objects."""
    csrf.check_session(request, ctx)
    if batch_view or content_type(request) == "multipart/form-data":
        found = read(request)
        if found.problem is not None:
            return _malformed(found), found.size if found.batch else None
    return None, None


def _malformed(found: GraphQLRequest) -> Refusal:
    record_event(
        "graphql_error",
        message=f"the request body is not a GraphQL request: {found.problem}",
        details={"status": 400, "rule": RULE_REQUEST},
        severity="warning",
    )
    return Refusal(BAD_REQUEST, RULE_REQUEST, 400)


def _admit(
    request: HttpRequest, ctx: context.RequestContext, schema: Any, protections: Protections
) -> tuple[Refusal | None, int | None]:
    configured = protections.limits or {}
    enforced = protections.limits_enforced
    refusal = limits.check_size(request, configured, enforced) if configured else None
    if refusal is not None:
        return refusal, None
    found = read(request)
    size = found.size if found.batch else None
    if found.problem is not None:
        return _malformed(found), size
    if configured and found.batch:
        refusal = limits.check_batch(found.size, configured, enforced)
        if refusal is not None:
            return refusal, size
    csrf.check_session(request, ctx)
    key = _verdict_key(found, schema)
    verdicts = _verdicts()
    known = verdicts.get(key) if key is not None else None
    if known is not None and known.schema is schema:
        entry = found.entries[0]
        analyses = [(entry, known.analysis, entry.query)]
        substitutes: list[str | None] = [None]
        _name_operation(ctx, known.analysis, known.analysis.operation(entry.operation_name))
        if known.costs:
            ctx.costs.update(known.costs)
            _cost_of_operation(ctx)
    else:
        analyses = []
        substitutes = []
        for entry in found.entries:
            refusal, substitute, measured = _entry(request, entry, protections)
            if refusal is not None:
                return refusal, size
            substitutes.append(substitute)
            if measured is not None:
                analyses.append((entry, *measured))
        if analyses:
            first_entry, first, _ = analyses[0]
            _name_operation(ctx, first, first.operation(first_entry.operation_name))
        # The same text is admitted the same way again (whichever of its operations is
        # named): kept when nothing was recorded for it and nothing but its text decided
        # (no variable sized its cost).
        keep = key is not None and len(analyses) == 1 and substitutes == [None]
        keep = keep and (not protections.persisted or analyses[0][1].sha256 in manifest())
        if configured:
            # Every operation's cost is on its records whenever QUERY_LIMITS is set, max_cost or not.
            costs, sized = _costs(ctx, schema, analyses) if schema is not None else ([], False)
            refusal, over = limits.measure_documents([a for _, a, _ in analyses], costs, configured, enforced)
            if refusal is not None:
                return refusal, size
            keep = keep and not over and not sized
        if keep:
            analysis = analyses[0][1]
            kept = {k: v for k, v in ctx.costs.items() if k[0] == analysis.sha256}
            _keep(verdicts, key, _Verdict(analysis, kept, schema))
    if protections.throttle:
        attempted = [(op, entry.variables) for entry, a, _ in analyses for op in a.operations if op.type == "mutation"]
        refusal = logins.check_logins(ctx, schema, attempted) if attempted else None
        refusal = refusal or operations.check_operations(ctx, len(found.entries))
        if refusal is not None:
            return refusal, size
    if any(substitutes):
        _substitute(request, found, substitutes)
    ctx.admitted = {analysis.sha256 for _, analysis, _ in analyses}
    return None, None


def admit_execution(ctx: context.RequestContext, document: str, variables: Any, schema: Any) -> Refusal | None:
    """A document the view executes that admission did not see (a view that reads its
    request in a way of its own): checked now, before its first root field resolves."""
    protections = active()
    sha256 = document_hash(document)
    ctx.admitted = {*(ctx.admitted or ()), sha256}
    if protections is None:
        return None
    entry = Entry({"query": document}, document, None, variables)
    refusal, _, measured = _entry(ctx.request, entry, protections) if ctx.request is not None else (None, None, None)
    if refusal is None and measured is not None:
        analysis, text = measured
        configured = protections.limits or {}
        if configured:
            costs = _costs(ctx, schema, [(entry, analysis, text)])[0]
            refusal = limits.check_documents([analysis], costs, configured, protections.limits_enforced)
        if refusal is None and protections.throttle:
            attempted = [(op, variables) for op in analysis.operations if op.type == "mutation"]
            refusal = logins.check_logins(ctx, schema, attempted) if attempted else None
    if refusal is not None:
        ctx.error_codes.add(refusal.code)
        ctx.refusal = refusal
    return refusal


def _entry(
    request: HttpRequest, entry: Entry, protections: Protections
) -> tuple[Refusal | None, str | None, tuple[Analysis, str] | None]:
    """One GraphQL request of a batch: its refusal, the document to put in its place, and its
    analysis with the text analysed."""
    query = entry.query
    substitute = None
    if protections.persisted and not query:
        sha256 = requested_hash(entry.data, _query_string(request))
        if sha256 is None:
            return None, None, None
        query = lookup(sha256)
        if query is None:
            _unknown(sha256, True, "persisted operation hash not in the manifest")
            return Refusal(PERSISTED_QUERY_NOT_FOUND, RULE_ALLOW_LIST, 400), None, None
        substitute = query
    if not isinstance(query, str):
        return None, None, None  # the view says what is wrong with it
    listed = substitute is not None or not protections.persisted
    if not listed and protections.persisted_enforced:
        # Refused on its hash alone: an unlisted document is never parsed.
        sha256 = document_hash(query)
        if sha256 not in manifest():
            _unknown(sha256, True)
            return Refusal(OPERATION_NOT_ALLOWED, RULE_ALLOW_LIST, 400), None, None
        listed = True
    configured = protections.limits
    analysis = analyse(query, configured.get("max_tokens") if configured else None, stop=protections.limits_enforced)
    if not listed and analysis.sha256 not in manifest():
        _unknown(analysis.sha256, False)
    return None, substitute, (analysis, query)


def _query_string(request: HttpRequest) -> Any:
    try:
        return request.GET
    except Exception:  # noqa: BLE001 - a query string Django refuses: nothing named there
        return {}


def _costs(
    ctx: context.RequestContext, schema: Any, analyses: list[tuple[Entry, Analysis, str]]
) -> tuple[list[int], bool]:
    """The highest estimated cost of each document (each operation's is kept for its
    records), and whether a variable's value sized any of them."""
    worst = []
    sized = False
    for entry, analysis, text in analyses:
        if not analysis.operations:
            continue
        found = cost.estimate(text, analysis.sha256, schema, entry.variables)
        for name, value in found.operations.items():
            ctx.costs[(analysis.sha256, name)] = value
        worst.append(found.worst)
        sized = sized or bool(found.sized_by)
    _cost_of_operation(ctx)
    return worst, sized


def _cost_of_operation(ctx: context.RequestContext) -> None:
    """The estimated cost of the operation the request runs, on its records."""
    if ctx.operation is not None:
        ctx.cost = ctx.costs.get((ctx.operation["hash"], ctx.operation["name"]))


# --- documents admitted before ------------------------------------------------------------

#: Verdicts kept per settings, at most (all are dropped when full: a service's documents
#: are a few hundred; a client varying its text only makes each request pay in full).
MAX_VERDICTS = 1024
#: Longer texts are not kept.
VERDICT_MAX_CHARS = 8192


@dataclass(frozen=True)
class _Verdict:
    """A document admitted with nothing recorded: its analysis and every operation's cost
    (the request names which one runs)."""

    analysis: Analysis
    costs: dict[tuple[str, str | None], int]
    #: The schema it was costed on (held: its ``id()`` in the key stays its own).
    schema: Any


def _verdicts() -> dict[tuple[str, int], _Verdict]:
    """``(text, id(schema))`` -> verdict, for the settings in force."""
    found: dict[tuple[str, int], _Verdict] = conf.derived("admission_verdicts", dict)
    return found


def _verdict_key(found: GraphQLRequest, schema: Any) -> tuple[str, int] | None:
    """What a request's verdict is kept under: one GraphQL request whose document is sent
    as text (not a persisted hash); None otherwise."""
    if found.batch or len(found.entries) != 1:
        return None
    query = found.entries[0].query
    if type(query) is not str or len(query) > VERDICT_MAX_CHARS:
        return None
    return query, id(schema)


def _keep(verdicts: dict[tuple[str, int], _Verdict], key: Any, verdict: _Verdict) -> None:
    if len(verdicts) >= MAX_VERDICTS:
        verdicts.clear()
    verdicts[key] = verdict


def _unknown(sha256: str, enforced: bool, message: str = "operation not in the persisted-operation manifest") -> None:
    record_event(
        "operation_unknown",
        message=message,
        details={"rule": RULE_ALLOW_LIST, "sha256": sha256[:128], "enforced": enforced},
    )


def _name_operation(ctx: context.RequestContext, analysis: Analysis, operation: Operation | None) -> None:
    """Name the operation on the request's records now: a refused one never reaches a resolver."""
    if ctx.operation is None and operation is not None:
        ctx.operation = {"type": operation.type, "name": operation.name, "hash": analysis.sha256}


def _substitute(request: HttpRequest, found: GraphQLRequest, documents: list[str | None]) -> None:
    """Put allowed documents where graphene-django reads them: the query string
    (read before the body, whatever the method), or each entry of a batch body."""
    if not found.batch:
        params = request.GET.copy()
        params["query"] = documents[0] or ""
        replace_query_params(request, params)
        return
    for entry, document in zip(found.entries, documents, strict=True):
        if document is not None and isinstance(entry.data, dict):
            entry.data["query"] = document
    replace_body(request, json.dumps([entry.data for entry in found.entries]).encode("utf-8"))
