"""Shipping the outbox: each sink gets every record at least once, in the outbox's order.

A round:

1. **Number** the rows committed since the last round (``seq``, in the order of their
   time): a row whose transaction committed late gets a later number, it is never
   passed over.
2. For each sink, **send** the next batch after its cursor, rendered once for all the
   sinks at the same place; the sink acknowledges it (a file synced, a receiver that
   read it all, a 2xx answer), then the cursor moves past it. A sink that fails keeps
   its cursor and is tried again after a pause that doubles up to a minute; the others
   go on. Killed between the acknowledgement and the cursor's move, a shipper sends the
   batch again when restarted: duplicates, which share ``metadata.uid``.
3. **Delete** the rows every configured sink has.

Back-pressure: a shipper reads at most one batch ahead of each sink's acknowledgement;
what a slow or stopped sink has not taken stays in the outbox (the database), counted
by the ``gql_audit_outbox_backlog`` metric, and nothing is dropped.

One shipper works at a time: each takes a lease in the cursor table and renews it
every round; another waits until the lease is a minute old, or takes it at once when
its holder was a process of the same machine that has ended (killed).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connections, transaction
from django.db.models import Min
from django.utils import timezone

from gql_audit.conf import conf
from gql_audit.export import ocsf
from gql_audit.export.records import EVENT, load
from gql_audit.export.sinks import Message, Sink, SinkError, SinkSpec, open_sink, parse_spec
from gql_audit.models import OutboxCursor, OutboxEvent

logger = logging.getLogger("gql_audit.export")

#: The cursor rows that are not sinks.
SEQUENCE = "sequence"
LEASE = "lease"
LEASE_SECONDS = 60
#: A lease is renewed when older than this (well before another shipper may take it).
RENEW_SECONDS = 10
BATCH = 1000
#: Rows numbered in one statement at most.
NUMBER_AT_ONCE = 10_000
MAX_PAUSE = 60.0
#: Without ``--follow``, a sink failing this many times in a row is given up (the command says so).
GIVE_UP = 3


def export_settings() -> dict[str, Any]:
    export = conf.EXPORT
    return dict(export) if isinstance(export, dict) else {}


def configured_specs() -> list[SinkSpec]:
    """``EXPORT["sinks"]`` as specs (ValueError on a malformed one: system check ``gql_audit.E040``)."""
    return [parse_spec(entry) for entry in export_settings().get("sinks") or []]


def render(record: dict[str, Any], format: str) -> Message:
    """One record as the message a sink gets, in ``format`` (``"ocsf"`` or ``"json"``)."""
    body = ocsf.event(record) if format == "ocsf" else record
    severity = str(record.get("severity") or "info") if record["record"] == EVENT else "info"
    name = str(record.get("kind") or record.get("action") or record["record"])
    moment = datetime.fromisoformat(record["time"]) if record.get("time") else None
    return Message(body=body, time=moment, severity=severity, name=name)


@dataclass
class SinkState:
    spec: SinkSpec
    sink: Sink
    cursor: int = 0
    failures: int = 0
    paused_until: float = 0.0
    delivered: int = 0
    last_error: str = ""


@dataclass
class RoundResult:
    numbered: int = 0
    delivered: dict[str, int] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    deleted: int = 0

    @property
    def busy(self) -> bool:
        return bool(self.numbered or any(self.delivered.values()))


class Shipper:
    """Ships the outbox on ``alias`` to ``sinks`` (default: ``EXPORT``'s)."""

    def __init__(
        self,
        sinks: Iterable[SinkSpec | str] | None = None,
        *,
        alias: str | None = None,
        batch: int = BATCH,
        format: str | None = None,
    ) -> None:
        from gql_audit.store import audit_alias

        specs = [s if isinstance(s, SinkSpec) else parse_spec(s) for s in sinks] if sinks is not None else None
        self.specs = specs if specs is not None else configured_specs()
        self.alias = alias or audit_alias()
        self.batch = batch
        self.format = format or export_settings().get("format") or "ocsf"
        self.states = [SinkState(spec, open_sink(spec)) for spec in self.specs]
        self.token = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
        #: ``time.monotonic()`` until which the lease is ours without renewing it.
        self.lease_until = 0.0

    # -- the lease ----------------------------------------------------------------------------

    def take_lease(self) -> bool:
        """Take or renew this shipper's lease; False while another live shipper holds it. A lease is
        free when nobody holds it, when it is older than ``LEASE_SECONDS``, or when its holder was a
        process of this machine that is gone (killed: its successor need not wait). Renewed at most
        every ``RENEW_SECONDS``: a write less per round."""
        if time.monotonic() < self.lease_until:
            return True
        now = timezone.now()
        rows = OutboxCursor.objects.using(self.alias)
        with transaction.atomic(using=self.alias):
            lease, _ = rows.get_or_create(sink=LEASE, defaults={"url": "", "seq": 0, "updated_at": None})
            holder = lease.url
            fresh = lease.updated_at is not None and lease.updated_at > now - timedelta(seconds=LEASE_SECONDS)
            if holder and holder != self.token and fresh and not holder_gone(holder):
                return False
            taken = rows.filter(sink=LEASE, url=holder).update(url=self.token, updated_at=now)
        if taken:
            self.lease_until = time.monotonic() + RENEW_SECONDS
        return bool(taken)

    def release_lease(self) -> None:
        self.lease_until = 0.0
        OutboxCursor.objects.using(self.alias).filter(sink=LEASE, url=self.token).update(
            url="", updated_at=timezone.now() - timedelta(days=1)
        )

    # -- a round ------------------------------------------------------------------------------

    def number(self) -> int:
        """Give ``seq`` to the rows committed since, in the order of their time; how many."""
        connection = connections[self.alias]
        quote = connection.ops.quote_name
        table = quote(OutboxEvent._meta.db_table)
        numbered = 0
        with transaction.atomic(using=self.alias):
            cursors = OutboxCursor.objects.using(self.alias)
            cursors.get_or_create(sink=SEQUENCE, defaults={"url": "", "seq": 0})
            head = cursors.select_for_update().get(sink=SEQUENCE)
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {table} SET seq = %s + numbered.n FROM ("
                    f"SELECT id, ROW_NUMBER() OVER (ORDER BY at, id) AS n FROM {table} "
                    f"WHERE seq IS NULL ORDER BY at, id LIMIT %s) AS numbered "
                    f"WHERE {table}.id = numbered.id",
                    [head.seq, NUMBER_AT_ONCE],
                )
                numbered = max(int(cursor.rowcount), 0)
            if numbered:
                cursors.filter(sink=SEQUENCE).update(seq=head.seq + numbered, updated_at=timezone.now())
        return numbered

    def load_cursors(self) -> None:
        rows = OutboxCursor.objects.using(self.alias)
        for state in self.states:
            cursor, _ = rows.get_or_create(
                sink=state.spec.key, defaults={"url": state.spec.public_url, "seq": 0, "updated_at": timezone.now()}
            )
            state.cursor = cursor.seq

    def ship_round(self) -> RoundResult:
        """Number, send one batch to each sink ready for one, delete what every sink has."""
        result = RoundResult(numbered=self.number())
        self.load_cursors()
        rendered: dict[Any, Message | None] = {}
        now = time.monotonic()
        for state in self.states:
            key = state.spec.public_url
            if state.paused_until > now:
                continue
            rows = list(
                OutboxEvent.objects.using(self.alias)
                .filter(seq__gt=state.cursor)
                .order_by("seq")
                .values_list("id", "kind", "record_id", "seq")[: self.batch]
            )
            if not rows:
                continue
            missing = [(kind, record_id) for row_id, kind, record_id, _ in rows if row_id not in rendered]
            if missing:
                records = load(missing, self.alias)
                for row_id, kind, record_id, _ in rows:
                    if row_id in rendered:
                        continue
                    record = records.get((kind, record_id))
                    rendered[row_id] = render(record, self.format) if record is not None else None
                    if record is None:
                        logger.warning("exported record %s:%s no longer exists: skipped", kind, record_id)
            messages = [message for row in rows if (message := rendered[row[0]]) is not None]
            try:
                state.sink.send(messages)
            except SinkError as exc:
                state.failures += 1
                pause = min(MAX_PAUSE, 2.0 ** (state.failures - 1))
                state.paused_until = time.monotonic() + pause
                state.last_error = str(exc)
                state.sink.close()
                result.failed[key] = str(exc)
                logger.warning("export to %s failed (%s); trying again in %.0fs", key, exc, pause)
                continue
            state.failures = 0
            state.cursor = rows[-1][3] or state.cursor
            state.delivered += len(messages)
            result.delivered[key] = len(messages)
            # At once: a shipper killed while the next sink is sending resends this batch to that sink only.
            OutboxCursor.objects.using(self.alias).filter(sink=state.spec.key).update(
                seq=state.cursor, url=state.spec.public_url, updated_at=timezone.now()
            )
        result.deleted = self.delete_delivered()
        return result

    def delete_delivered(self) -> int:
        """Delete the rows every configured sink has."""
        if not self.states:
            return 0
        keys = [state.spec.key for state in self.states]
        low = OutboxCursor.objects.using(self.alias).filter(sink__in=keys).aggregate(low=Min("seq"))["low"]
        if low is None or low <= 0 or OutboxCursor.objects.using(self.alias).filter(sink__in=keys).count() < len(keys):
            return 0
        deleted, _ = OutboxEvent.objects.using(self.alias).filter(seq__isnull=False, seq__lte=low).delete()
        return deleted

    def run(self, *, follow: bool = False, interval: float = 1.0, stop: Any = None) -> int:
        """Ship until the outbox is empty (or, ``follow``, until ``stop()`` is true); the events delivered."""
        delivered = 0
        waiting_said = False
        try:
            while True:
                if stop is not None and stop():
                    break
                if not self.take_lease():
                    if not waiting_said:
                        logger.info("another gql_audit_ship holds the lease: waiting")
                        waiting_said = True
                    if not follow:
                        break
                    time.sleep(interval)
                    continue
                result = self.ship_round()
                delivered += sum(result.delivered.values())
                if result.busy:
                    continue
                retrying = [s for s in self.states if s.failures and s.failures < GIVE_UP]
                if not follow and not retrying:
                    break
                pauses = [s.paused_until - time.monotonic() for s in self.states if s.failures]
                time.sleep(max(0.05, min([interval, *[p for p in pauses if p > 0]])))
        finally:
            for state in self.states:
                state.sink.close()
            self.release_lease()
        return delivered


def holder_gone(holder: str) -> bool:
    """Whether the shipper named ``holder`` (``host:pid:random``) was a process of this machine that has ended."""
    host, _, rest = holder.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit() or int(pid_text) == os.getpid():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, another user's
        return False
    return False


def backlog(alias: str | None = None, cap: int = 1_000_000) -> int:
    """Outbox rows not yet delivered to every sink, counted up to ``cap`` (one bounded query)."""
    from gql_audit.store import audit_alias

    rows = OutboxEvent.objects.using(alias or audit_alias()).order_by().values("pk")[:cap]
    return int(rows.count())
