"""The request trail page (``admin:gql_audit_trail``): every record one request left."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse

from gql_audit.admin.audited import trail_accessed
from gql_audit.admin.base import PAGE_LIMIT, LogEntry, may_view
from gql_audit.admin.display import (
    actor_name,
    changes_table,
    entry_context,
    events_table,
    operation_label,
    reads_table,
    render_data,
    visible,
)
from gql_audit.history import Read, entries_of_request, request_trail
from gql_audit.models import RequestReads, SecurityEvent


def trail_view(model_admin: admin.ModelAdmin[Any], request: HttpRequest) -> HttpResponse:
    """Every record one request left: its reads, its change entries, its security events."""
    may = may_view(request)
    if not any(may.values()):
        raise PermissionDenied
    request_id = request.GET.get("request_id", "").replace("\x00", "").strip()
    context: dict[str, Any] = {
        **model_admin.admin_site.each_context(request),
        "title": "Request trail",
        "opts": model_admin.model._meta,
        "request_id": visible(request_id),
        "may": may,
    }
    if request_id:
        trail = request_trail(request_id)
        reads = trail.reads[:PAGE_LIMIT] if may["reads"] else []
        changes = list(trail.changes.select_related("actor", "content_type")[:PAGE_LIMIT]) if may["changes"] else []
        events = list(trail.events.select_related("actor")[:PAGE_LIMIT]) if may["events"] else []
        context.update(
            reads=reads_table(reads, columns=("at", "object", "reader", "fields", "paths")),
            changes=changes_table(changes),
            events=events_table(events),
            counts={"reads": len(reads), "changes": len(changes), "events": len(events)},
            found=bool(reads or changes or events),
            summary=render_data(trail_summary(reads, changes, events, reads_context(request_id, reads))),
        )
    response = TemplateResponse(request, "gql_audit/admin/trail.html", context)
    trail_accessed(request, response, "admin:gql_audit_trail")
    return response


def reads_context(request_id: str, reads: list[Read]) -> dict[str, Any]:
    """The context of a request's reads beyond what a :class:`Read` carries (certificate, database)."""
    if not reads:
        return {}
    row = RequestReads.objects.filter(request_id=request_id).only("context").first()
    if row is not None and isinstance(row.context, dict):
        return row.context
    entry = LogEntry.objects.filter(entries_of_request(request_id), action=LogEntry.Action.ACCESS).first()
    return entry_context(entry) if entry is not None else {}


def trail_summary(
    reads: list[Read], changes: list[Any], events: list[SecurityEvent], read_context: dict[str, Any]
) -> dict[str, Any]:
    """Who and where for a request, from the first of its records that says."""
    summary: dict[str, Any] = {}
    for entry in changes:
        data = entry_context(entry)
        summary.setdefault("operation", operation_label(data.get("operation")))
        summary.setdefault("actor", actor_name(data.get("actor"), entry.actor, entry.actor_email))
        summary.setdefault("address", entry.remote_addr)
        summary.setdefault("client certificate", data.get("client_cert"))
        summary.setdefault("database", data.get("db"))
    for read in reads:
        summary.setdefault("operation", operation_label(read.operation))
        summary.setdefault("actor", actor_name(read.actor, nobody="anonymous"))
        summary.setdefault("address", read.remote_addr)
        summary.setdefault("client certificate", read_context.get("client_cert"))
        summary.setdefault("database", read_context.get("db"))
    for event in events:
        summary.setdefault("operation", operation_label(event.operation))
        summary.setdefault("actor", actor_name(event.details.get("actor"), event.actor, nobody="anonymous"))
        summary.setdefault("address", event.remote_addr)
        summary.setdefault("client certificate", event.details.get("client_cert"))
    return summary
