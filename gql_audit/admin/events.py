"""The security events list."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import SafeString

from gql_audit.admin.base import CONTEXT_FIELDSETS, AuditRecordAdmin
from gql_audit.admin.display import at_seconds, render_data, user_link, visible
from gql_audit.admin.filters import USERNAME_KINDS, ActorOfEventFilter, RequestFilter, time_filters
from gql_audit.models import SecurityEvent

#: Characters of a security event's message in the list (the page shows it whole).
MESSAGE_PREVIEW = 160


@admin.register(SecurityEvent)
class SecurityEventAdmin(AuditRecordAdmin):
    """Security events: evidence, not data to edit."""

    list_display = (
        "created_display",
        "kind",
        "severity",
        "username",
        "remote_addr",
        "operation_short",
        "path_display",
        "message_preview",
        "trail_short",
    )
    list_filter = ("kind", "severity", *time_filters("created_at"), ActorOfEventFilter, RequestFilter)
    list_select_related = ("actor",)
    ordering = ("-created_at",)
    fieldsets = [
        ("Event", {"fields": ["created_display", "kind", "severity", "message_display", "path_display", "sqlstate"]}),
        ("Request", {"fields": ["trail_display", "operation_display"]}),
        ("Actor", {"fields": ["username", "actor_snapshot_display"]}),
        ("Details", {"fields": ["details_display"]}),
        *CONTEXT_FIELDSETS,
    ]

    def context_of(self, obj: Any) -> dict[str, Any]:
        details = obj.details if isinstance(obj.details, dict) else {}
        return {**details, "request_id": obj.request_id, "operation": obj.operation}

    @admin.display(description="time", ordering="created_at")
    def created_display(self, obj: SecurityEvent) -> str:
        return at_seconds(obj.created_at)

    @admin.display(description="username")
    def username(self, obj: SecurityEvent) -> SafeString:
        context = self.context_of(obj)
        snapshot = context.get("actor")
        tried = context.get("username") if obj.kind in USERNAME_KINDS else None
        if obj.actor is None and not snapshot:
            if isinstance(tried, str) and tried:
                # A login: nobody was logged in, the username tried says who it was about.
                return format_html('{} <span class="gql-audit-tried">(tried)</span>', visible(tried))
            return format_html("{}", self.nobody)
        return user_link(snapshot, obj.actor)

    @admin.display(description="path")
    def path_display(self, obj: SecurityEvent) -> str:
        return visible(obj.path) or "-"

    @admin.display(description="message")
    def message_preview(self, obj: SecurityEvent) -> SafeString:
        message = visible(obj.message)
        if len(message) <= MESSAGE_PREVIEW:
            return format_html("{}", message)
        return format_html('<span title="{}">{}…</span>', message, message[:MESSAGE_PREVIEW])

    @admin.display(description="message")
    def message_display(self, obj: SecurityEvent) -> SafeString:
        return format_html('<pre class="gql-audit-message">{}</pre>', visible(obj.message) or "-")

    @admin.display(description="details")
    def details_display(self, obj: SecurityEvent) -> SafeString:
        skip = self.shown_keys
        return render_data({k: v for k, v in self.context_of(obj).items() if k not in skip})

    @admin.display(description="other context")
    def other_context_display(self, obj: Any) -> SafeString:
        return format_html("{}", "-")  # an event's own details are all shown above
