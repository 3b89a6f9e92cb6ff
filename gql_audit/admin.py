"""The admin as an auditor's tool: reads, change entries and security events, read-only.

Three lists (the ``gql_audit`` store's reads, auditlog's entries, security
events), each record's gql_audit context laid out for people, filters by
actor, object, kind, time and request id, a page joining every record of one
request (``admin:gql_audit_trail``), and :class:`AccessHistoryAdminMixin` for
a service's own ``ModelAdmin``. Nobody adds, changes or deletes a record here,
superusers included. Lists never count a whole table: see :class:`CappedPaginator`.

auditlog's own ``LogEntryAdmin`` is replaced by :class:`LogEntryAdmin` (the
same URLs), which shows ACCESS entries' fields read and every entry's context.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import auditlog.admin  # noqa: F401 - registers auditlog's LogEntryAdmin first, so it can be replaced below
from auditlog import get_logentry_model
from auditlog.mixins import LogEntryAdminMixin
from auditlog.registry import auditlog as auditlog_registry
from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.admin.utils import unquote
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Model, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, URLPattern, path, reverse
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from gql_audit.conf import conf
from gql_audit.history import Read, entries_of_request, reads_in_row, reads_of, request_trail
from gql_audit.models import RequestReads, SecurityEvent
from gql_audit.store import index, object_key

__all__ = [
    "AccessHistoryAdminMixin",
    "CappedPaginator",
    "LogEntryAdmin",
    "RequestReadsAdmin",
    "SecurityEventAdmin",
    "trail_url",
]

LogEntry = get_logentry_model()

#: Lists count at most this many rows (one bounded query), then say "more than".
COUNT_CAP = 10_000
#: Records shown per section on the request trail and access history pages.
PAGE_LIMIT = 200
#: Characters of a security event's message in the list (the page shows it whole).
MESSAGE_PREVIEW = 160
#: Characters of a request id, and of a list of changed fields, in the lists (the pages show them whole).
SHORT_ID = 13
SHORT_SUMMARY = 70

# C0 and C1 control characters but tab and newline, and the marks that reorder text (a username
# with U+202E reads backwards): shown as \xNN / \uNNNN, never sent raw to a browser.
_CONTROL = {c: f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
_CONTROL.update({c: f"\\u{c:04x}" for c in [*range(0x80, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F)]})
_CONTROL.update({c: f"\\u{c:04x}" for c in range(0x2066, 0x206A)})
#: Nesting shown as definition lists; deeper values are shown as JSON text.
MAX_DEPTH = 8


def visible(value: Any) -> str:
    """Text of a stored value with control characters and lone surrogates made visible (escaped later)."""
    text = value if isinstance(value, str) else str(value)
    text = text.translate(_CONTROL)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def at_seconds(value: datetime.datetime | None) -> str:
    """A record's time to the millisecond, in the current time zone, with its offset."""
    if value is None:
        return "-"
    if timezone.is_aware(value):
        value = timezone.localtime(value)
    return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}" + value.strftime(" %Z").rstrip()


def render_data(value: Any, depth: int = 0) -> SafeString:
    """Any JSON value as escaped HTML: mappings as definition lists, lists of plain values
    comma-separated, lists of mappings or lists as bullets."""
    if value is None or value == "" or value == [] or value == {}:
        return format_html("{}", "-")
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        return format_html("<code>{}</code>", visible(json.dumps(value, ensure_ascii=False, default=str)))
    if isinstance(value, dict):
        items = ((visible(k), render_data(v, depth + 1)) for k, v in value.items())
        return format_html('<dl class="gql-audit-data">{}</dl>', format_html_join("", "<dt>{}</dt><dd>{}</dd>", items))
    if isinstance(value, list):
        if all(not isinstance(item, dict | list) for item in value):
            return format_html("{}", ", ".join(visible(item) for item in value))
        bullets = ((render_data(item, depth + 1),) for item in value)
        return format_html("<ul>{}</ul>", format_html_join("", "<li>{}</li>", bullets))
    return format_html("{}", visible(value))


