"""The data-subject access report: who read or changed one person's data.

The question of GDPR article 15 ("which of my data did you process, who saw it,
when?") asked of the audit trail. A person is a *subject*: a user, or any model
instance that stands for a person. ``GQL_AUDIT["SUBJECT_OBJECTS"]`` says which
objects hold a user's data (any other instance stands for itself); the report
lists every read of those objects (from either access store) and every change
entry django-auditlog holds for them, newest first, with who, when, which
fields, from where and in which operation.

Change entries name the fields that changed, never their old or new values:
the report says who processed the data, and a value may be a secret the
auditlog registration did not exclude.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO, Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.exceptions import ObjectDoesNotExist, ValidationError
from django.db.models import Model
from django.utils import timezone
from django.utils.module_loading import import_string

from gql_audit.conf import SETTINGS_NAME, conf
from gql_audit.events import record_event
from gql_audit.history import Read, changes_of_objects, reads_of_objects
from gql_audit.redaction import safe_data, safe_text

__all__ = [
    "CSV_COLUMNS",
    "ReportEntry",
    "SubjectError",
    "SubjectReport",
    "find_subject",
    "subject_objects",
    "subject_report",
    "write_csv",
]

#: ``app_label.Model:pk``; anything else is a username.
_OBJECT_SUBJECT = re.compile(r"(?P<app>[A-Za-z_]\w*)\.(?P<model>[A-Za-z_]\w*):(?P<pk>.+)", re.DOTALL)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
MAX_SUBJECT_LENGTH = 1000
#: A spreadsheet runs a cell starting with one of these as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")

#: The CSV form's columns, in order.
CSV_COLUMNS = (
    "at",
    "action",
    "model",
    "object_pk",
    "actor_id",
    "actor_username",
    "fields",
    "remote_addr",
    "request_id",
    "operation_type",
    "operation_name",
)


class SubjectError(ValueError):
    """The subject cannot be reported on: malformed, unknown, or ``SUBJECT_OBJECTS`` failed."""


@dataclass(frozen=True)
class ReportEntry:
    """One read or change of one of the subject's objects."""

    at: datetime.datetime
    #: ``"read"``, or the auditlog action: ``"create"``, ``"update"``, ``"delete"``.
    action: str
    #: The model's label, ``"app_label.ModelName"``.
    model: str
    object_pk: str
    #: Who read or changed it: primary key and username then (None when anonymous or unknown).
    actor_id: str | None
    actor_username: str | None
    #: For a read, the GraphQL fields read; for a change, the model fields changed (no values).
    fields: list[str]
    remote_addr: str | None
    request_id: str
    #: The GraphQL operation's type (``query``, ``mutation``...) and name, when there was one.
    operation_type: str | None
    operation_name: str | None

    def as_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        data: dict[str, Any] = safe_data(
            {
                "at": self.at.isoformat(),
                "action": self.action,
                "model": self.model,
                "object_pk": self.object_pk,
                "actor": {"id": self.actor_id, "username": self.actor_username} if self.actor_id else None,
                "fields": self.fields,
                "remote_addr": self.remote_addr,
                "request_id": self.request_id,
                "operation": {"type": self.operation_type, "name": self.operation_name}
                if self.operation_type or self.operation_name
                else None,
            }
        )
        return data


