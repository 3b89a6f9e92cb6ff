"""Print the inclusion proof of one record in the newest signed checkpoint (``CHECKPOINTS``)."""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError, CommandParser

from gql_audit.evidence import log, sealing
from gql_audit.store import audit_alias


class Command(BaseCommand):
    help = (
        "Print, as JSON, the RFC 6962 inclusion proof that a record is in the newest signed checkpoint: "
        "checked offline with gql_audit.evidence.verify_proof and the log's public key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("record", help="KIND:ID, KIND one of reads, entry, event (as gql_audit_verify names them).")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")

    def handle(self, *args: Any, **options: Any) -> None:
        kind_name, _, raw = options["record"].partition(":")
        kinds = sealing.record_kinds()
        if kind_name not in kinds or not raw:
            raise CommandError(f"give the record as KIND:ID, KIND one of {', '.join(kinds)}; not {options['record']!r}")
        try:
            # The key as the log names it (a UUID with its dashes, however it was typed).
            record_id = str(kinds[kind_name].model._meta.pk.to_python(raw))
        except (ValidationError, ValueError, TypeError):
            raise CommandError(f"{raw!r} is not a key of a {kind_name} record") from None
        try:
            proof = log.prove(kind_name, record_id, options["database"] or audit_alias())
        except LookupError as exc:
            raise CommandError(str(exc.args[0])) from None
        except log.LogError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(json.dumps(proof, indent=2))
