"""``health``: is the database there, and how far away; ``metrics``: Prometheus metrics."""

from __future__ import annotations

import logging
import time
from typing import Any

from django.db import connections
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from gql_audit.conf import conf
from gql_audit.dbcontext import ATTRIBUTE

logger = logging.getLogger("gql_audit.metrics")


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


@never_cache
@require_GET
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus text exposition of gql_audit's metrics (``METRICS``; 404 when off).

    Under several processes (``PROMETHEUS_MULTIPROC_DIR`` set) the counts of every
    process are added up; the outbox's backlog and the newest checkpoint's age are
    read from the database at each scrape. The view asks for no credentials: route
    it where only the monitoring system reaches it.
    """
    if not conf.METRICS:
        raise Http404("METRICS is off.")
    import os

    from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest, multiprocess

    from gql_audit import metrics as counted

    counted.enabled()  # the process's metrics exist before they are read
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    else:
        registry = CollectorRegistry()
        registry.register(_Registered(REGISTRY))
    registry.register(_DatabaseGauges())
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class _Registered:
    """gql_audit's own metrics of this process, out of the default registry."""

    def __init__(self, registry: Any) -> None:
        self.registry = registry

    def collect(self) -> Any:
        for family in self.registry.collect():
            if family.name.startswith("gql_audit_"):
                yield family


class _DatabaseGauges:
    """Gauges read from the database at each scrape: the outbox's backlog, the newest checkpoint's age."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        from gql_audit.export.outbox import enabled
        from gql_audit.export.ship import backlog

        found = GaugeMetricFamily(
            "gql_audit_outbox_backlog",
            "Audit records in the export outbox not yet delivered to every sink (counted up to 1,000,000).",
        )
        try:
            found.add_metric([], backlog() if enabled() else 0)
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did: no sample
            logger.exception("the outbox backlog could not be counted")
        yield found
        age = GaugeMetricFamily(
            "gql_audit_checkpoint_age_seconds", "Seconds since the newest stored checkpoint was written."
        )
        try:
            newest = _newest_checkpoint()
            if newest is not None:
                age.add_metric([], max(time.time() - newest.timestamp(), 0.0))
        except Exception:  # noqa: BLE001 - a scrape must not fail because the database did: no sample
            logger.exception("the newest checkpoint could not be read")
        yield age


def _newest_checkpoint() -> Any:
    """When the newest checkpoint (``gql_audit_checkpoint``) was written, or None: none stored,
    or ``CHECKPOINTS`` off."""
    from gql_audit.models import Checkpoint
    from gql_audit.store import audit_alias

    if conf.CHECKPOINTS is None:
        return None
    return Checkpoint.objects.using(audit_alias()).order_by("-created_at").values_list("created_at", flat=True).first()
