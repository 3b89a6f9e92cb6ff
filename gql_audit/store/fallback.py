"""The records as log lines: ``EVENT_SINK`` ``"logs"``, and the fallback when the database
cannot take them (nothing is silently lost: every record goes to the log, one JSON object
a line)."""

from __future__ import annotations

import logging
from typing import Any

from django.utils import timezone

from gql_audit import context
from gql_audit.logging import log_payload
from gql_audit.store.records import access_data, by_reader, object_repr

audit_logger = logging.getLogger("gql_audit.audit")
security_logger = logging.getLogger("gql_audit.security")


def describe(ctx: context.RequestContext, alias: str, records: list[Any]) -> list[dict[str, Any]]:
    """The entries as plain data, for the logs: what the rows would have held."""
    now = timezone.now()
    entries: list[dict[str, Any]] = []
    for reader, group in by_reader(ctx, records):
        shared = ctx.record_data(alias, reader)
        entries.extend(
            {
                "model": record.model._meta.label,
                "object_pk": str(record.pk),
                "object_repr": object_repr(record),
                "actor_id": reader.actor_id,
                "actor_email": reader.actor_email,
                "cid": ctx.correlation_id(),
                "remote_addr": reader.remote_addr,
                "remote_port": reader.remote_port,
                "timestamp": now,
                **access_data(shared, record),
            }
            for record in group
        )
    return entries


def entries_for_log(ctx: context.RequestContext | None, records: list[Any], alias: str) -> list[dict[str, Any]]:
    """:func:`describe`, or as much as can be said without the database."""
    if ctx is None or not records:
        return []
    try:
        return describe(ctx, alias, records)
    except Exception:  # noqa: BLE001 - still log what can be said without the database
        return [{"model": r.model._meta.label, "object_pk": str(r.pk), "fields": sorted(r.fields)} for r in records]


def log_records(entries: list[dict[str, Any]], events: list[dict[str, Any]]) -> None:
    """The records as log lines: access entries to ``gql_audit.audit``, events to ``gql_audit.security``."""
    for entry in entries:
        log_payload(audit_logger, logging.INFO, {"event": "access", **entry})
    for event in events:
        log_payload(security_logger, logging.WARNING, {"event": "security_event", **event})


def error_text(exc: BaseException, ctx: context.RequestContext | None) -> str:
    """An error as the fallback log shows it: short, and with the request's secrets removed."""
    text = f"{type(exc).__name__}: {exc}"[:1000]
    return ctx.scrubber().text(text) if ctx is not None else text


def log_unwritten(
    entries: list[dict[str, Any]],
    events: list[dict[str, Any]],
    exc: BaseException,
    ctx: context.RequestContext | None = None,
) -> None:
    """Records the database did not take: every one goes to the log."""
    log_payload(
        audit_logger,
        logging.ERROR,
        {
            "event": "audit_write_failed",
            "error": error_text(exc, ctx),
            "access_entries": len(entries),
            "security_events": len(events),
        },
    )
    for entry in entries:
        log_payload(audit_logger, logging.ERROR, {"event": "access", **entry})
    for event in events:
        log_payload(audit_logger, logging.ERROR, {"event": "security_event", **event})


def seal_failed(exc: BaseException, ctx: context.RequestContext | None, written: dict[str, Any] | None = None) -> None:
    """The fallback log's line for records written without their seal."""
    payload = {"event": "seal_failed", "error": error_text(exc, ctx), **(written or {})}
    log_payload(audit_logger, logging.ERROR, payload)