@dataclass(frozen=True)
class SubjectReport:
    """The reads and changes of one subject's objects, newest first."""

    #: ``"app_label.Model:pk"`` of the subject, and its text.
    subject: str
    subject_repr: str
    #: The earliest time covered (None: the whole trail).
    since: datetime.datetime | None
    generated_at: datetime.datetime
    #: ``"app_label.Model:pk"`` of each object holding the subject's data.
    objects: list[str]
    entries: list[ReportEntry]

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data (the command's ``--format json``)."""
        data: dict[str, Any] = safe_data(
            {
                "subject": self.subject,
                "subject_repr": self.subject_repr,
                "since": self.since.isoformat() if self.since else None,
                "generated_at": self.generated_at.isoformat(),
                "objects": self.objects,
            }
        )
        data["entries"] = [entry.as_dict() for entry in self.entries]
        return data


def find_subject(text: str) -> Model:
    """The instance ``text`` names: ``app_label.Model:pk``, or else a username.

    Raises [`SubjectError`][gql_audit.report.SubjectError] when ``text`` is malformed or names nothing.
    """
    if not isinstance(text, str) or not text.strip():
        raise SubjectError("The subject is empty: give a username or app_label.Model:pk.")
    if len(text) > MAX_SUBJECT_LENGTH:
        raise SubjectError(f"The subject is longer than {MAX_SUBJECT_LENGTH} characters.")
    if _CONTROL.search(text) or safe_text(text) != text:
        raise SubjectError(f"The subject {safe_text(text)!r} holds control characters or invalid text.")
    match = _OBJECT_SUBJECT.fullmatch(text)
    if match is not None:
        return _find_object(match["app"], match["model"], match["pk"])
    if ":" in text:
        raise SubjectError(f"The subject {text!r} is neither a username nor of the form app_label.Model:pk.")
    User = get_user_model()
    try:
        user: Model = User._default_manager.get(**{User.USERNAME_FIELD: text})
    except User.DoesNotExist:
        raise SubjectError(f"No user has the username {text!r}.") from None
    return user


def _find_object(app_label: str, model_name: str, pk: str) -> Model:
    try:
        model = apps.get_model(app_label, model_name)
    except LookupError:
        raise SubjectError(f"No model {app_label}.{model_name} is installed.") from None
    label = model._meta.label
    try:
        value = model._meta.pk.to_python(pk)
        found: Model = model._default_manager.get(pk=value)
    except (ValidationError, ValueError, TypeError):
        raise SubjectError(f"{pk!r} is not a valid primary key of {label}.") from None
    except ObjectDoesNotExist:
        raise SubjectError(f"No {label} has the primary key {pk!r}.") from None
    return found


def subject_objects(subject: Model) -> list[Model]:
    """The instances holding ``subject``'s data: for a user, what ``SUBJECT_OBJECTS`` says (the
    user itself when unset); any other instance stands for itself alone (the callable takes
    a user, and may not be able to tell another model's data).

    Raises [`SubjectError`][gql_audit.report.SubjectError] when the setting cannot be imported, the
    callable raises, or it returns anything but model instances.
    """
    setting = conf.SUBJECT_OBJECTS
    if setting is None or not isinstance(subject, get_user_model()):
        return [subject]
    name = f"{SETTINGS_NAME}['SUBJECT_OBJECTS']"
    try:
        function = import_string(setting) if isinstance(setting, str) else setting
    except ImportError as exc:
        raise SubjectError(f"{name} cannot be imported: {exc}") from None
    if not callable(function):
        raise SubjectError(f"{name} is not a callable.")
    try:
        found = list(function(subject))
    except Exception as exc:  # noqa: BLE001 - the service's code: reported, never a traceback
        raise SubjectError(f"{name} raised {type(exc).__name__}: {safe_text(str(exc))[:500]}") from None
    for item in found:
        if not isinstance(item, Model):
            raise SubjectError(f"{name} returned {type(item).__name__}, not a model instance.")
    return found


def subject_report(
    subject: Model | str,
    *,
    since: datetime.datetime | datetime.timedelta | None = None,
    using: str | None = None,
) -> SubjectReport:
    """The reads and change entries of every object holding ``subject``'s data, newest first.

    ``subject`` is an instance, or the text [`find_subject`][gql_audit.report.find_subject] reads
    (a username or ``app_label.Model:pk``). ``since`` is a time or an age
    (``timedelta(days=90)``); None covers the whole trail. ``using`` is the
    database alias of the trail (default: ``AUDIT_DATABASE``).
    Raises [`SubjectError`][gql_audit.report.SubjectError] on a subject that cannot be reported on.
    """
    instance = find_subject(subject) if isinstance(subject, str) else subject
    now = timezone.now()
    cutoff = now - since if isinstance(since, datetime.timedelta) else since
    objects = [item for item in subject_objects(instance) if item.pk is not None]
    entries = [_from_read(read) for read in reads_of_objects(objects, since=cutoff, using=using)]
    entries.extend(_from_change(entry) for entry in changes_of_objects(objects, since=cutoff, using=using))
    entries = _with_usernames(entries)
    # Newest first; within one instant, by object, so that the order does not depend on the store.
    entries.sort(key=lambda entry: (entry.model, entry.object_pk, entry.action))
    entries.sort(key=lambda entry: entry.at, reverse=True)
    keys = dict.fromkeys(f"{item._meta.label}:{item.pk}" for item in objects)
    subject_key = f"{instance._meta.label}:{instance.pk}"
    # Reading the trail is itself on the trail (PCI DSS 10.2.1.3).
    record_event(
        "trail_accessed",
        message="audit records shown: subject report",
        details={"page": "subject_report", "filters": {"subject": subject_key, "since": cutoff and cutoff.isoformat()}},
    )
    return SubjectReport(
        subject=subject_key,
        subject_repr=_text(instance),
        since=cutoff,
        generated_at=now,
        objects=list(keys),
        entries=entries,
    )


def write_csv(report: SubjectReport, stream: IO[str]) -> None:
    """Write the report's entries as CSV ([`CSV_COLUMNS`][gql_audit.report.CSV_COLUMNS]), safe to open in a spreadsheet.

    A cell starting with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading apostrophe, so no client-chosen value (a username, an
    operation name) runs as a formula.
    """
    writer = csv.writer(stream)
    writer.writerow(CSV_COLUMNS)
    for entry in report.entries:
        row = [
            entry.at.isoformat(),
            entry.action,
            entry.model,
            entry.object_pk,
            entry.actor_id,
            entry.actor_username,
            " ".join(entry.fields),
            entry.remote_addr,
            entry.request_id,
            entry.operation_type,
            entry.operation_name,
        ]
        writer.writerow([_cell(value) for value in row])


def _cell(value: str | None) -> str:
    text = safe_text(value) if value is not None else ""
    return "'" + text if text.startswith(_FORMULA_START) else text


def _text(value: Any) -> str:
    try:
        return safe_text(str(value))
    except Exception:  # noqa: BLE001 - a broken __str__ must not stop the report
        return ""


def _optional(value: Any) -> str | None:
    return None if value is None else _text(value)


def _operation(operation: Any) -> tuple[str | None, str | None]:
    if not isinstance(operation, dict):
        return None, None
    return _optional(operation.get("type")), _optional(operation.get("name"))


def _snapshot_username(actor: Any) -> str | None:
    return _optional(actor.get("username")) if isinstance(actor, dict) else None


def _from_read(read: Read) -> ReportEntry:
    operation_type, operation_name = _operation(read.operation)
    return ReportEntry(
        at=read.at,
        action="read",
        model=read.model,
        object_pk=read.object_pk,
        actor_id=_optional(read.actor_id),
        actor_username=_snapshot_username(read.actor),
        fields=[_text(name) for name in read.fields],
        remote_addr=read.remote_addr,
        request_id=read.request_id,
        operation_type=operation_type,
        operation_name=operation_name,
    )


def _from_change(entry: Any) -> ReportEntry:
    from auditlog.models import LogEntry

    # In English whatever the active language (auditlog's labels are translated).
    actions = {LogEntry.Action.CREATE: "create", LogEntry.Action.UPDATE: "update", LogEntry.Action.DELETE: "delete"}
    data = entry.additional_data if isinstance(entry.additional_data, dict) else {}
    found = data.get("gql_audit")
    ours: dict[str, Any] = found if isinstance(found, dict) else {}
    operation_type, operation_name = _operation(ours.get("operation"))
    try:
        changed = sorted(_text(name) for name in (entry.changes_dict or {}))
    except (ValueError, TypeError, AttributeError):  # a hand-written entry whose changes are not a dict
        changed = []
    model_class = entry.content_type.model_class()
    return ReportEntry(
        at=entry.timestamp,
        action=actions.get(entry.action, str(entry.action)),
        model=model_class._meta.label if model_class is not None else entry.content_type.model,
        object_pk=entry.object_pk,
        actor_id=_optional(entry.actor_id),
        actor_username=_snapshot_username(ours.get("actor")),
        fields=changed,
        remote_addr=entry.remote_addr,
        request_id=entry.cid or "",
        operation_type=operation_type,
        operation_name=operation_name,
    )


def _with_usernames(entries: list[ReportEntry]) -> list[ReportEntry]:
    """Fill in the username of entries written without an actor snapshot, in one query."""
    missing = {entry.actor_id for entry in entries if entry.actor_id and entry.actor_username is None}
    if not missing:
        return entries
    User = get_user_model()
    names = {
        str(pk): _text(name)
        for pk, name in User._default_manager.filter(pk__in=_valid_pks(User, missing)).values_list(
            "pk", User.USERNAME_FIELD
        )
    }
    return [
        entry if entry.actor_username else dataclasses.replace(entry, actor_username=names.get(entry.actor_id or ""))
        for entry in entries
    ]


def _valid_pks(model: type[Model], values: Iterable[str]) -> list[Any]:
    pks = []
    for value in values:
        try:
            pks.append(model._meta.pk.to_python(value))
        except (ValidationError, ValueError, TypeError):
            continue
    return pks
