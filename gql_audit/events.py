"""Security events: recorded on the request context, written after the view.

A failure is recorded where it happens (authentication, a denied field, a
resolver's exception) and kept on the request context; ``storage.flush``
writes them once the view, and its transaction, are done, so a rollback of the
request cannot take them. Outside a request they are written at once.
"""

from __future__ import annotations

from typing import Any

from django.utils import timezone

from gql_audit import context
from gql_audit.redaction import redact

#: Kind -> severity.
SEVERITY = {
    "token_invalid": "warning",
    "token_expired": "info",
    "unauthenticated": "info",
    "forbidden": "warning",
    "graphql_error": "error",
    "db_error": "error",
    "db_retry": "warning",
    "cert_failed": "warning",
    "cert_header_untrusted": "warning",
}
#: Kinds recorded once per request; later occurrences add their path.
ONCE_PER_REQUEST = frozenset({"token_invalid", "token_expired", "unauthenticated"})
MAX_MESSAGE = 2000
MAX_PATHS = 20


def plain_path(path: Any) -> str:
    """``publicDocuments.owner`` for the graphql-core path ``publicDocuments/0/owner``."""
    keys = []
    while path is not None:
        if isinstance(path.key, str):
            keys.append(path.key)
        path = path.prev
    return ".".join(reversed(keys))


def build_event(
    kind: str,
    ctx: context.RequestContext | None,
    *,
    message: str = "",
    path: str = "",
    sqlstate: str = "",
    details: dict[str, Any] | None = None,
) -> dict[str, Any]:
    if ctx is not None and ctx.client_cert is not None:
        details = {**(details or {}), "client_cert": ctx.client_cert_summary()}
    return {
        "kind": kind,
        "severity": SEVERITY[kind],
        "created_at": timezone.now(),
        "request_id": ctx.request_id if ctx is not None else "",
        "actor_id": ctx.actor()[0] if ctx is not None else None,
        "remote_addr": ctx.remote_addr if ctx is not None else None,
        "operation": ctx.operation if ctx is not None else None,
        "path": path[:512],
        "message": str(message)[:MAX_MESSAGE],
        "sqlstate": (sqlstate or "")[:5],
        "details": redact(details or {}),
    }


def record_event(
    kind: str,
    *,
    message: str = "",
    path: str = "",
    sqlstate: str = "",
    details: dict[str, Any] | None = None,
    merge: bool = True,
) -> None:
    """Record a security event for the current request (or write it now, outside one).

    Events of one kind, path, message and SQLSTATE merge into one row with a
    ``count``, unless ``merge`` is False (each retry is its own row).
    """
    if kind not in SEVERITY:
        raise ValueError(f"unknown security event kind {kind!r}")
    ctx = context.current()
    if ctx is None:
        from gql_audit.storage import write_now

        write_now(events=[build_event(kind, None, message=message, path=path, sqlstate=sqlstate, details=details)])
        return
    key = (kind,) if kind in ONCE_PER_REQUEST else (kind, path, message, sqlstate)
    if not merge:
        key = (*key, len(ctx.events))
    event = ctx.events.get(key)
    if event is None:
        event = ctx.events[key] = build_event(kind, ctx, message=message, path=path, sqlstate=sqlstate, details=details)
        event["details"].setdefault("count", 0)
    event["details"]["count"] += 1
    if path:
        paths = event["details"].setdefault("paths", [])
        if path not in paths and len(paths) < MAX_PATHS:
            paths.append(path)


def sqlstate_of(exc: BaseException) -> str:
    """The SQLSTATE of a database error (psycopg 3, psycopg2), or ''."""
    seen = 0
    current: BaseException | None = exc
    while current is not None and seen < 8:
        code = getattr(current, "sqlstate", None) or getattr(current, "pgcode", None)
        if isinstance(code, str) and len(code) == 5:
            return code
        current = current.__cause__ or current.__context__
        seen += 1
    return ""


def classify_resolver_error(exc: BaseException) -> tuple[str, str]:
    """``(kind, sqlstate)`` for an exception raised by a resolver."""
    from django.core.exceptions import PermissionDenied
    from django.db import DatabaseError
    from graphql import GraphQLError
    from graphql_jwt.exceptions import PermissionDenied as JWTPermissionDenied

    original: BaseException = exc
    code = None
    if isinstance(exc, GraphQLError):
        code = (exc.extensions or {}).get("code")
        original = exc.original_error or exc
    if code == "FORBIDDEN" or isinstance(original, (PermissionDenied, JWTPermissionDenied)):
        return "forbidden", ""
    if isinstance(original, DatabaseError):
        return "db_error", sqlstate_of(original)
    return "graphql_error", ""
