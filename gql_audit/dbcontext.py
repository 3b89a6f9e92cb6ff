"""The database context on every audit record: which database, which node, which session.

Probed once per connection when Django opens it (``gql_audit.db`` connects
the probe to ``connection_created``), kept on the connection object, read on
every record without a query.
"""

from __future__ import annotations

from typing import Any

from django.db import connections

POSTGRES_VENDORS = frozenset({"postgresql", "cockroachdb"})

PROBE_SQL = (
    "SELECT current_setting('node_id', true), current_setting('locality', true), "
    "current_setting('session_id', true), pg_backend_pid()"
)
#: Where the probe's result lives on a Django connection object.
ATTRIBUTE = "gql_audit_context"


def probe(connection: Any) -> dict[str, Any]:
    """The connection's database context (one query, PostgreSQL and CockroachDB alike)."""
    if connection.vendor not in POSTGRES_VENDORS:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(PROBE_SQL)
        node_id, locality, session_id, pid = cursor.fetchone()
    if connection.vendor == "cockroachdb":
        return cockroachdb_context(node_id, locality, session_id)
    return {"backend_pid": pid}


def cockroachdb_context(node_id: str | None, locality: str | None, session_id: str | None) -> dict[str, Any]:
    """CockroachDB's session variables as the context records them: None for what is not known.

    ``node_id`` is ``"0"`` when the node is not known, as for a tenant's SQL pod
    (cockroach ``pkg/sql/vars.go``: ``OptionalNodeID``, "zero if unavailable").
    """
    return {
        "node_id": node_id if node_id not in (None, "", "0") else None,
        "locality": locality or None,
        "session_id": session_id or None,
    }


def connection_context(alias: str, retries: int = 0) -> dict[str, Any]:
    """``vendor``, ``alias``, the probe's fields, and ``retries`` (the request's so far)."""
    connection = connections[alias]
    data: dict[str, Any] = {"vendor": connection.vendor, "alias": alias}
    data.update(getattr(connection, ATTRIBUTE, None) or {})
    data["retries"] = retries
    return data
