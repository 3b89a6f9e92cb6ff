"""Writing what a request recorded: access entries and security events.

``flush`` runs in ``AuditContextMiddleware`` after the view returned, so it is
outside the view's transaction (``ATOMIC_REQUESTS``, ``ATOMIC_MUTATIONS``): a
rollback of the request cannot take the audit rows with it. Everything is
written in one transaction on ``AUDIT_DATABASE``, access entries with one
multi-row INSERT per batch. If the write fails, every record goes, complete, to
the ``gql_audit.audit`` logger as JSON, and with ``FAIL_CLOSED`` the response
is replaced by a 503.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from typing import Any

from django.db import connections, transaction
from django.db.models import Model
from django.http import HttpResponseBase, JsonResponse
from django.utils import timezone
from django.utils.encoding import smart_str

from gql_audit import context
from gql_audit.conf import conf
from gql_audit.events import build_event
from gql_audit.receivers import EMAIL_MAX_LENGTH, audit_context_data

audit_logger = logging.getLogger("gql_audit.audit")

AUDIT_UNAVAILABLE = "AUDIT_UNAVAILABLE"
#: Rows per INSERT at most, whatever the driver allows: bounds statement size.
MAX_ROWS_PER_INSERT = 2000
MAX_REPORTED_ERRORS = 5


def audit_alias() -> str:
    alias: str = conf.AUDIT_DATABASE or "default"
    return alias


def _actor(ctx: context.RequestContext) -> tuple[Any, str | None]:
    user = ctx.user
    if user is None or not getattr(user, "is_authenticated", False):
        return None, None
    email = getattr(user, user.get_email_field_name(), None) if hasattr(user, "get_email_field_name") else None
    email = str(email)[:EMAIL_MAX_LENGTH] if email else None
    pk = user.pk
    return (None if pk in ctx.deleted_actor_pks else pk), email


def _object_repr(record: Any) -> str:
    if isinstance(record.obj, record.model):
        try:
            return smart_str(record.obj)
        except Exception:  # noqa: BLE001 - a broken __str__ must not lose the entry
            pass
    return f"{record.model._meta.label} {record.pk}"


def access_entries(ctx: context.RequestContext, alias: str) -> list[dict[str, Any]]:
    """One entry per (model, primary key) the request exposed, fields merged."""
    if not ctx.accessed:
        return []
    from django.contrib.contenttypes.models import ContentType

    merged: dict[tuple[type[Model], str], Any] = {}
    for record in ctx.accessed.values():
        key = (record.model, str(record.pk))
        seen = merged.get(key)
        if seen is None:
            merged[key] = record
        else:
            seen.fields |= record.fields
            seen.paths |= record.paths
    actor_id, actor_email = _actor(ctx)
    shared = audit_context_data(ctx, alias)
    now = timezone.now()
    content_types: dict[type[Model], int] = {}
    entries = []
    for (model, pk), record in merged.items():
        if model not in content_types:
            content_types[model] = ContentType.objects.db_manager(alias).get_for_model(model).pk
        fields = sorted(name for name in record.fields if not name.startswith("__"))
        entries.append(
            {
                "content_type_id": content_types[model],
                "model": model._meta.label,
                "object_pk": pk,
                "object_id": record.pk if isinstance(record.pk, int) else None,
                "object_repr": _object_repr(record),
                "actor_id": actor_id,
                "actor_email": actor_email,
                "cid": ctx.request_id,
                "remote_addr": ctx.remote_addr,
                "timestamp": now,
                "gql_audit": {**shared, "path": sorted(record.paths), "fields": fields},
            }
        )
    return entries


def max_query_params(connection: Any) -> int:
    """Bound parameters one statement may carry on this connection.

    Django assumes SQLite's historic 999; SQLite builds since 3.32 allow
    32,766 or more and report it. PostgreSQL's wire protocol allows 65,535.
    """
    if connection.vendor == "sqlite":
        connection.ensure_connection()
        limit: int = connection.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return limit
    return int(connection.features.max_query_params or 65535)


def insert_access_entries(entries: list[dict[str, Any]], alias: str) -> None:
    """Multi-row INSERTs into auditlog's table: few statements whatever the count."""
    from auditlog import get_logentry_model

    LogEntry = get_logentry_model()
    connection = connections[alias]
    fields = [f for f in LogEntry._meta.concrete_fields if not f.primary_key]
    data_field = LogEntry._meta.get_field("additional_data")
    prepared_data: dict[str, Any] = {}
    constant = {
        "action": LogEntry.Action.ACCESS,
        "changes_text": "",
        "changes": None,
        "serialized_data": None,
        "remote_port": None,
    }
    rows = []
    for entry in entries:
        # Objects read the same way share one serialized additional_data.
        data = {"gql_audit": entry["gql_audit"]}
        data_key = json.dumps(data, sort_keys=True, default=str)
        if data_key not in prepared_data:
            prepared_data[data_key] = data_field.get_db_prep_save(data, connection)
        values = {**constant, **entry}
        row = []
        for field in fields:
            if field.attname == "additional_data":
                row.append(prepared_data[data_key])
            elif field.attname in values:
                row.append(field.get_db_prep_save(values[field.attname], connection))
            else:
                row.append(field.get_db_prep_save(field.get_default(), connection))
        rows.append(row)
    table = connection.ops.quote_name(LogEntry._meta.db_table)
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    placeholder = "(" + ", ".join(["%s"] * len(fields)) + ")"
    batch = max(1, min(MAX_ROWS_PER_INSERT, max_query_params(connection) // len(fields)))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), batch):
            chunk = rows[start : start + batch]
            sql = f"INSERT INTO {table} ({columns}) VALUES " + ", ".join([placeholder] * len(chunk))
            cursor.execute(sql, [value for row in chunk for value in row])


def insert_events(events: list[dict[str, Any]], alias: str) -> None:
    from gql_audit.models import SecurityEvent

    SecurityEvent.objects.using(alias).bulk_create([SecurityEvent(**event) for event in events])


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def log_unwritten(entries: list[dict[str, Any]], events: list[dict[str, Any]], exc: BaseException) -> None:
    """Nothing is silently lost: every record goes to the log, one JSON object a line."""
    audit_logger.error(
        _json(
            {
                "event": "audit_write_failed",
                "error": f"{type(exc).__name__}: {exc}"[:1000],
                "access_entries": len(entries),
                "security_events": len(events),
            }
        )
    )
    for entry in entries:
        audit_logger.error(_json({"event": "access", **entry}))
    for event in events:
        audit_logger.error(_json({"event": "security_event", **event}))


def write(entries: list[dict[str, Any]], events: list[dict[str, Any]], alias: str) -> bool:
    """Write both kinds in one transaction; on failure log them and return False."""
    if not entries and not events:
        return True
    try:
        with transaction.atomic(using=alias):
            if entries:
                insert_access_entries(entries, alias)
            if events:
                insert_events(events, alias)
    except Exception as exc:  # noqa: BLE001 - the request must not fail because auditing did
        log_unwritten(entries, events, exc)
        return False
    return True


def write_now(*, events: list[dict[str, Any]]) -> bool:
    """Write events recorded outside a request."""
    return write([], events, audit_alias())


def _graphql_request_errors(ctx: context.RequestContext, response: HttpResponseBase) -> None:
    """A 400 with GraphQL errors (syntax, validation): no resolver saw it."""
    if response.status_code != 400 or getattr(response, "streaming", False):
        return
    if not response.get("Content-Type", "").startswith("application/json"):
        return
    try:
        body = json.loads(response.content)  # type: ignore[attr-defined]
        errors = body.get("errors") if isinstance(body, dict) else None
    except ValueError:
        return
    if not isinstance(errors, list) or not errors:
        return
    messages = [str(e.get("message", "")) if isinstance(e, dict) else str(e) for e in errors]
    key = ("graphql_error", "", messages[0], "")
    if key not in ctx.events:
        ctx.events[key] = build_event(
            "graphql_error",
            ctx,
            message=messages[0],
            details={"status": 400, "errors": messages[:MAX_REPORTED_ERRORS], "count": len(messages)},
        )


def flush(ctx: context.RequestContext, response: HttpResponseBase) -> HttpResponseBase:
    """Write the request's records; the response, or a 503 when failing closed."""
    _graphql_request_errors(ctx, response)
    alias = audit_alias()
    events = list(ctx.events.values())
    for event in events:
        # Recorded before the operation was known (at authentication): it is now.
        if event["operation"] is None:
            event["operation"] = ctx.operation
    try:
        entries = access_entries(ctx, alias)
    except Exception as exc:  # noqa: BLE001 - e.g. the content types table is unreachable
        bare = [
            {"model": r.model._meta.label, "object_pk": str(r.pk), "fields": sorted(r.fields), "cid": ctx.request_id}
            for r in (ctx.accessed or {}).values()
        ]
        log_unwritten(bare, events, exc)
        written = False
    else:
        written = write(entries, events, alias)
    ctx.accessed = {} if ctx.accessed is not None else None
    ctx.events = {}
    if written or not conf.FAIL_CLOSED:
        return response
    failed = JsonResponse(
        {
            "errors": [
                {
                    "message": "The audit trail could not be written; the response was withheld.",
                    "extensions": {"code": AUDIT_UNAVAILABLE},
                }
            ]
        },
        status=503,
    )
    return failed
