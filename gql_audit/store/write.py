"""The write of a request's records: one transaction, sealed with them, narrowed down after a failure.

``write`` puts the reads (through the store ``ACCESS_STORE`` names) and the security
events in one transaction on ``AUDIT_DATABASE``, sealed in it (``TAMPER_EVIDENCE``).
When that fails it tries again without the seal (the records matter more than their
seal), then each kind and each record apart where the database refused a value, so
that one record cannot take the others with it; what still cannot be written goes,
complete, to the fallback log.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction

from gql_audit import context
from gql_audit.conf import conf
from gql_audit.evidence import sealing
from gql_audit.store import events as event_rows
from gql_audit.store.backends import access_store
from gql_audit.store.fallback import entries_for_log, log_records, log_unwritten, seal_failed
from gql_audit.store.faults import refused_for_content, unreachable
from gql_audit.store.records import by_reader, merge_records

#: After a failed write, records are tried one by one, this many at most.
MAX_SINGLE_RETRIES = 200


def audit_alias() -> str:
    """The database alias audit records are written to (``AUDIT_DATABASE``)."""
    alias: str = conf.AUDIT_DATABASE or "default"
    return alias


def _store(
    ctx: context.RequestContext | None,
    records: list[Any],
    events: list[dict[str, Any]],
    alias: str,
    seal: bool = True,
) -> None:
    """Write the records, and seal them in the same transaction (``TAMPER_EVIDENCE``):
    no savepoint, so a seal that fails takes the records with it, and ``write`` tries
    again without the seal."""
    sealed = seal and sealing.enabled()
    store = access_store()
    groups = by_reader(ctx, records) if records and ctx is not None else []
    if ctx is not None and len(groups) == 1 and not events:
        [(reader, group)] = groups
        if store.save_alone(ctx, group, alias, reader, sealed=sealed):
            return
    written: dict[str, list[Any]] = {sealing.READS: [], sealing.ENTRY: [], sealing.EVENT: []}
    unsaved: list[Any] = []
    with transaction.atomic(using=alias):
        if ctx is not None:
            for reader, group in groups:
                sealable, left = store.save(ctx, group, alias, reader, sealed=sealed)
                written[store.seal_kind].extend(sealable)
                unsaved.extend(left)
        if events:
            written[sealing.EVENT] = event_rows.insert_events(events, alias)
        if sealed:
            written[sealing.ENTRY].extend(ctx.changes_to_seal if ctx is not None else [])
            sealing.seal(alias, written, insert=unsaved)
    if sealed and ctx is not None:
        ctx.changes_to_seal = []


def seal_quietly(alias: str, written: dict[str, list[Any]]) -> None:
    """Seal what was just written; a seal that cannot be written must not lose the records
    (they are written unsealed, and the fallback log says so)."""
    try:
        with transaction.atomic(using=alias):
            sealing.seal(alias, written)
    except Exception as exc:  # noqa: BLE001 - the records matter more than their seal
        seal_failed(exc, None, written)


def _store_apart(
    ctx: context.RequestContext | None, records: list[Any], events: list[dict[str, Any]], alias: str
) -> tuple[list[Any], list[dict[str, Any]], BaseException | None]:
    """After a failed write: each kind on its own, then, where a value was refused,
    each record, so that one record the database refuses cannot take the others
    with it. Returns what still could not be written and the last error."""
    failed_records: list[Any] = []
    failed_events: list[dict[str, Any]] = []
    error: BaseException | None = None
    budget = MAX_SINGLE_RETRIES
    for kind_records, kind_events, failed in ((records, [], failed_records), ([], events, failed_events)):
        batch = kind_records or kind_events
        if not batch:
            continue
        if error is not None and unreachable(error):
            failed.extend(batch)
            continue
        try:
            _store(ctx, kind_records, kind_events, alias)
            continue
        except Exception as exc:  # noqa: BLE001 - narrowed down below
            error = exc
        for item in batch:
            if budget <= 0 or not refused_for_content(error):
                failed.append(item)
                continue
            budget -= 1
            try:
                _store(ctx, [item] if kind_records else [], [item] if kind_events else [], alias)
            except Exception as exc:  # noqa: BLE001 - this one goes to the log
                error = exc
                failed.append(item)
    return failed_records, failed_events, error


def write(ctx: context.RequestContext | None, records: list[Any], events: list[dict[str, Any]], alias: str) -> bool:
    """Write both kinds; what cannot be written goes, complete, to the log. True when all was written."""
    if not records and not events:
        if ctx is not None and ctx.changes_to_seal and sealing.enabled():
            try:
                _store(ctx, [], [], alias)
            except Exception as exc:  # noqa: BLE001 - sealing must not fail the request
                seal_failed(exc, ctx)
        return True
    sink = conf.EVENT_SINK
    if sink != "database":
        log_records(entries_for_log(ctx, records, alias), events)
        if sink == "logs":
            return True
    try:
        _store(ctx, records, events, alias)
        return True
    except Exception as exc:  # noqa: BLE001 - the request must not fail because auditing did
        error: BaseException = exc
    if sealing.enabled() and not unreachable(error):
        # Maybe the seal failed, not the records: they matter more than their seal.
        try:
            _store(ctx, records, events, alias, seal=False)
        except Exception as exc:  # noqa: BLE001 - the records themselves were refused
            error = exc
        else:
            seal_failed(error, ctx)
            return True
    if not unreachable(error):
        records, events, last = _store_apart(ctx, records, events, alias)
        if not records and not events:
            return True
        error = last or error
    log_unwritten(entries_for_log(ctx, records, alias), events, error, ctx)
    return False


def write_now(*, events: list[dict[str, Any]]) -> bool:
    """Write events recorded outside a request."""
    return write(None, [], events, audit_alias())


def flush(ctx: context.RequestContext) -> bool:
    """Write the request's records; True when all of them reached the database
    (what could not went, complete, to the fallback log)."""
    alias = audit_alias()
    events = list(ctx.events.values())
    if events:
        scrubber = ctx.scrubber()
        for event in events:
            # Recorded before the operation was known (at authentication): it is now.
            if event["operation"] is None:
                event["operation"] = ctx.operation
            if scrubber:
                event["message"] = scrubber.text(event["message"])
                event["details"] = scrubber.data(event["details"])
    records = merge_records(ctx)
    ctx.objects_accessed = len(records)
    # Closed while writing: auditlog's pre_log, sent for the entries, must not
    # route them back into the request's records.
    tracking, ctx.accessed = ctx.accessed is not None, None
    written = write(ctx, records, events, alias)
    ctx.accessed = {} if tracking else None
    ctx.events = {}
    return written