def actor_name(snapshot: Any, user: Any = None, email: str | None = None, *, nobody: str = "system") -> str:
    """Who did it: the snapshot's username (it outlives the user's row), else the user, else the email;
    ``nobody`` only when there was no actor at all."""
    if isinstance(snapshot, dict) and snapshot.get("username") not in (None, ""):
        return visible(snapshot["username"])
    if user is not None:
        return visible(user.get_username())
    if email:
        return visible(email)
    return nobody


def operation_label(operation: Any) -> str:
    """``query Name`` of an operation summary, or "-"."""
    if not isinstance(operation, dict):
        return "-"
    words = [visible(operation[key]) for key in ("type", "name") if operation.get(key)]
    return " ".join(words) or "-"


def trail_url(request_id: str) -> str:
    """The admin page of everything request ``request_id`` left (URL name ``admin:gql_audit_trail``)."""
    return reverse("admin:gql_audit_trail") + "?" + urlencode({"request_id": request_id})


def trail_link(request_id: str | None) -> SafeString:
    if not request_id:
        return format_html("{}", "-")
    return format_html('<a href="{}" class="gql-audit-trail">{}</a>', trail_url(request_id), visible(request_id))


def short_trail_link(request_id: str | None) -> SafeString:
    """A list's request id: long ids cut to their start (the whole id in the tooltip and the link)."""
    if not request_id or len(request_id) <= SHORT_ID:
        return trail_link(request_id)
    text = visible(request_id)
    return format_html(
        '<a href="{}" class="gql-audit-trail" title="{}">{}…</a>', trail_url(request_id), text, text[:SHORT_ID]
    )


def user_link(snapshot: Any, user: Any = None) -> SafeString:
    """The actor's snapshot, with a link to the user's page while the user exists."""
    user_id = user.pk if user is not None else (snapshot or {}).get("id") if isinstance(snapshot, dict) else None
    name = actor_name(snapshot, user, nobody="")
    if user_id is None:
        return format_html("{}", name or "-")
    opts = get_user_model()._meta
    try:
        url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[user_id])
    except NoReverseMatch:
        return format_html("{} (id {})", name, visible(user_id))
    return format_html('<a href="{}">{}</a> (id {})', url, name, visible(user_id))


def object_link(model_label: str, object_pk: str) -> SafeString:
    """``app_label.Model pk``, linked to the object's admin page when there is one."""
    text = f"{visible(model_label)} {visible(object_pk)}"
    app_label, _, model_name = model_label.partition(".")
    try:
        url = reverse(f"admin:{app_label}_{model_name.lower()}_change", args=[object_pk])
    except NoReverseMatch:
        return format_html("{}", text)
    return format_html('<a href="{}">{}</a>', url, text)


# -- Lists that never count a whole table -------------------------------------------------------


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


# -- Filters ----------------------------------------------------------------------------------


class InputFilter(admin.SimpleListFilter):
    """A filter typed in: a text box in the filter column, other filters kept."""

    template = "gql_audit/admin/input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Iterator[Any]:
        kept = [(k, v) for k, v in changelist.params.items() if k != self.parameter_name]
        yield {
            "parameter": self.parameter_name,
            "value": self.value() or "",
            "placeholder": self.placeholder,
            "kept": kept,
            "clear": changelist.get_query_string(remove=[self.parameter_name]),
        }

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value is None or not value.strip():
            return queryset
        if "\x00" in value:  # no record holds one, and PostgreSQL refuses it in a query
            raise IncorrectLookupParameters(f"{self.parameter_name} holds a NUL character")
        return self.filter(queryset, value.strip())

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        raise NotImplementedError


def user_ids(username: str) -> list[Any]:
    User = get_user_model()
    return list(User._default_manager.filter(**{User.USERNAME_FIELD: username}).values_list("pk", flat=True)[:1])


class ActorFilter(InputFilter):
    """By the actor's username: the user's id (indexed) while the user exists, else the snapshot."""

    title = "by actor (username)"
    parameter_name = "actor"
    placeholder = "username"
    #: ``(id lookup, snapshot username lookup)`` on this list's rows.
    lookups_for: tuple[str, str] = ("actor_id__in", "actor__username")

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        by_id, by_snapshot = self.lookups_for
        ids = user_ids(value)
        if ids:
            return queryset.filter(**{by_id: ids})
        # A deleted user (the foreign key is now NULL): only the snapshot names them (not indexed).
        return queryset.filter(**{by_snapshot: value})


