"""``health``: is the database there, and how far away."""

from __future__ import annotations

import time
from typing import Any

from django.db import connections
from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from gql_audit.dbcontext import ATTRIBUTE


@never_cache
@require_GET
def health(request: HttpRequest, using: str = "default") -> JsonResponse:
    """JSON: vendor, reachability, one round trip's latency, the CockroachDB node id.

    200 when the database answers, 503 when it does not. Only the error's
    class is shown, never its message: driver messages carry host names,
    ports and user names.
    """
    connection = connections[using]
    database: dict[str, Any] = {"alias": using, "vendor": connection.vendor}
    try:
        start = time.perf_counter()
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
        database["latency_ms"] = round((time.perf_counter() - start) * 1000, 3)
        database["reachable"] = True
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        database["reachable"] = False
        database["error"] = type(exc).__name__
        return JsonResponse({"status": "unavailable", "database": database}, status=503)
    node_id = (getattr(connection, ATTRIBUTE, None) or {}).get("node_id")
    if node_id is not None:
        database["node_id"] = node_id
    return JsonResponse({"status": "ok", "database": database})
