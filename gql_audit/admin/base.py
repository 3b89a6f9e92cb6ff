"""What every record's admin shares: read-only for everyone, lists that never count a whole
table, the request's context shown alike, and who may see which records."""

from __future__ import annotations

import copy
from functools import cached_property
from typing import Any

from auditlog import get_logentry_model
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.paginator import Paginator
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, QueryDict
from django.urls import reverse
from django.utils.safestring import SafeString

from gql_audit.admin.audited import trail_accessed
from gql_audit.admin.display import operation_label, render_data, short_trail_link, trail_link, visible

LogEntry = get_logentry_model()

#: Lists count at most this many rows (one bounded query), then say "more than".
COUNT_CAP = 10_000
#: Records shown per section on the request trail and access history pages.
PAGE_LIMIT = 200


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most ``COUNT_CAP`` rows, in one ``LIMIT``-ed query, whatever the table's size.

    Past the cap the list pages through the newest ``COUNT_CAP`` records and says
    there are more: narrowing the filters reaches the rest.
    """

    capped = False

    @cached_property
    def count(self) -> int:
        rows: Any = self.object_list
        counted: int = rows.order_by().values("pk")[: COUNT_CAP + 1].count()
        if counted > COUNT_CAP:
            self.capped = True
            return COUNT_CAP
        return counted


def context_field(key: str, description: str, show: Any = None) -> Any:
    """A display method of an admin showing one key of its records' gql_audit context."""
    shown = show or render_data

    @admin.display(description=description)
    def display(self: AuditRecordAdmin, obj: Any) -> Any:
        return shown(self.context_of(obj).get(key))

    return display


#: Where from and on which database, shown alike on every record's page.
CONTEXT_FIELDSETS: list[Any] = [
    ("Where from", {"fields": ["remote_addr", "certificate_display", "client_request_id_display"]}),
    ("Database", {"fields": ["database_display"]}),
    ("Other context", {"fields": ["other_context_display"]}),
]


class AuditRecordAdmin(admin.ModelAdmin):  # type: ignore[type-arg]
    """Read-only for everyone, superusers included; lists that do not count whole tables."""

    paginator = CappedPaginator
    show_full_result_count = False
    list_per_page = 50
    change_list_template = "gql_audit/admin/change_list.html"
    #: The date drill-down reads every distinct date of the table: the time filters replace it.
    date_hierarchy = None
    #: Facet counts are one COUNT a filter choice over the whole filtered table.
    show_facets = admin.ShowFacets.NEVER
    #: The name shown for a record without an actor.
    nobody = "anonymous"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def context_of(self, obj: Any) -> dict[str, Any]:
        """The record's ``"gql_audit"`` object, however this kind of record stores it."""
        raise NotImplementedError

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        context = {"trail_url": reverse("admin:gql_audit_trail"), **(extra_context or {})}
        response = super().changelist_view(request, context)
        trail_accessed(request, response, self.url_name("changelist"))
        return response

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        response = super().change_view(request, object_id, form_url, extra_context)
        trail_accessed(request, response, self.url_name("change"), object_id=object_id)
        return response

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        """A filter that cannot be applied (a mistyped value, an unknown parameter) lists nothing and
        says why: never the whole unfiltered list, as Django's own redirect to ``?e=1`` shows."""
        try:
            return super().get_changelist_instance(request)
        except IncorrectLookupParameters as exc:
            reason = visible(str(exc))[:300] or "a filter cannot be applied"
            messages.error(request, f"Nothing is listed: {reason}. Correct the filter, or clear it.")
        refused = copy.copy(request)
        refused.GET = QueryDict()
        refused.gql_audit_refused = True  # type: ignore[attr-defined]
        return super().get_changelist_instance(refused)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Any]:
        rows = super().get_queryset(request)
        return rows.none() if getattr(request, "gql_audit_refused", False) else rows

    def url_name(self, view: str) -> str:
        """``admin:<app_label>_<model>_<view>``: how a page of this list is named."""
        return f"admin:{self.opts.app_label}_{self.opts.model_name}_{view}"

    operation_display = context_field("operation", "operation")
    operation_short = context_field("operation", "operation", operation_label)
    certificate_display = context_field("client_cert", "client certificate")
    database_display = context_field("db", "database context")
    actor_snapshot_display = context_field("actor", "actor snapshot")
    client_request_id_display = context_field("client_request_id", "request id sent by the client")
    trail_display = context_field("request_id", "request", trail_link)
    trail_short = context_field("request_id", "request", short_trail_link)

    #: Context keys each record shows in a field of its own; ``other_context_display`` shows the rest.
    shown_keys = frozenset(
        {"request_id", "operation", "client_cert", "db", "actor", "client_request_id", "remote_addr", "fields", "path"}
    )

    @admin.display(description="other context")
    def other_context_display(self, obj: Any) -> SafeString:
        context = self.context_of(obj)
        return render_data({k: v for k, v in context.items() if k not in self.shown_keys})


def may_view(request: HttpRequest) -> dict[str, bool]:
    """Which records the user may see: reads (from either store), change entries, security events."""
    user: Any = request.user
    changes = user.has_perm(f"{LogEntry._meta.app_label}.view_{LogEntry._meta.model_name}")
    return {
        "reads": changes or user.has_perm("gql_audit.view_requestreads"),
        "changes": changes,
        "events": user.has_perm("gql_audit.view_securityevent"),
    }
