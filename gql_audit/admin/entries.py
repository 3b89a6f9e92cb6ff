"""auditlog's entries (changes, and reads with ``ACCESS_STORE = "auditlog"``), in place of auditlog's own admin."""

from __future__ import annotations

import json
from typing import Any

import auditlog.admin  # registers auditlog's LogEntryAdmin first, so it can be replaced below
from auditlog.mixins import LogEntryAdminMixin
from django.contrib import admin
from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from gql_audit.admin.base import CONTEXT_FIELDSETS, AuditRecordAdmin, LogEntry
from gql_audit.admin.display import (
    actor_name,
    at_seconds,
    entry_context,
    entry_summary,
    object_link,
    render_data,
    user_link,
    visible,
)
from gql_audit.admin.filters import (
    ActorOfEntryFilter,
    ObjectFilter,
    RequestFilter,
    ResourceTypeFilter,
    time_filters,
)

#: Characters of a list of changed fields in the list (the page shows it whole).
SHORT_SUMMARY = 70


class LogEntryAdmin(LogEntryAdminMixin, AuditRecordAdmin):  # type: ignore[misc]
    """auditlog's entries (changes, and reads with ``ACCESS_STORE = "auditlog"``) with their context.

    Replaces auditlog's ``LogEntryAdmin``: the same list and URLs, plus the
    fields read of an ACCESS entry, the request's context, the actor snapshot
    (the actor of a since-deleted user), filters that do not scan the table.
    """

    nobody = "system"
    list_display = (
        "created_display",
        "action",
        "resource_url",
        "summary",
        "actor_display",
        "remote_addr",
        "trail_short",
    )
    list_filter = (
        "action",
        ResourceTypeFilter,
        *time_filters("timestamp"),
        ActorOfEntryFilter,
        ObjectFilter,
        RequestFilter,
    )
    list_select_related = ("content_type", "actor")
    search_fields = ("object_repr",)
    ordering = ("-timestamp",)
    fieldsets = [
        ("Entry", {"fields": ["created_display", "action", "resource_url", "trail_display", "cid"]}),
        ("Changes", {"fields": ["msg", "fields_read"]}),
        ("Actor", {"fields": ["actor_display", "actor_email", "actor_snapshot_display"]}),
        ("Request", {"fields": ["operation_display", "paths_display"]}),
        *CONTEXT_FIELDSETS,
    ]

    @staticmethod
    def gql_audit_data(entry: Any) -> dict[str, Any]:
        return entry_context(entry)

    def context_of(self, obj: Any) -> dict[str, Any]:
        context = self.gql_audit_data(obj)
        extra = (
            {k: v for k, v in (obj.additional_data or {}).items() if k != "gql_audit"}
            if isinstance(obj.additional_data, dict)
            else {}
        )
        if extra:
            context = {**context, "additional_data": extra}
        return {**context, "request_id": context.get("request_id") or obj.cid}

    @staticmethod
    def summary_of(entry: Any) -> str:
        return entry_summary(entry)

    @admin.display(description="time", ordering="timestamp")
    def created_display(self, obj: Any) -> str:
        return at_seconds(obj.timestamp)

    @admin.display(description="changes or fields read")
    def summary(self, obj: Any) -> str:
        summary = self.summary_of(obj)
        if len(summary) <= SHORT_SUMMARY:
            return summary
        return summary[: summary.rfind(",", 0, SHORT_SUMMARY)] + ", …"

    @admin.display(description="actor")
    def actor_display(self, obj: Any) -> SafeString:
        snapshot = self.gql_audit_data(obj).get("actor")
        if obj.actor is None and not snapshot:
            return format_html("{}", actor_name(None, None, obj.actor_email, nobody=self.nobody))
        return user_link(snapshot, obj.actor)

    @admin.display(description="object")
    def resource_url(self, obj: Any) -> SafeString:
        model = obj.content_type.model_class()
        if model is None:  # a model since removed
            return format_html("{} {}", visible(obj.content_type), visible(obj.object_pk))
        link = object_link(model._meta.label, obj.object_pk)
        return format_html("{} ({})", link, visible(obj.object_repr))

    @admin.display(description="changes")
    def msg(self, obj: Any) -> SafeString:
        if obj.action == LogEntry.Action.ACCESS:  # auditlog shows an empty table: say what was read
            return format_html("{}", self.summary_of(obj))
        # auditlog's rendering, escaped already; control characters in old and new values made visible.
        return mark_safe(visible(super().msg(obj)))  # noqa: S308 - escaped markup, only control characters replaced

    @admin.display(description="fields read")
    def fields_read(self, obj: Any) -> SafeString:
        if obj.action != LogEntry.Action.ACCESS:
            return format_html("{}", "-")
        return render_data(self.gql_audit_data(obj).get("fields"))

    @admin.display(description="paths")
    def paths_display(self, obj: Any) -> SafeString:
        return render_data(self.gql_audit_data(obj).get("path"))

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[Any], search_term: str
    ) -> tuple[QuerySet[Any], bool]:
        """A word finds the entries that changed a field of that name and the reads of a field of that name,
        besides auditlog's search of the object's text."""
        term = search_term.replace("\x00", "").strip()
        if not term:
            return queryset, False
        found = (
            Q(object_repr__icontains=term)
            | Q(changes__icontains=json.dumps(term))
            | Q(action=LogEntry.Action.ACCESS, additional_data__gql_audit__fields__icontains=json.dumps(term))
        )
        return queryset.filter(found), False


def replace_auditlogs_admin(site: admin.AdminSite) -> None:
    """Register ours in place of auditlog's own; an admin the service registered first is kept."""
    if site.is_registered(LogEntry):
        if type(site.get_model_admin(LogEntry)) is not auditlog.admin.LogEntryAdmin:
            return
        site.unregister(LogEntry)
    site.register(LogEntry, LogEntryAdmin)


replace_auditlogs_admin(admin.site)
