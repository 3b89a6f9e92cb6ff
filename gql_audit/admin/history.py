""":class:`AccessHistoryAdminMixin`: a service's own ``ModelAdmin`` links each object to its reads and changes."""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from gql_audit.admin.audited import trail_accessed
from gql_audit.admin.base import PAGE_LIMIT, LogEntry, may_view
from gql_audit.admin.display import changes_table, reads_table
from gql_audit.admin.filters import parse_moment
from gql_audit.conf import conf
from gql_audit.history import reads_of

if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Any]
else:
    _ModelAdmin = object


class AccessHistoryAdminMixin(_ModelAdmin):
    """Add to a service's ``ModelAdmin``: each object's page links to its reads and changes.

    The link ("Access history", beside "History") opens
    ``<object>/access-history/`` (URL name ``admin:<app>_<model>_access_history``),
    listing the object's reads (``gql_audit.history.reads_of``) and its change
    entries, newest first, each linked to its request's trail. Shown to users
    who may view the object and the records (reads: ``gql_audit.view_requestreads``
    or auditlog's ``view_logentry``; changes: ``view_logentry``).
    """

    change_form_template = "gql_audit/admin/change_form.html"
    access_history_template = "gql_audit/admin/access_history.html"
    #: Reads and changes shown, newest first.
    access_history_limit = PAGE_LIMIT

    def get_urls(self) -> list[URLPattern]:
        opts = self.model._meta
        history = path(
            "<path:object_id>/access-history/",
            self.admin_site.admin_view(self.access_history_view),
            name=f"{opts.app_label}_{opts.model_name}_access_history",
        )
        return [history, *super().get_urls()]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra_context = dict(extra_context or {})
        may = may_view(request)
        if may["reads"] or may["changes"]:
            opts = self.model._meta
            extra_context["access_history_url"] = reverse(
                f"admin:{opts.app_label}_{opts.model_name}_access_history", args=[object_id]
            )
        return super().change_view(request, object_id, form_url, extra_context)

    def access_history_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            raise Http404("No such object.")
        may = may_view(request)
        if not self.has_view_or_change_permission(request, obj) or not (may["reads"] or may["changes"]):
            raise PermissionDenied
        limit = self.access_history_limit
        window, problem = time_window(request)
        if problem:
            messages.error(request, problem)
        reads: list[Any] = []
        changes: list[Any] = []
        if not problem:
            since, until = window
            if may["reads"]:
                reads = reads_of(obj, limit=limit, since=since, until=until)
            if may["changes"]:
                entries = LogEntry.objects.get_for_object(obj).exclude(action=LogEntry.Action.ACCESS)
                if since is not None:
                    entries = entries.filter(timestamp__gte=since)
                if until is not None:
                    entries = entries.filter(timestamp__lte=until)
                changes = list(entries.select_related("actor", "content_type").order_by("-timestamp")[:limit])
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": f"Access history: {obj}",
            "object": obj,
            "opts": opts,
            "may": may,
            "limit": limit,
            "since": request.GET.get("since", ""),
            "until": request.GET.get("until", ""),
            "reads": reads_table(reads, columns=("at", "reader", "fields", "paths", "address", "operation", "request")),
            "changes": changes_table(changes),
            "counts": {"reads": len(reads), "changes": len(changes)},
            "reads_list_url": reads_list_url(obj, request.GET),
        }
        response = TemplateResponse(request, self.access_history_template, context)
        label = f"{opts.app_label}.{opts.object_name}:{obj.pk}"
        trail_accessed(request, response, f"admin:{opts.app_label}_{opts.model_name}_access_history", object=label)
        return response


def time_window(request: HttpRequest) -> tuple[tuple[datetime.datetime | None, datetime.datetime | None], str]:
    """``((since, until), "")`` from the page's ``since`` and ``until`` (dates or date-times), or
    ``((None, None), what is wrong)``."""
    found: dict[str, datetime.datetime | None] = {"since": None, "until": None}
    for name in found:
        value = request.GET.get(name, "").strip()
        if not value:
            continue
        try:
            found[name] = parse_moment(value, end=name == "until")
        except IncorrectLookupParameters as exc:
            return (None, None), f"{name}: {exc}. Nothing is listed."
    return (found["since"], found["until"]), ""


def reads_list_url(obj: Model, window: Any = None) -> str:
    """The reads list (or, with ``ACCESS_STORE = "auditlog"``, the entries list) filtered to one object
    (and to the ``since`` and ``until`` of ``window``, a query dict, when given)."""
    query: dict[str, Any] = {"object": f"{obj._meta.label}:{obj.pk}"}
    for name in ("since", "until"):
        if window and window.get(name, "").strip():
            query[name] = window[name].strip()
    if conf.ACCESS_STORE == "auditlog":
        name = f"admin:{LogEntry._meta.app_label}_{LogEntry._meta.model_name}_changelist"
        return reverse(name) + "?" + urlencode({**query, "action__exact": LogEntry.Action.ACCESS})
    return reverse("admin:gql_audit_requestreads_changelist") + "?" + urlencode(query)
