"""OpenTelemetry, when ``opentelemetry-api`` is installed and a span is active.

Every record then carries the W3C ``trace_id`` and ``span_id`` of the span that
was active when its request began (an event written outside a request: when it
is written), so an incident responder can go from a trace to the audit trail
and back; and the span gets the GraphQL operation's attributes as
OpenTelemetry's semantic conventions for GraphQL servers name them
(``graphql.operation.type``, ``graphql.operation.name``), with the document's
SHA-256 as ``gql_audit.document.sha256`` (the conventions' ``graphql.document``
is the document's text, which can hold inline secrets: gql_audit never sets it).

Without the package, or without an active span, nothing is recorded and the
cost is one ``None`` test.
"""

from __future__ import annotations

from typing import Any

try:  # pragma: no branch - one of the two, decided at import
    from opentelemetry import trace as _trace
except ImportError:  # the optional extra is not installed
    _trace = None  # type: ignore[assignment]

#: The attribute names gql_audit sets on the active span.
OPERATION_TYPE = "graphql.operation.type"
OPERATION_NAME = "graphql.operation.name"
DOCUMENT_HASH = "gql_audit.document.sha256"


def trace_ids() -> dict[str, str] | None:
    """``{"trace_id", "span_id"}`` (lower-case hex) of the active span, or None."""
    if _trace is None:
        return None
    span_context = _trace.get_current_span().get_span_context()
    if not span_context.is_valid:
        return None
    return {"trace_id": format(span_context.trace_id, "032x"), "span_id": format(span_context.span_id, "016x")}


def annotate_operation(operation: dict[str, Any]) -> None:
    """Set the operation's attributes on the active span, if one is recording."""
    if _trace is None:
        return
    span = _trace.get_current_span()
    if not span.is_recording():
        return
    span.set_attribute(OPERATION_TYPE, str(operation["type"]))
    if operation.get("name"):
        span.set_attribute(OPERATION_NAME, str(operation["name"]))
    span.set_attribute(DOCUMENT_HASH, str(operation["hash"]))
