"""Delete old security events and reads, in batches.

With ``EXPORT``, a record still waiting in the outbox (not yet shipped to every sink)
is never deleted: the purge of its kind stops at the oldest of them, so that what
reaches the SIEM is whole and what is purged stays the oldest of each kind.
"""

from __future__ import annotations

import datetime
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Min, Model, QuerySet
from django.utils import timezone

from gql_audit.db import run_in_transaction
from gql_audit.durations import SPELLINGS, parse_duration
from gql_audit.evidence import log, sealing
from gql_audit.kinds import SEVERITY
from gql_audit.models import LogLeaf, OutboxEvent, ReadObject, RequestReads, SecurityEvent
from gql_audit.store import audit_alias

ACCESS = "access"
#: The indexed time each purged model is cut off by (auditlog's LogEntry: ``timestamp``).
TIME_FIELDS = {"gql_audit.securityevent": "created_at", "gql_audit.requestreads": "at", "gql_audit.readobject": "at"}


def parse_age(value: str, option: str = "--older-than") -> datetime.timedelta:
    """``90d``, ``12h``, ``30min``, ``2w``, ``6mo`` (see :mod:`gql_audit.durations`)."""
    try:
        return parse_duration(value, option)
    except ValueError as exc:
        raise CommandError(str(exc)) from None


class Command(BaseCommand):
    help = (
        "Delete security events and reads (both access stores) older than a cut-off, in batches of small "
        "transactions. Safe to interrupt and to run again. With CHECKPOINTS, only the oldest of each kind "
        "in the log's order, so that verification with the public key still passes."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than", required=True, help=f"Age cut-off, e.g. 90d, 12h, 6mo (units: {SPELLINGS})."
        )
        parser.add_argument(
            "--kind",
            choices=sorted([*SEVERITY, ACCESS]),
            help="Only this security event kind, or 'access' for reads only (both access stores).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows per transaction (default 1000).")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")
        parser.add_argument(
            "--wait",
            default=None,
            help="With CHECKPOINTS: how long to wait for gql_audit_checkpoint to log the purge before "
            "deleting anything (default: twice CHECKPOINTS['interval']).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000")
        cutoff = timezone.now() - parse_age(options["older_than"])
        using = options["database"] or audit_alias()
        kind = options["kind"]
        dry_run = options["dry_run"]
        verb = "Would delete (dry run, nothing is deleted)" if dry_run else "Deleting"
        self.stdout.write(f"{verb}: records older than {cutoff.isoformat()} from {using!r}.")
        targets = self.targets(kind, cutoff, using)
        if not dry_run and sealing.enabled():
            # Before deleting (an interrupted purge is covered too): a sealed record of what
            # goes, so that gql_audit_verify knows these absences from tampering.
            scope = "all" if kind is None else ACCESS if kind == ACCESS else f"event:{kind}"
            entry = [sealing.PURGE, scope, cutoff.isoformat(), None, None, None]
            run_in_transaction(sealing.append, using, [entry], using=using)
            self.stdout.write(f"Sealed checkpoint: {scope} before {cutoff.isoformat()}.")
            self.wait_logged(entry, options["wait"], using)
        stopped: datetime.datetime | None = None  # where the reads' purge stopped, for their index
        for label, queryset, shipped_as in targets:
            if queryset.model is ReadObject and stopped is not None:
                queryset = queryset.filter(at__lt=stopped)
            total = queryset.count()
            waiting = OutboxEvent.objects.using(using).filter(kind=shipped_as).count() if shipped_as else 0
            if dry_run:
                self.stdout.write(f"{label}: would delete {total}" + _waiting_note(waiting, shipped_as))
                continue
            unshipped = _Unshipped(shipped_as, waiting, using) if shipped_as and waiting else None
            deleted, held = self.purge(label, queryset, using, batch_size, total, unshipped)
            if held is not None and queryset.model is RequestReads:
                stopped = held
            self.stdout.write(self.style.SUCCESS(f"{label}: deleted {deleted} of {total}"))

    def wait_logged(self, entry: list[Any], wait: str | None, using: str) -> None:
        """With ``CHECKPOINTS``: nothing is deleted before the log holds the purge's own
        record, so that verification with the public key tells the purge from a deletion."""
        try:
            settings = log.log_settings()
        except ValueError as exc:
            raise CommandError(f"CHECKPOINTS {exc}.") from None
        if settings is None:
            return
        timeout = parse_age(wait, "--wait") if wait else 2 * settings.interval
        _, scope, _, _, text = log.leaf_of_entry(entry)
        self.stdout.write(f"Waiting for gql_audit_checkpoint to log the purge (at most {timeout}).")
        deadline = time.monotonic() + timeout.total_seconds()
        leaves = LogLeaf.objects.using(using).filter(kind=sealing.PURGE, record_id=scope, leaf=text)
        while not leaves.exists():
            if time.monotonic() > deadline:
                raise CommandError(
                    "the log has not taken the purge's record: nothing was deleted. Is gql_audit_checkpoint "
                    "running? Run the purge again once it is (see docs/evidence.md)."
                )
            time.sleep(1)
        self.stdout.write("Logged.")

    def targets(
        self, kind: str | None, cutoff: datetime.datetime, using: str
    ) -> list[tuple[str, QuerySet[Any], str | None]]:
        """What goes: ``(label, queryset, kind in the outbox)``, the log's order kept where
        there is a log."""
        from auditlog import get_logentry_model

        targets: list[tuple[str, QuerySet[Any], str | None]] = []
        if kind != ACCESS:
            events = SecurityEvent.objects.using(using).filter(created_at__lt=cutoff)
            events = events.filter(kind=kind) if kind else events
            types = [kind] if kind else list(SEVERITY)
            targets.append(("security events", _in_log_order(events, sealing.EVENT, types, cutoff, using), "event"))
        if kind in (None, ACCESS):
            LogEntry = get_logentry_model()
            entries = LogEntry.objects.using(using).filter(action=LogEntry.Action.ACCESS, timestamp__lt=cutoff)
            targets.append(("access entries", _in_log_order(entries, sealing.ENTRY, [ACCESS], cutoff, using), "entry"))
            # The gql_audit access store: one row per request, and its object index where it has one.
            reads = RequestReads.objects.using(using).filter(at__lt=cutoff)
            targets.append(
                ("requests' reads", _in_log_order(reads, sealing.READS, [sealing.READS], cutoff, using), "reads")
            )
            index = ReadObject.objects.using(using).filter(at__lt=cutoff)
            kept = list(_kept(sealing.READS, [sealing.READS], cutoff, using))
            targets.append(("objects read (index)", index.exclude(reads_id__in=kept) if kept else index, None))
        return targets

    def purge(
        self, label: str, queryset: QuerySet[Any], using: str, batch_size: int, total: int, unshipped: _Unshipped | None
    ) -> tuple[int, datetime.datetime | None]:
        """Delete ``queryset`` oldest first: how many, and the time of the record not yet
        shipped where it stopped (None: it did not stop). ``unshipped``: the records of
        their kind the outbox holds, when it holds any."""
        model: type[Model] = queryset.model
        time_field = TIME_FIELDS.get(model._meta.label_lower, "timestamp")
        deleted_so_far = 0
        while True:
            # Primary keys first, then a delete by key: each batch is one short
            # transaction (CockroachDB and PostgreSQL alike prefer those), run again after a
            # serialization failure. Oldest first,
            # along the time index: retention only ever takes the oldest records, also
            # when a purge is interrupted.
            oldest_first = queryset.order_by(time_field)
            batch = list(oldest_first.values_list("pk", time_field)[:batch_size])
            if not batch:
                return deleted_so_far, None
            held = unshipped.first(batch) if unshipped is not None else None
            pks = [pk for pk, _ in batch[:held]]
            if pks:
                deleted = run_in_transaction(_delete, model, pks, using, using=using)
                deleted_so_far += deleted
                self.stdout.write(f"{label}: batch of {deleted}, {deleted_so_far} of {total}")
            if held is not None:
                at = batch[held][1]
                self.stdout.write(
                    self.style.WARNING(
                        f"{label}: stopped at a record of {at.isoformat()} not yet shipped to every EXPORT sink "
                        "(it and the newer ones are kept: run the purge again once gql_audit_ship has caught up)"
                    )
                )
                return deleted_so_far, at


