"""How records are shown: stored text made visible and escaped, links, times, tables."""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode

from auditlog import get_logentry_model
from django.contrib.auth import get_user_model
from django.db.models import Model
from django.urls import NoReverseMatch, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from gql_audit.history import Read
from gql_audit.models import SecurityEvent

LogEntry = get_logentry_model()

#: Characters of a request id in the lists (the pages show it whole).
SHORT_ID = 13

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


def object_link(model_label: str, object_pk: str, name: str | None = None) -> SafeString:
    """The object's name (its ``__str__``, when known) beside ``app_label.Model pk``, linked to the
    object's admin page when there is one."""
    key = f"{visible(model_label)} {visible(object_pk)}"
    app_label, _, model_name = model_label.partition(".")
    try:
        url = reverse(f"admin:{app_label}_{model_name.lower()}_change", args=[object_pk])
    except NoReverseMatch:
        url = ""
    if name:
        if url:
            return format_html('<a href="{}">{}</a> <span class="gql-audit-key">({})</span>', url, name, key)
        return format_html('{} <span class="gql-audit-key">({})</span>', name, key)
    return format_html('<a href="{}">{}</a>', url, key) if url else format_html("{}", key)


#: Objects named at most on one page (one query a model).
MAX_NAMED = 500


def object_names(objects: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """``(model label, pk) -> str(object)`` of the objects still there, in one query a model
    (a deleted object, or one whose ``__str__`` fails, has no name)."""
    from django.apps import apps

    by_model: dict[str, set[str]] = {}
    for label, object_pk in objects:
        by_model.setdefault(label, set()).add(object_pk)
    names: dict[tuple[str, str], str] = {}
    budget = MAX_NAMED
    for label, pks in by_model.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError):
            continue
        values = {}
        for object_pk in sorted(pks)[:budget]:
            try:
                values[model._meta.pk.to_python(object_pk)] = object_pk
            except Exception:  # noqa: BLE001 - a key this model cannot hold names nothing
                continue
        budget -= len(values)
        for value, instance in model._default_manager.in_bulk(list(values)).items():
            try:
                names[(label, values.get(value, str(value)))] = visible(str(instance))[:200]
            except Exception:  # noqa: BLE001 - a broken __str__ leaves the object unnamed
                continue
        if budget <= 0:
            break
    return names


def entry_context(entry: Any) -> dict[str, Any]:
    """The ``"gql_audit"`` object of an auditlog entry's ``additional_data`` (empty when none)."""
    data = entry.additional_data if isinstance(entry.additional_data, dict) else {}
    found = data.get("gql_audit")
    return found if isinstance(found, dict) else {}


def entry_summary(entry: Any) -> str:
    """``changed: phone, fullName``, ``read: phone`` or ``deleted``: what an auditlog entry did."""
    if entry.action == LogEntry.Action.ACCESS:
        fields = entry_context(entry).get("fields") or []
        return "read: " + ", ".join(visible(f) for f in fields) if fields else "read"
    if entry.action == LogEntry.Action.DELETE:
        return "deleted"
    changes = entry.changes_dict if entry.changes else {}
    return "changed: " + ", ".join(visible(name) for name in changes) if changes else "-"


def table(headers: Iterable[str], rows: Iterable[Iterable[Any]], *, css: str) -> SafeString:
    """An HTML table of already escaped cells (a cell that is not safe is escaped here)."""
    head = format_html_join("", "<th>{}</th>", ((h,) for h in headers))
    body = format_html_join(
        "", "<tr>{}</tr>", ((format_html_join("", "<td>{}</td>", ((cell,) for cell in row)),) for row in rows)
    )
    return format_html(
        '<table class="gql-audit-table {}"><thead><tr>{}</tr></thead><tbody>{}</tbody></table>', css, head, body
    )


#: Column -> (title, cell of a read, given the objects' names).
READ_COLUMNS: dict[str, tuple[str, Any]] = {
    "at": ("time", lambda r, names: at_seconds(r.at)),
    "object": ("object", lambda r, names: object_link(r.model, r.object_pk, names.get((r.model, r.object_pk)))),
    "reader": ("reader", lambda r, names: actor_name(r.actor, nobody="anonymous")),
    "fields": ("fields read", lambda r, names: render_data(r.fields)),
    "paths": ("paths", lambda r, names: render_data(r.paths)),
    "address": ("address", lambda r, names: r.remote_addr or "-"),
    "request": ("request", lambda r, names: trail_link(r.request_id)),
    "operation": ("operation", lambda r, names: operation_label(r.operation)),
}


def reads_table(reads: Iterable[Read], *, columns: Iterable[str]) -> SafeString:
    chosen = [READ_COLUMNS[name] for name in columns]
    reads = list(reads)
    names = object_names((read.model, read.object_pk) for read in reads) if "object" in columns else {}
    rows = ([cell(read, names) for _, cell in chosen] for read in reads)
    return table([title for title, _ in chosen], rows, css="reads")


def reads_summary(reads: list[Read], names: dict[tuple[str, str], str], *, first: int = 3) -> SafeString:
    """A list's cell: the first objects read, each by name and key with the fields read on it."""
    shown = [
        format_html(
            "<li>{}: {}</li>",
            object_link(read.model, read.object_pk, names.get((read.model, read.object_pk))),
            ", ".join(visible(name) for name in read.fields) or "-",
        )
        for read in reads[:first]
    ]
    more = len(reads) - len(shown)
    tail = format_html("<li>and {} more</li>", more) if more > 0 else ""
    return format_html(
        '<ul class="gql-audit-objects">{}{}</ul>', format_html_join("", "{}", ((s,) for s in shown)), tail
    )


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
            entry_summary(entry),
            actor_name(entry_context(entry).get("actor"), entry.actor, entry.actor_email),
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
