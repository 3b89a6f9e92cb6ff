"""Delete old security events and ACCESS log entries, in batches."""

from __future__ import annotations

import datetime
import re
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from gql_audit.evidence import sealing
from gql_audit.kinds import SEVERITY
from gql_audit.models import ReadObject, RequestReads, SecurityEvent
from gql_audit.store import audit_alias

_AGE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
ACCESS = "access"
#: Ages beyond this reach before year 1 on some dates: refused rather than overflowing.
MAX_AGE = datetime.timedelta(days=365_000)


def parse_age(value: str, option: str = "--older-than") -> datetime.timedelta:
    """``90d``, ``12h``, ``30m``, ``2w``, ``45s``."""
    match = _AGE.fullmatch(value.strip())
    if match is None or int(match.group(1)) == 0:
        raise CommandError(f"{option} takes a number and a unit (s, m, h, d, w), like 90d; not {value!r}")
    try:
        age: datetime.timedelta | None = datetime.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        age = None
    if age is None or age > MAX_AGE:
        raise CommandError(f"{option} reaches back more than 1000 years: {value!r}")
    return age


class Command(BaseCommand):
    help = (
        "Delete security events and reads (both access stores) older than a cut-off, in batches of small "
        "transactions. Safe to interrupt and to run again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--older-than", required=True, help="Age cut-off, e.g. 90d, 12h, 2w.")
        parser.add_argument(
            "--kind",
            choices=sorted([*SEVERITY, ACCESS]),
            help="Only this security event kind, or 'access' for reads only (both access stores).",
        )
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")
        parser.add_argument("--batch-size", type=int, default=1000, help="Rows per transaction (default 1000).")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")

    def handle(self, *args: Any, **options: Any) -> None:
        batch_size = options["batch_size"]
        if not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be between 1 and 100000")
        cutoff = timezone.now() - parse_age(options["older_than"])
        using = options["database"] or audit_alias()
        kind = options["kind"]
        self.stdout.write(f"Deleting records older than {cutoff.isoformat()} from {using!r}.")
        targets: list[tuple[str, QuerySet[Any]]] = []
        if kind != ACCESS:
            events = SecurityEvent.objects.using(using).filter(created_at__lt=cutoff)
            targets.append(("security events", events.filter(kind=kind) if kind else events))
        if kind in (None, ACCESS):
            from auditlog import get_logentry_model

            LogEntry = get_logentry_model()
            targets.append(
                (
                    "access entries",
                    LogEntry.objects.using(using).filter(action=LogEntry.Action.ACCESS, timestamp__lt=cutoff),
                )
            )
            # The gql_audit access store: one row per request, and its object index where it has one.
            targets.append(("requests' reads", RequestReads.objects.using(using).filter(at__lt=cutoff)))
            targets.append(("objects read (index)", ReadObject.objects.using(using).filter(at__lt=cutoff)))
        if not options["dry_run"] and sealing.enabled():
            # Before deleting (an interrupted purge is covered too): a sealed record of what
            # goes, so that gql_audit_verify knows these absences from tampering.
            scope = "all" if kind is None else ACCESS if kind == ACCESS else f"event:{kind}"
            sealing.append(using, [[sealing.PURGE, scope, cutoff.isoformat(), None, None, None]])
            self.stdout.write(f"Sealed checkpoint: {scope} before {cutoff.isoformat()}.")
        for label, queryset in targets:
            if options["dry_run"]:
                self.stdout.write(f"{label}: would delete {queryset.count()}")
                continue
            total = self.purge(label, queryset, using, batch_size)
            self.stdout.write(self.style.SUCCESS(f"{label}: deleted {total}"))

    def purge(self, label: str, queryset: QuerySet[Any], using: str, batch_size: int) -> int:
        model: type[Model] = queryset.model
        total = 0
        while True:
            # Primary keys first, then a delete by key: each batch is one short
            # transaction (CockroachDB and PostgreSQL alike prefer those).
            pks = list(queryset.order_by().values_list("pk", flat=True)[:batch_size])
            if not pks:
                return total
            with transaction.atomic(using=using):
                deleted, _ = model._base_manager.using(using).filter(pk__in=pks).delete()
            total += deleted
            self.stdout.write(f"{label}: batch of {deleted}, {total} so far")