class ActorOfEntryFilter(ActorFilter):
    lookups_for = ("actor_id__in", "additional_data__gql_audit__actor__username")


class ActorOfEventFilter(ActorFilter):
    lookups_for = ("actor_id__in", "details__actor__username")


class ReaderFilter(ActorFilter):
    """Reads keep the reader's id as text after the user is deleted: a deleted user's id is
    found in the newest read naming them, then all their reads by the index."""

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        ids = user_ids(value) or list(queryset.filter(actor__username=value).values_list("actor_id", flat=True)[:1])
        return queryset.filter(actor_id__in=[str(pk) for pk in ids])


class RequestFilter(InputFilter):
    title = "by request id"
    parameter_name = "request_id"
    placeholder = "request id"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        if queryset.model is LogEntry:
            return queryset.filter(entries_of_request(value))
        return queryset.filter(request_id=value)


def parse_object(value: str) -> tuple[type[Model], str]:
    """``app_label.Model:pk`` -> (model, pk), or IncorrectLookupParameters."""
    from django.apps import apps

    label, sep, object_pk = value.partition(":")
    try:
        if not sep or not object_pk:
            raise LookupError(value)
        return apps.get_model(label), object_pk
    except (LookupError, ValueError) as exc:
        raise IncorrectLookupParameters(f"an object is app_label.Model:pk, not {value!r}") from exc


class ObjectFilter(InputFilter):
    title = "by object (app_label.Model:pk)"
    parameter_name = "object"
    placeholder = "example_service.Profile:1"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        model, object_pk = parse_object(value)
        if queryset.model is LogEntry:
            content_type = ContentType.objects.get_for_model(model)
            return queryset.filter(content_type=content_type, object_pk=object_pk)
        return index.reading(queryset, object_key(model, object_pk))


class FieldReadFilter(InputFilter):
    """Reads of one GraphQL field (not indexed: the list stops at a page, newest first)."""

    title = "by field read"
    parameter_name = "field"
    placeholder = "phone"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(shapes__icontains=json.dumps(value))


def parse_moment(value: str, *, end: bool) -> datetime.datetime:
    """An ISO date or date-time typed by a person; a bare date covers the whole day."""
    moment = parse_datetime(value.replace("T", " ")) if (" " in value or "T" in value) else None
    if moment is None:
        try:
            day = parse_date(value)
        except ValueError:
            day = None
        if day is None:
            raise IncorrectLookupParameters(f"not a date or date-time: {value!r}")
        moment = datetime.datetime.combine(day, datetime.time.max if end else datetime.time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment)
    return moment


class SinceFilter(InputFilter):
    title = "from (a date or date-time)"
    parameter_name = "since"
    placeholder = "2026-01-31 08:00"
    time_field = "at"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(**{f"{self.time_field}__gte": parse_moment(value, end=False)})


class UntilFilter(SinceFilter):
    title = "until (a date or date-time)"
    parameter_name = "until"
    placeholder = "2026-01-31"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        return queryset.filter(**{f"{self.time_field}__lte": parse_moment(value, end=True)})


class RecentFilter(admin.SimpleListFilter):
    """The last hour, day, week or 30 days (the time column is indexed)."""

    title = "time"
    parameter_name = "within"
    time_field = "at"
    SPANS = {"1h": datetime.timedelta(hours=1), "24h": datetime.timedelta(days=1), "7d": datetime.timedelta(days=7)}
    SPANS["30d"] = datetime.timedelta(days=30)

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("1h", "Last hour"), ("24h", "Last 24 hours"), ("7d", "Last 7 days"), ("30d", "Last 30 days")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        span = self.SPANS.get(self.value() or "")
        if span is None:
            return queryset
        return queryset.filter(**{f"{self.time_field}__gte": timezone.now() - span})


def time_filters(field: str) -> list[type[admin.SimpleListFilter]]:
    """The time filters of one list, on its time column."""
    return [
        type(f"Recent_{field}", (RecentFilter,), {"time_field": field}),
        type(f"Since_{field}", (SinceFilter,), {"time_field": field}),
        type(f"Until_{field}", (UntilFilter,), {"time_field": field}),
    ]


