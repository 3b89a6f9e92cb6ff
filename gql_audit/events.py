"""Security events: recorded on the request context, written after the view.

A failure is recorded where it happens (authentication, a denied field, a
resolver's exception) and kept on the request context; ``store.flush``
writes them once the view, and its transaction, are done, so a rollback of the
request cannot take them. Outside a request they are written at once.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from gql_audit import context, metrics
from gql_audit.errors import sqlstate_of
from gql_audit.kinds import SEVERITY
from gql_audit.redaction import redact, safe_text
from gql_audit.store import write_now
from gql_audit.tracing import trace_ids

__all__ = ["SEVERITY", "build_event", "classify_resolver_error", "record_event", "sqlstate_of"]

#: Kinds recorded once per request; later occurrences add their path.
ONCE_PER_REQUEST = frozenset({"token_invalid", "token_expired", "unauthenticated"})
MAX_MESSAGE = 2000
MAX_PATHS = 20
#: Distinct event rows one request may make; past it, occurrences are counted in one more row.
MAX_EVENTS_PER_REQUEST = 100
OVERFLOW = ("[overflow]",)
OVERFLOW_MESSAGE = (
    f"more than {MAX_EVENTS_PER_REQUEST} distinct security events in one request; the rest are counted here"
)


def build_event(
    kind: str,
    ctx: context.RequestContext | None,
    *,
    message: str = "",
    path: str = "",
    sqlstate: str = "",
    details: dict[str, Any] | None = None,
    severity: str | None = None,
) -> dict[str, Any]:
    details = dict(details or {})
    trace = ctx.trace if ctx is not None else trace_ids()
    if trace is not None:
        details.update(trace)
    if ctx is not None:
        details["actor"] = ctx.actor_snapshot()
        if ctx.client_request_id is not None:
            details["client_request_id"] = ctx.client_request_id
        if ctx.client_cert is not None:
            details["client_cert"] = ctx.client_cert_summary()
    return {
        "kind": kind,
        "severity": severity or SEVERITY[kind],
        "created_at": timezone.now(),
        "request_id": ctx.request_id if ctx is not None else "",
        "actor_id": ctx.actor()[0] if ctx is not None else None,
        "remote_addr": ctx.remote_addr if ctx is not None else None,
        "operation": ctx.operation if ctx is not None else None,
        "path": safe_text(path)[:512],  # escapes lengthen the text: cut after them
        "message": safe_text(str(message)[:MAX_MESSAGE]),
        "sqlstate": (sqlstate or "")[:5],
        "details": redact(details),
    }


def record_event(
    kind: str,
    *,
    message: str = "",
    path: str = "",
    sqlstate: str = "",
    details: dict[str, Any] | None = None,
    merge: bool = True,
    once: bool = False,
    severity: str | None = None,
) -> None:
    """Record a security event for the current request (or write it now, outside one).

    Events of one kind, path, message and SQLSTATE merge into one row with a
    ``count``, unless ``merge`` is False (each retry is its own row). With
    ``once`` (always for token and unauthenticated events) a kind is one row
    per request whatever the path and message; later occurrences add their
    path. ``severity`` overrides the kind's (a client's malformed query is a
    ``graphql_error`` of severity ``warning``).
    """
    if kind not in SEVERITY:
        raise ValueError(f"unknown security event kind {kind!r}")
    ctx = context.current()
    if ctx is None:
        metrics.event_recorded(kind, details, sqlstate)
        write_now(
            events=[
                build_event(
                    kind, None, message=message, path=path, sqlstate=sqlstate, details=details, severity=severity
                )
            ]
        )
        return
    once = once or kind in ONCE_PER_REQUEST
    key = (kind,) if once else (kind, path, message, sqlstate)
    if not once or key not in ctx.events:  # a kind recorded once a request is counted once
        metrics.event_recorded(kind, details, sqlstate)
    if not merge:
        key = (*key, len(ctx.events))
    if key not in ctx.events and len(ctx.events) >= MAX_EVENTS_PER_REQUEST:
        # A flood (a thousand failing aliases) is one more row, counted, not a thousand.
        key, kind, message, severity = OVERFLOW, "graphql_error", OVERFLOW_MESSAGE, "warning"
        overflow = ctx.events.get(key)
        if overflow is not None:
            overflow["details"]["count"] += 1
            return
    event = ctx.events.get(key)
    if event is None:
        event = ctx.events[key] = build_event(
            kind, ctx, message=message, path=path, sqlstate=sqlstate, details=details, severity=severity
        )
        event["details"].setdefault("count", 0)
    event["details"]["count"] += 1
    if path:
        paths = event["details"].setdefault("paths", [])
        if path not in paths and len(paths) < MAX_PATHS:
            paths.append(path)


def classify_resolver_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, sqlstate)`` for an exception raised by a resolver."""
    from django.core.exceptions import PermissionDenied
    from django.db import Error as DatabaseError  # InterfaceError too, not only DatabaseError
    from graphql import GraphQLError

    from gql_audit.auth import django_graphql_jwt

    original: BaseException = exc
    code = None
    if isinstance(exc, GraphQLError):
        code = (exc.extensions or {}).get("code")
        original = exc.original_error or exc
    if code == "FORBIDDEN" or isinstance(original, (PermissionDenied, *django_graphql_jwt.permission_denied_types())):
        return "forbidden", ""
    if isinstance(original, DatabaseError):
        return "db_error", sqlstate_of(original)
    return "graphql_error", ""
