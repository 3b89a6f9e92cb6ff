"""Ship the outbox to ``EXPORT``'s sinks: until it is empty, or, with ``--follow``, until stopped."""

from __future__ import annotations

import signal
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from gql_audit.export.outbox import enabled
from gql_audit.export.ship import BATCH, Shipper


class Command(BaseCommand):
    help = (
        "Deliver the audit records in the outbox to every sink of GQL_AUDIT['EXPORT'], at least once and in "
        "order: until the outbox is empty, or with --follow until stopped (SIGTERM, SIGINT)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--follow", action="store_true", help="Keep shipping new records until stopped.")
        parser.add_argument("--interval", type=float, default=1.0, help="Seconds between looks when idle (1).")
        parser.add_argument("--batch", type=int, default=BATCH, help=f"Events per batch and sink ({BATCH}).")
        parser.add_argument("--database", default=None, help="Database alias (default: AUDIT_DATABASE).")

    def handle(self, *args: Any, **options: Any) -> None:
        if not enabled():
            raise CommandError("GQL_AUDIT['EXPORT'] names no sink: nothing to ship to.")
        if options["batch"] < 1 or options["interval"] <= 0:
            raise CommandError("--batch is at least 1 and --interval more than 0.")
        try:
            shipper = Shipper(alias=options["database"], batch=options["batch"])
        except ValueError as exc:
            raise CommandError(f"GQL_AUDIT['EXPORT']: {exc}") from None
        stopping = []

        def stop(signum: int, frame: Any) -> None:
            stopping.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            delivered = shipper.run(follow=options["follow"], interval=options["interval"], stop=lambda: stopping)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        failing = [state for state in shipper.states if state.failures]
        self.stdout.write(f"{delivered} events delivered")
        if failing:
            names = "; ".join(f"{state.spec.public_url}: {state.last_error}" for state in failing)
            raise CommandError(f"not delivered to every sink (kept in the outbox): {names}")
