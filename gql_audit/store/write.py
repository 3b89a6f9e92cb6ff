"""The write of a request's records: one transaction, sealed with them, narrowed down after a failure.

``write`` puts the reads (through the store ``ACCESS_STORE`` names) and the security
events in one transaction on ``AUDIT_DATABASE``, sealed in it (``TAMPER_EVIDENCE``).
When that fails it tries again without the seal (the records matter more than their
seal), then each kind and each record apart where the database refused a value, so
that one record cannot take the others with it; what still cannot be written goes,
complete, to the fallback log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction

from gql_audit import context, metrics
from gql_audit.conf import conf
from gql_audit.evidence import sealing
from gql_audit.export import outbox
from gql_audit.store import events as event_rows
from gql_audit.store.backends import access_store
from gql_audit.store.fallback import entries_for_log, log_records, log_unwritten, seal_failed
from gql_audit.store.faults import refused_for_content, unreachable
from gql_audit.store.records import by_reader, merge_records

#: After a failed write, records are tried one by one, this many at most.
MAX_SINGLE_RETRIES = 200

T = TypeVar("T")


def audit_alias() -> str:
    """The database alias audit records are written to (``AUDIT_DATABASE``)."""
    alias: str = conf.AUDIT_DATABASE or "default"
    return alias


#: Runs a write again after a serialization failure (SQLSTATE 40001): ``gql_audit.db.retry_write``,
#: given at start-up (:func:`use_retries`). The store cannot import it: ``gql_audit.db``
#: records its events through the store. Until then a write is tried once.
_retry: Callable[..., Any] | None = None


def use_retries(retry: Callable[..., Any]) -> None:
    """Have every audit write run again after a serialization failure by ``retry``
    (``retry(attempt, using=alias, on_retry=callback)``, as ``gql_audit.db.retry_write``)."""
    global _retry
    _retry = retry


def _retrying(attempt: Callable[[list[dict[str, Any]]], T], alias: str) -> T:
    """``attempt(retries)``, run again after a serialization failure; ``retries``: the
    ``db_retry`` events of the attempts before, to write with the records."""
    if _retry is None:
        return attempt([])
    result: T = _retry(attempt, using=alias, on_retry=lambda exc: sealing.rolled_back(alias))
    return result


def _store(
    ctx: context.RequestContext | None,
    records: list[Any],
    events: list[dict[str, Any]],
    alias: str,
    seal: bool = True,
) -> dict[str, list[Any]]:
    """Write the records, and seal them in the same transaction (``TAMPER_EVIDENCE``):
    no savepoint, so a seal that fails takes the records with it, and ``write`` tries
    again without the seal. Returns what was written unsealed (``seal=False`` with
    sealing on), ``{kind: rows or primary keys}``, the request's change entries too."""
    on = sealing.enabled()
    sealed = seal and on
    store = access_store()
    groups = by_reader(ctx, records) if records and ctx is not None else []
    if ctx is not None and len(groups) == 1 and not events and sealed == on:
        [(reader, group)] = groups
        # One statement in autocommit: its chain is taken (or started) before it, outside it.
        if store.save_alone(ctx, group, alias, reader, sealed=sealed):
            metrics.records_written("reads", len(group))
            return {}
    if sealed:
        sealing.prepare(alias)
    written: dict[str, list[Any]] = {sealing.READS: [], sealing.ENTRY: [], sealing.EVENT: []}
    unsaved: list[Any] = []
    with transaction.atomic(using=alias):
        if ctx is not None:
            for reader, group in groups:
                # Sealing on, the rows are wanted either way: sealed, or named as unsealed.
                sealable, left = store.save(ctx, group, alias, reader, sealed=on)
                written[store.seal_kind].extend(sealable)
                if sealed:
                    unsaved.extend(left)
                else:
                    for row in left:
                        sealing.insert(alias, row)
        if events:
            written[sealing.EVENT] = event_rows.insert_events(events, alias)
        outbox.stage(alias, written)
        if on and ctx is not None:
            written[sealing.ENTRY].extend(ctx.changes_to_seal)
        if sealed:
            sealing.seal(alias, written, insert=unsaved)
    if sealed and ctx is not None:
        ctx.changes_to_seal = []
    metrics.records_written("reads", len(records) if ctx is not None else 0)
    metrics.records_written("event", len(events))
    return written if on and not sealed else {}


