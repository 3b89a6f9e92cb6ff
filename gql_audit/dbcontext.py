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
        return {"node_id": node_id, "locality": locality or None, "session_id": session_id}
    return {"backend_pid": pid}


def connection_context(alias: str, retries: int = 0) -> dict[str, Any]:
    """``vendor``, ``alias``, the probe's fields, and ``retries`` (the request's so far)."""
    connection = connections[alias]
    data: dict[str, Any] = {"vendor": connection.vendor, "alias": alias}
    data.update(getattr(connection, ATTRIBUTE, None) or {})
    data["retries"] = retries
    return data
