"""Verify the sealed audit trail (``TAMPER_EVIDENCE``)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.management.commands.gql_audit_purge import parse_age
from gql_audit.store import audit_alias


class Command(BaseCommand):
    help = (
        "Check the seals of the audit trail: report each edited, deleted or inserted record and each "
        "missing or forged seal, and exit non-zero when there is one."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default=None, help="Only records and seals newer than this age, e.g. 30d.")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")
        parser.add_argument(
            "--all-sealed",
            action="store_true",
            help="Sealing was on before the first record: report every record no seal lists as inserted, "
            "however old it claims to be.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not sealing.keys():
            raise CommandError("TAMPER_EVIDENCE has no key: nothing can be verified.")
        since = timezone.now() - parse_age(options["since"], "--since") if options["since"] else None
        report = verify(since=since, using=options["database"] or audit_alias(), all_sealed=options["all_sealed"])
        for problem in report.problems:
            self.stdout.write(str(problem))
        summary = (
            f"{report.records} records in {report.seals} seals on {report.chains} chains checked; "
            f"{report.not_covered} written before sealing began"
        )
        if report.ok:
            self.stdout.write(self.style.SUCCESS(f"OK: {summary}."))
            return
        raise CommandError(f"{len(report.problems)} problems: {summary}.", returncode=1)
