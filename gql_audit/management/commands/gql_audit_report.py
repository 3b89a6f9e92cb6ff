"""The data-subject access report (GDPR article 15), as JSON or CSV."""

from __future__ import annotations

import io
import json
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import DatabaseError, connections

from gql_audit.conf import SETTINGS_NAME, conf
from gql_audit.management.commands.gql_audit_purge import parse_age
from gql_audit.report import SubjectError, subject_report, write_csv


class Command(BaseCommand):
    help = (
        "Who read or changed one person's data: when, which fields, from where, in which operation. "
        "SUBJECT is a username or app_label.Model:pk; GQL_AUDIT['SUBJECT_OBJECTS'] says which objects "
        "hold a person's data."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--subject", required=True, help="A username, or app_label.Model:pk.")
        parser.add_argument("--since", default=None, help="Only the last period, e.g. 90d, 12h, 2w (default: all).")
        parser.add_argument("--format", choices=["json", "csv"], default="json", help="Output format (default json).")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")

    def handle(self, *args: Any, **options: Any) -> None:
        since = parse_age(options["since"], "--since") if options["since"] is not None else None
        using = options["database"]
        if using is not None and using not in connections:
            raise CommandError(f"--database {using!r} is not in DATABASES.")
        try:
            report = subject_report(options["subject"], since=since, using=using)
        except SubjectError as exc:
            raise CommandError(str(exc)) from None
        except DatabaseError as exc:
            raise CommandError(f"The audit trail could not be read: {exc}") from None
        if options["format"] == "csv":
            output = io.StringIO(newline="")
            write_csv(report, output)
            self.stdout.write(output.getvalue(), ending="")
        else:
            self.stdout.write(json.dumps(report.as_dict(), indent=2, ensure_ascii=False))
        user_subject = report.subject.startswith(f"{get_user_model()._meta.label}:")
        if not report.entries and conf.SUBJECT_OBJECTS is None and user_subject:
            # Not an error (nothing may have been read), but the usual reason for an empty report.
            self.stderr.write(
                f"No reads or changes of {report.subject} were found. {SETTINGS_NAME}['SUBJECT_OBJECTS'] "
                "is not set, so only the subject's own row was looked for: see docs/subject-report.md."
            )
