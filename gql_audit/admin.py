from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from gql_audit.models import SecurityEvent


@admin.register(SecurityEvent)
class SecurityEventAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only: security events are evidence, not data to edit."""

    list_display = ("created_at", "kind", "severity", "actor", "remote_addr", "path", "request_id", "message")
    list_filter = ("kind", "severity", ("actor", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("request_id", "message", "path", "actor__username", "actor__email")
    date_hierarchy = "created_at"
    list_select_related = ("actor",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