#: Outbox rows of one kind read once into memory, at most; past it, each batch asks the outbox.
OUTBOX_IN_MEMORY = 200_000


class _Unshipped:
    """The records of one kind still in the outbox (not yet shipped to every sink)."""

    def __init__(self, kind: str, waiting: int, using: str) -> None:
        self.outbox = OutboxEvent.objects.using(using).filter(kind=kind)
        # A snapshot errs only one way: a record shipped since is kept until the next purge.
        self.known = set(self.outbox.values_list("record_id", flat=True)) if waiting <= OUTBOX_IN_MEMORY else None

    def first(self, batch: list[tuple[Any, Any]]) -> int | None:
        """The position in ``batch`` (``(pk, time)`` oldest first) of the first record still
        in the outbox, or None."""
        ids = [str(pk) for pk, _ in batch]
        known = self.known
        if known is None:
            known = set(self.outbox.filter(record_id__in=ids).values_list("record_id", flat=True))
        return next((n for n, record_id in enumerate(ids) if record_id in known), None)


def _waiting_note(waiting: int, shipped_as: str | None) -> str:
    """What a dry run says of the records of the outbox kind ``shipped_as`` still waiting
    (all of that kind: a purge checks its own records one by one)."""
    if not waiting:
        return ""
    return (
        f" ({waiting} {shipped_as!r} records wait in the outbox, not yet shipped to every EXPORT sink: "
        "the purge stops at the oldest of them)"
    )


def _delete(model: type[Model], pks: list[Any], using: str) -> int:
    deleted, _ = model._base_manager.using(using).filter(pk__in=pks).delete()
    return int(deleted)


def _kept(kind: str, types: list[str], cutoff: datetime.datetime, using: str) -> QuerySet[Any]:
    """Keys of records older than ``cutoff`` the log holds after a newer one of their kind:
    kept for now, so that what is purged is always the oldest of each kind in the log
    (the check with the public key tells a purge from a deletion by that)."""
    leaves = LogLeaf.objects.using(using).filter(kind=kind, type__in=types)
    kept = LogLeaf.objects.using(using).none()
    for type_ in types:
        boundary = leaves.filter(type=type_, at__gte=cutoff).aggregate(first=Min("index"))["first"]
        if boundary is not None:
            kept = kept | leaves.filter(type=type_, index__gt=boundary, at__lt=cutoff)
    return kept.values_list("record_id", flat=True)


def _in_log_order(
    queryset: QuerySet[Any], kind: str, types: list[str], cutoff: datetime.datetime, using: str
) -> QuerySet[Any]:
    """``queryset`` less the records the log keeps for now (see :func:`_kept`)."""
    if not LogLeaf.objects.using(using).filter(kind=kind).exists():
        return queryset
    return queryset.exclude(pk__in=list(_kept(kind, types, cutoff, using)))
