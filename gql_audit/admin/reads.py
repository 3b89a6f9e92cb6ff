"""The reads list (``ACCESS_STORE = "gql_audit"``): one row a request, every object it exposed."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.urls import URLPattern, path
from django.utils.html import format_html
from django.utils.safestring import SafeString

from gql_audit.admin.base import CONTEXT_FIELDSETS, AuditRecordAdmin
from gql_audit.admin.display import at_seconds, object_names, reads_summary, reads_table, user_link
from gql_audit.admin.filters import FieldReadFilter, ObjectFilter, ReaderFilter, RequestFilter, time_filters
from gql_audit.admin.trail import trail_view
from gql_audit.history import reads_in_row
from gql_audit.models import RequestReads


@admin.register(RequestReads)
class RequestReadsAdmin(AuditRecordAdmin):
    """Reads (``ACCESS_STORE = "gql_audit"``): one row a request, every object it exposed."""

    list_display = ("at_display", "reader", "operation_short", "objects_read", "remote_addr", "trail_short")
    list_filter = (*time_filters("at"), ReaderFilter, ObjectFilter, FieldReadFilter, RequestFilter)
    ordering = ("-at",)
    fieldsets = [
        ("Request", {"fields": ["at_display", "trail_display", "operation_display"]}),
        ("Actor", {"fields": ["reader", "actor_snapshot_display"]}),
        ("Objects read", {"fields": ["objects_table"]}),
        *CONTEXT_FIELDSETS,
    ]

    def context_of(self, obj: Any) -> dict[str, Any]:
        context = obj.context if isinstance(obj.context, dict) else {}
        return {**context, "request_id": obj.request_id, "operation": obj.operation, "actor": obj.actor}

    @admin.display(description="time", ordering="at")
    def at_display(self, obj: RequestReads) -> str:
        return at_seconds(obj.at)

    @admin.display(description="reader")
    def reader(self, obj: RequestReads) -> SafeString:
        return user_link(obj.actor) if obj.actor else format_html("{}", self.nobody)

    @admin.display(description="objects read: fields read")
    def objects_read(self, obj: RequestReads) -> SafeString:
        reads, names = getattr(obj, "gql_audit_reads", None) or (reads_in_row(obj), {})
        return reads_summary(reads, names)

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """The page's rows with their objects named (one query a model), the object filtered on first."""
        changelist = super().get_changelist_instance(request)
        wanted = request.GET.get(ObjectFilter.parameter_name, "").strip().lower()
        by_row = {}
        for row in changelist.result_list:
            reads = reads_in_row(row)
            # The object filtered on first, so that its fields are the ones shown.
            reads.sort(key=lambda read: f"{read.model}:{read.object_pk}".lower() != wanted)
            by_row[row.pk] = reads
        names = object_names((read.model, read.object_pk) for reads in by_row.values() for read in reads[:3])
        for row in changelist.result_list:
            row.gql_audit_reads = (by_row[row.pk], names)
        return changelist

    @admin.display(description="objects read")
    def objects_table(self, obj: RequestReads) -> SafeString:
        return reads_table(reads_in_row(obj), columns=("object", "fields", "paths"))

    def get_urls(self) -> list[URLPattern]:
        trail = path("trail/", self.admin_site.admin_view(self.trail_view), name="gql_audit_trail")
        return [trail, *super().get_urls()]

    def trail_view(self, request: HttpRequest) -> HttpResponse:
        return trail_view(self, request)