class ResourceTypeFilter(admin.SimpleListFilter):
    """The models auditlog records, from its registry: no scan of the entries to list them."""

    title = "object type"
    parameter_name = "resource_type"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[Any, str]]:
        models = sorted(auditlog_registry.get_models(), key=lambda m: m._meta.label)
        types = ContentType.objects.get_for_models(*models)
        return [(str(types[m].pk), m._meta.label) for m in models]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if not value:
            return queryset
        if not (value.isascii() and value.isdigit() and len(value) < 19):  # a key the column can hold
            raise IncorrectLookupParameters("resource_type is a content type id")
        return queryset.filter(content_type_id=int(value))


# -- The three lists --------------------------------------------------------------------------


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
        return super().changelist_view(request, context)

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

    @admin.display(description="objects read")
    def objects_read(self, obj: RequestReads) -> str:
        keys = [visible(key) for key in (obj.keys or [])[:3]]
        more = len(obj.keys or []) - len(keys)
        return ", ".join(keys) + (f" and {more} more" if more > 0 else "")

    @admin.display(description="objects read")
    def objects_table(self, obj: RequestReads) -> SafeString:
        return reads_table(reads_in_row(obj), columns=("object", "fields", "paths"))

    def get_urls(self) -> list[URLPattern]:
        trail = path("trail/", self.admin_site.admin_view(self.trail_view), name="gql_audit_trail")
        return [trail, *super().get_urls()]

    def trail_view(self, request: HttpRequest) -> HttpResponse:
        """Every record one request left: its reads, its change entries, its security events."""
        may = may_view(request)
        if not any(may.values()):
            raise PermissionDenied
        request_id = request.GET.get("request_id", "").replace("\x00", "").strip()
        context: dict[str, Any] = {
            **self.admin_site.each_context(request),
            "title": "Request trail",
            "opts": self.model._meta,
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
        return TemplateResponse(request, "gql_audit/admin/trail.html", context)


def may_view(request: HttpRequest) -> dict[str, bool]:
    """Which records the user may see: reads (from either store), change entries, security events."""
    user: Any = request.user
    changes = user.has_perm(f"{LogEntry._meta.app_label}.view_{LogEntry._meta.model_name}")
    return {
        "reads": changes or user.has_perm("gql_audit.view_requestreads"),
        "changes": changes,
        "events": user.has_perm("gql_audit.view_securityevent"),
    }


def reads_context(request_id: str, reads: list[Read]) -> dict[str, Any]:
    """The context of a request's reads beyond what a :class:`Read` carries (certificate, database)."""
    if not reads:
        return {}
    row = RequestReads.objects.filter(request_id=request_id).only("context").first()
    if row is not None and isinstance(row.context, dict):
        return row.context
    entry = LogEntry.objects.filter(entries_of_request(request_id), action=LogEntry.Action.ACCESS).first()
    return LogEntryAdmin.gql_audit_data(entry) if entry is not None else {}


def trail_summary(
    reads: list[Read], changes: list[Any], events: list[SecurityEvent], read_context: dict[str, Any]
) -> dict[str, Any]:
    """Who and where for a request, from the first of its records that says."""
    summary: dict[str, Any] = {}
    for entry in changes:
        data = LogEntryAdmin.gql_audit_data(entry)
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


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, css: str) -> SafeString:
    """An HTML table of already escaped cells (a cell that is not safe is escaped here)."""
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html(
        '<table class="gql-audit-table {}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', css, head, body
    )


READ_COLUMNS: dict[str, tuple[str, Any]] = {
    "at": ("time", lambda r: at_seconds(r.at)),
    "object": ("object", lambda r: object_link(r.model, r.object_pk)),
    "reader": ("reader", lambda r: actor_name(r.actor, nobody="anonymous")),
    "fields": ("fields read", lambda r: render_data(r.fields)),
    "paths": ("paths", lambda r: render_data(r.paths)),
    "address": ("address", lambda r: r.remote_addr or "-"),
    "request": ("request", lambda r: trail_link(r.request_id)),
    "operation": ("operation", lambda r: operation_label(r.operation)),
}


