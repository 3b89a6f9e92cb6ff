"""The lists' filters: typed in (actor, object, field read, request id, from, until) or chosen
(recent times, object type), each answered by an index where the table has one."""

from __future__ import annotations

import datetime
from collections.abc import Iterator
from typing import Any

from auditlog import get_logentry_model
from auditlog.registry import auditlog as auditlog_registry
from django.contrib import admin, messages
from django.contrib.admin.options import IncorrectLookupParameters
from django.contrib.auth import get_user_model
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import DataError, connections
from django.db.models import BooleanField, Model, Q, QuerySet
from django.db.models.expressions import RawSQL
from django.http import HttpRequest
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from gql_audit.admin.display import visible
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.history import entries_of_request
from gql_audit.models import RequestReads
from gql_audit.store import index, object_key

LogEntry = get_logentry_model()


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
        self.request = request
        return self.filter(queryset, value.strip())

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        raise NotImplementedError

    def note(self, text: str) -> None:
        """Tell the person what the filter's value named (a warning above the list)."""
        messages.warning(self.request, f"{str(self.title).capitalize()}: {text}")


#: Security event kinds whose ``details.username`` is a username tried (nobody was logged in).
USERNAME_KINDS = ("login_failed", "login_succeeded", "throttled")


def shown(value: str) -> str:
    """A typed-in value as a message quotes it: control characters visible, at most 100 characters."""
    text = visible(value)
    return repr(text if len(text) <= 100 else text[:100] + "…")


def no_user(username: str) -> str:
    return f"no user has the username {shown(username)} now: listed are the records naming it (a user since deleted)."


def object_exists(model: type[Model], object_pk: str) -> bool:
    """Whether the object is there now; IncorrectLookupParameters when ``object_pk`` cannot be a key of ``model``."""
    try:
        value = model._meta.pk.to_python(object_pk)
        return bool(model._default_manager.filter(pk=value).exists())
    except (ValidationError, ValueError, TypeError, OverflowError, DataError) as exc:
        raise IncorrectLookupParameters(f"{shown(object_pk)} is not a primary key of {model._meta.label}") from exc


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
            return queryset.filter(Q(**{by_id: ids}) | self.tried(value))
        # A deleted user (the foreign key is now NULL): only the snapshot names them (not indexed).
        self.note(no_user(value))
        return queryset.filter(Q(**{by_snapshot: value}) | self.tried(value))

    def tried(self, value: str) -> Q:
        """Records naming ``value`` other than as their actor (nothing, but on security events)."""
        return Q(pk__in=[])


class ActorOfEntryFilter(ActorFilter):
    lookups_for = ("actor_id__in", "additional_data__gql_audit__actor__username")


class ActorOfEventFilter(ActorFilter):
    """Also the events of a login tried with that username (no actor: nobody was logged in)."""

    lookups_for = ("actor_id__in", "details__actor__username")

    def tried(self, value: str) -> Q:
        return Q(kind__in=USERNAME_KINDS, details__username=value)


class ReaderFilter(ActorFilter):
    """Reads keep the reader's id as text after the user is deleted: a deleted user's id is
    found in the newest read naming them, then all their reads by the index."""

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        ids = user_ids(value)
        if not ids:
            self.note(no_user(value))
            ids = list(queryset.filter(actor__username=value).values_list("actor_id", flat=True)[:1])
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
        raise IncorrectLookupParameters(f"an object is app_label.Model:pk, not {shown(value)}") from exc


class ObjectFilter(InputFilter):
    title = "by object (app_label.Model:pk)"
    parameter_name = "object"
    placeholder = "example_service.Profile:1"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        model, object_pk = parse_object(value)
        if not object_exists(model, object_pk):
            label = visible(model._meta.label)
            self.note(
                f"no {label} has the primary key {shown(object_pk)} now: listed are the records of one since deleted."
            )
        if queryset.model is LogEntry:
            content_type = ContentType.objects.get_for_model(model)
            return queryset.filter(content_type=content_type, object_pk=object_pk)
        return index.reading(queryset, object_key(model, object_pk))


class FieldReadFilter(InputFilter):
    """Reads of one GraphQL field (not indexed: the list stops at a page, newest first); with the
    object filter, the reads of that field on that object, not on another object of the request."""

    title = "by field read"
    parameter_name = "field"
    placeholder = "phone"

    def filter(self, queryset: QuerySet[Any], value: str) -> QuerySet[Any]:
        on = self.request.GET.get(ObjectFilter.parameter_name, "").strip()
        key = object_key(*parse_object(on)) if on and "\x00" not in on else None
        sql, params = field_read_sql(connections[queryset.db].vendor, value, key)
        read = RawSQL(sql, params, output_field=BooleanField())
        found: QuerySet[Any] = queryset.alias(gql_audit_field_read=read).filter(gql_audit_field_read=True)
        return found


def field_read_sql(vendor: str, field: str, key: str | None) -> tuple[str, list[str]]:
    """SQL true for a ``RequestReads`` row that read ``field`` (on the object ``key``, when given)."""
    table = connections[RequestReads.objects.db].ops.quote_name(RequestReads._meta.db_table)
    if vendor in POSTGRES_VENDORS:
        if key is None:
            return f"{table}.shapes @> jsonb_build_array(jsonb_build_object('fields', jsonb_build_array(%s::text)))", [
                field
            ]
        return (
            f"EXISTS (SELECT 1 FROM jsonb_array_elements_text({table}.keys) WITH ORDINALITY AS k(key, n) "
            f"WHERE k.key = %s AND ({table}.shapes -> (({table}.shape_of ->> (k.n - 1)::int)::int) -> 'fields') "
            "@> jsonb_build_array(%s::text))",
            [key, field],
        )
    if key is None:
        return (
            f"EXISTS (SELECT 1 FROM json_each({table}.shapes) AS s, json_each(s.value, '$.fields') AS f "
            "WHERE f.value = %s)",
            [field],
        )
    return (
        f"EXISTS (SELECT 1 FROM json_each({table}.keys) AS k, json_each({table}.shapes, "
        f"'$[' || json_extract({table}.shape_of, '$[' || k.key || ']') || '].fields') AS f "
        "WHERE k.value = %s AND f.value = %s)",
        [key, field],
    )


def parse_moment(value: str, *, end: bool) -> datetime.datetime:
    """An ISO date or date-time typed by a person; a bare date covers the whole day."""
    moment = parse_datetime(value.replace("T", " ")) if (" " in value or "T" in value) else None
    if moment is None:
        try:
            day = parse_date(value)
        except ValueError:
            day = None
        if day is None:
            raise IncorrectLookupParameters(f"not a date or date-time: {shown(value)}")
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
        if not self.value():
            return queryset
        span = self.SPANS.get(self.value() or "")
        if span is None:
            raise IncorrectLookupParameters(
                f"{self.parameter_name} is one of {', '.join(self.SPANS)}, not {shown(self.value() or '')}"
            )
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
