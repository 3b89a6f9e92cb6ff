"""Append every record not yet logged to the Merkle tree and sign a checkpoint (``CHECKPOINTS``)."""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import close_old_connections

from gql_audit.db import run_in_transaction
from gql_audit.durations import parse_duration
from gql_audit.evidence import anchors, log, note
from gql_audit.export import outbox
from gql_audit.export.records import CHECKPOINT
from gql_audit.logging import log_payload
from gql_audit.store import audit_alias

logger = logging.getLogger("gql_audit.evidence")


def _append_and_stage(using: str, signer: Any, origin: str, keys: list[note.PublicKey]) -> log.Run:
    """:func:`gql_audit.evidence.log.append`, and the checkpoint put in the export's outbox
    (``EXPORT``) in the same transaction: it is shipped to every sink, at least once."""
    done = log.append(using, signer, origin, keys)
    outbox.stage(using, {CHECKPOINT: [done.checkpoint.pk]})
    return done


class Command(BaseCommand):
    help = (
        "Append every record not yet logged to the append-only Merkle tree and write a signed checkpoint "
        "(also when nothing is new), to the database and to every anchor. The only reader of the signing key."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--every",
            default=None,
            help="Run until stopped (SIGTERM, SIGINT), a checkpoint at every interval, e.g. 60s "
            "(default: CHECKPOINTS['interval']). Without it: one checkpoint, then exit.",
            nargs="?",
            const="",
        )
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            settings = log.log_settings()
        except ValueError as exc:
            raise CommandError(f"CHECKPOINTS {exc}.") from None
        if settings is None:
            raise CommandError("CHECKPOINTS is not set: there is no log to checkpoint (see docs/evidence.md).")
        if not settings.signing_key:
            raise CommandError("CHECKPOINTS has no 'signing_key': the path of the Ed25519 private key that signs.")
        try:
            signer = log.read_signing_key(settings.signing_key)
            keys = log.read_public_keys(settings.origin, settings.public_keys)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        using = options["database"] or audit_alias()
        if options["every"] is None:
            if not self.run(using, signer, settings, keys):
                raise CommandError("the checkpoint was written, with the problems above.", returncode=1)
            return
        try:
            interval = parse_duration(options["every"], "--every") if options["every"] else settings.interval
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.every(interval.total_seconds(), using, signer, settings, keys)

    def run(self, using: str, signer: Any, settings: log.LogSettings, keys: list[note.PublicKey]) -> bool:
        """One checkpoint: True when nothing went wrong (every seal admitted, every anchor written)."""
        try:
            done = run_in_transaction(_append_and_stage, using, signer, settings.origin, keys, using=using)
        except log.LogError as exc:
            log_payload(logger, logging.ERROR, {"event": "checkpoint_refused", "error": str(exc)})
            raise CommandError(f"no checkpoint written: {exc}") from None
        checkpoint = done.checkpoint
        for line in done.refused:
            log_payload(logger, logging.ERROR, {"event": "record_not_logged", "problem": line})
            self.stderr.write(line)
        failed = anchors.write_all(settings.anchors, checkpoint.note, checkpoint.tree_size, checkpoint.created_at)
        for line in failed:
            log_payload(logger, logging.ERROR, {"event": "anchor_failed", "problem": line})
            self.stderr.write(f"anchor not written: {line}")
        log_payload(
            logger,
            logging.INFO,
            {
                "event": "checkpoint",
                "tree_size": checkpoint.tree_size,
                "appended": done.appended,
                "at": note.format_time(checkpoint.created_at),
            },
        )
        when = note.format_time(checkpoint.created_at)
        self.stdout.write(
            f"Checkpoint {checkpoint.tree_size} records (+{done.appended}) at {when}, root {checkpoint.root_hash}."
        )
        return not done.refused and not failed

    def every(
        self, seconds: float, using: str, signer: Any, settings: log.LogSettings, keys: list[note.PublicKey]
    ) -> None:
        """A checkpoint at every interval until stopped; a run that fails is logged and the next one tried."""
        if seconds < 1:
            raise CommandError("--every must be at least 1s: a checkpoint's time has one-second resolution.")
        stop = threading.Event()
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, lambda *_: stop.set())
        while not stop.is_set():
            started = time.monotonic()
            close_old_connections()  # a database restarted meanwhile: connect again
            try:
                self.run(using, signer, settings, keys)
            except Exception as exc:  # noqa: BLE001 - the next interval tries again
                log_payload(
                    logger, logging.ERROR, {"event": "checkpoint_failed", "error": f"{type(exc).__name__}: {exc}"}
                )
                self.stderr.write(f"checkpoint failed: {exc}")
            stop.wait(max(0.0, seconds - (time.monotonic() - started)))