def reads_table(reads: Iterable[Read], *, columns: Iterable[str]) -> SafeString:
    chosen = [READ_COLUMNS[name] for name in columns]
    return table([title for title, _ in chosen], ([cell(read) for _, cell in chosen] for read in reads), css="reads")


def record_link(record: Model, text: str) -> SafeString:
    """``text`` linked to the record's admin page."""
    opts = record._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[record.pk])
    return format_html('<a href="{}">{}</a>', url, text)


def changes_table(entries: Iterable[Any]) -> SafeString:
    rows = (
        [
            record_link(entry, at_seconds(entry.timestamp)),
            entry.get_action_display(),
            object_link(entry.content_type.model_class()._meta.label, entry.object_pk)
            if entry.content_type.model_class() is not None
            else visible(entry.object_repr),
            LogEntryAdmin.summary_of(entry),
            actor_name(LogEntryAdmin.gql_audit_data(entry).get("actor"), entry.actor, entry.actor_email),
        ]
        for entry in entries
    )
    return table(["time", "action", "object", "changes", "actor"], rows, css="changes")


def events_table(events: Iterable[SecurityEvent]) -> SafeString:
    rows = (
        [
            record_link(event, at_seconds(event.created_at)),
            event.kind,
            event.severity,
            actor_name(event.details.get("actor"), event.actor, nobody="anonymous"),
            visible(event.path) or "-",
            format_html('<span class="gql-audit-message">{}</span>', visible(event.message)),
        ]
        for event in events
    )
    return table(["time", "kind", "severity", "actor", "path", "message"], rows, css="events")


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
        snapshot = self.context_of(obj).get("actor")
        if obj.actor is None and not snapshot:
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
        data = entry.additional_data if isinstance(entry.additional_data, dict) else {}
        found = data.get("gql_audit")
        return found if isinstance(found, dict) else {}

    def context_of(self, obj: Any) -> dict[str, Any]:
        context = self.gql_audit_data(obj)
        extra = {k: v for k, v in (obj.additional_data or {}).items() if k != "gql_audit"} if isinstance(
            obj.additional_data, dict
        ) else {}
        if extra:
            context = {**context, "additional_data": extra}
        return {**context, "request_id": context.get("request_id") or obj.cid}

    @staticmethod
    def summary_of(entry: Any) -> str:
        if entry.action == LogEntry.Action.ACCESS:
            fields = LogEntryAdmin.gql_audit_data(entry).get("fields") or []
            return "read: " + ", ".join(visible(f) for f in fields) if fields else "read"
        if entry.action == LogEntry.Action.DELETE:
            return "deleted"
        changes = entry.changes_dict if entry.changes else {}
        return "changed: " + ", ".join(visible(name) for name in changes) if changes else "-"

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


# -- A service's own ModelAdmins --------------------------------------------------------------

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
        reads = reads_of(obj, limit=limit) if may["reads"] else []
        changes = (
            list(
                LogEntry.objects.get_for_object(obj)
                .exclude(action=LogEntry.Action.ACCESS)
                .select_related("actor", "content_type")
                .order_by("-timestamp")[:limit]
            )
            if may["changes"]
            else []
        )
        opts = self.model._meta
        context = {
            **self.admin_site.each_context(request),
            "title": f"Access history: {obj}",
            "object": obj,
            "opts": opts,
            "may": may,
            "limit": limit,
            "reads": reads_table(reads, columns=("at", "reader", "fields", "paths", "address", "operation", "request")),
            "changes": changes_table(changes),
            "counts": {"reads": len(reads), "changes": len(changes)},
            "reads_list_url": reads_list_url(obj),
        }
        return TemplateResponse(request, self.access_history_template, context)


def reads_list_url(obj: Model) -> str:
    """The reads list (or, with ``ACCESS_STORE = "auditlog"``, the entries list) filtered to one object."""
    value = f"{obj._meta.label}:{obj.pk}"
    if conf.ACCESS_STORE == "auditlog":
        name = f"admin:{LogEntry._meta.app_label}_{LogEntry._meta.model_name}_changelist"
        return reverse(name) + "?" + urlencode({"object": value, "action__exact": LogEntry.Action.ACCESS})
    return reverse("admin:gql_audit_requestreads_changelist") + "?" + urlencode({"object": value})