def _left_unsealed(
    ctx: context.RequestContext | None, alias: str, written: dict[str, list[Any]], error: BaseException
) -> None:
    """Records written (or committed by the service) whose seal could not be: the fallback
    log names them, and the next seal of this process lists them as ``unsealed``."""
    keys = {kind: [getattr(item, "pk", item) for item in items] for kind, items in written.items() if items}
    if ctx is not None:
        ctx.changes_to_seal = []
    if not keys:
        return
    sealing.note_unsealed(alias, keys, error)
    seal_failed(error, ctx, {"unsealed": {kind: [str(pk) for pk in pks] for kind, pks in keys.items()}})


def seal_quietly(alias: str, written: dict[str, list[Any]]) -> None:
    """Seal what was just written; a seal that cannot be written must not lose the records
    (they stay unsealed, and the fallback log says so)."""

    def attempt(retries: list[dict[str, Any]]) -> None:
        sealing.prepare(alias)
        with transaction.atomic(using=alias):
            ids = event_rows.insert_events(retries, alias) if retries else []
            sealing.seal(alias, {**written, sealing.EVENT: ids} if ids else written)

    try:
        _retrying(attempt, alias)
    except Exception as exc:  # noqa: BLE001 - the records matter more than their seal
        _left_unsealed(None, alias, written, exc)


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
    if not (records or events) or not metrics.enabled():
        return _write(ctx, records, events, alias)
    started = time.perf_counter()
    try:
        return _write(ctx, records, events, alias)
    finally:
        metrics.audit_write_took(time.perf_counter() - started)


def _write(ctx: context.RequestContext | None, records: list[Any], events: list[dict[str, Any]], alias: str) -> bool:
    if not records and not events:
        if ctx is not None and ctx.changes_to_seal and sealing.enabled():
            try:
                _retrying(lambda retries: _store(ctx, [], retries, alias), alias)
            except Exception as exc:  # noqa: BLE001 - sealing must not fail the request
                _left_unsealed(ctx, alias, {sealing.ENTRY: list(ctx.changes_to_seal)}, exc)
        return True
    sink = conf.EVENT_SINK
    if sink != "database":
        log_records(entries_for_log(ctx, records, alias), events)
        if sink == "logs":
            return True
    try:
        _retrying(lambda retries: _store(ctx, records, [*events, *retries], alias), alias)
        return True
    except Exception as exc:  # noqa: BLE001 - the request must not fail because auditing did
        error: BaseException = exc
    if sealing.enabled() and not unreachable(error):
        # Maybe the seal failed, not the records: they matter more than their seal.
        try:
            written = _retrying(lambda retries: _store(ctx, records, [*events, *retries], alias, seal=False), alias)
        except Exception as exc:  # noqa: BLE001 - the records themselves were refused
            error = exc
        else:
            _left_unsealed(ctx, alias, written, error)
            return True
    if not unreachable(error):
        records, events, last = _store_apart(ctx, records, events, alias)
        if not records and not events:
            return True
        error = last or error
    metrics.records_fallback("reads", len(records))
    metrics.records_fallback("event", len(events))
    log_unwritten(entries_for_log(ctx, records, alias), events, error, ctx)
    if ctx is not None and ctx.changes_to_seal and sealing.enabled():
        # Committed with the view, their seal was to come with these records.
        _left_unsealed(ctx, alias, {sealing.ENTRY: list(ctx.changes_to_seal)}, error)
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
