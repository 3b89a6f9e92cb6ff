"""Error codes put in ``extensions.code`` of the GraphQL errors gql_audit raises."""

from __future__ import annotations

TOKEN_EXPIRED = "TOKEN_EXPIRED"
TOKEN_INVALID = "TOKEN_INVALID"
UNAUTHENTICATED = "UNAUTHENTICATED"
INTROSPECTION_DISABLED = "INTROSPECTION_DISABLED"
CLIENT_CERT_REQUIRED = "CLIENT_CERT_REQUIRED"
AUTH_UNAVAILABLE = "AUTH_UNAVAILABLE"
INTERNAL_ERROR = "INTERNAL_ERROR"
BAD_REQUEST = "BAD_REQUEST"
AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
QUERY_TOO_COMPLEX = "QUERY_TOO_COMPLEX"
OPERATION_NOT_ALLOWED = "OPERATION_NOT_ALLOWED"
PERSISTED_QUERY_NOT_FOUND = "PERSISTED_QUERY_NOT_FOUND"
THROTTLED = "THROTTLED"

MESSAGES = {
    TOKEN_EXPIRED: "The authentication token has expired.",
    TOKEN_INVALID: "The authentication token is invalid.",
    UNAUTHENTICATED: "Authentication is required for this field.",
    INTROSPECTION_DISABLED: "Introspection is disabled.",
    CLIENT_CERT_REQUIRED: "A verified client certificate is required for this field.",
    AUTH_UNAVAILABLE: "Authentication is unavailable right now; try again later.",
    INTERNAL_ERROR: "An internal error occurred.",
    BAD_REQUEST: "The request body is not a GraphQL request.",
    AUDIT_UNAVAILABLE: "The audit trail could not be written; the response was withheld.",
    QUERY_TOO_COMPLEX: "The query is too complex.",
    OPERATION_NOT_ALLOWED: "The operation is not allowed.",
    # Apollo clients resend the full document when told exactly this.
    PERSISTED_QUERY_NOT_FOUND: "PersistedQueryNotFound",
    THROTTLED: "Too many attempts; try again later.",
}


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


#: SQLSTATE classes whose primary messages name constraints, relations, columns or
#: the conflict, not a row's values: integrity constraints (23), transaction state
#: (25), rollbacks such as serialization failures (40: only up to the first colon,
#: where CockroachDB's retry errors go on to print the keys of rows), syntax and
#: access (42), resources (53, 54), object state and locks (55), operator
#: intervention (57).
NAMING_CLASSES = frozenset({"23", "25", "40", "42", "53", "54", "55", "57"})


def describe_database_error(exc: BaseException) -> tuple[str, str]:
    """``(text, sqlstate)`` of a database error for an event, without hosts, ports,
    credentials or the values of rows.

    A driver's text names the host, port and user of a connection that failed
    (``connection to server at "10.0.0.5", port 5432 failed``), and PostgreSQL's
    DETAIL the values of the row refused (``Key (email)=(ann@example.org) already
    exists``). Kept: the exception class and SQLSTATE, with the server's primary
    message for the classes whose messages name objects, never values
    (:data:`NAMING_CLASSES`: not data exceptions, class 22, which quote the input,
    nor a trigger's own ``RAISE``, nor connecting and logging in). SQLite's own texts, which name tables
    and constraints but no values, are kept whole; any other error without a
    SQLSTATE keeps its class only.
    """
    import sqlite3

    sqlstate = sqlstate_of(exc)
    reason = type(exc).__name__
    # Django wraps the driver's error: the server's diagnostics are on its cause.
    diag = getattr(exc, "diag", None) or getattr(exc.__cause__, "diag", None)
    primary = getattr(diag, "message_primary", None)
    if sqlstate:
        reason += f" (SQLSTATE {sqlstate})"
        if isinstance(primary, str) and primary and sqlstate[:2] in NAMING_CLASSES:
            if sqlstate[:2] == "40":
                # CockroachDB's "restart transaction: ..." goes on to print keys, which hold row values.
                primary = primary.split(":", 1)[0]
            reason += f": {primary}"
    elif isinstance(exc, sqlite3.Error) or isinstance(exc.__cause__, sqlite3.Error):
        reason += f": {exc}"
    return reason[:500], sqlstate
