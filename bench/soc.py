"""What export and metrics cost: EXPORT on against off, METRICS on against off, and how fast
gql_audit_ship empties an outbox into a file.

    BENCH_DB=postgres PGHOST=... python bench/soc.py [--rounds 9] [--requests 20] [--objects 20] [--events 20000]

One process, one run, full Django WSGI stacks called in-process, configurations
taking turns request by request (see ``harness.measure_rounds``); ratios are the
median of the rounds' ratios, with their spread (lowest and highest round):

- **EXPORT**: a list of ``--objects`` records x 8 fields read through gql_audit's
  default store, with ``EXPORT`` on (its outbox row written with the reads) against off.
- **METRICS**: the one-field public query ``{ serviceStatus { ok } }``, with
  ``METRICS`` on against off.
- **gql_audit_ship**: ``--events`` security events in the outbox shipped as OCSF to a
  file sink (each batch of 1,000 synced to disk), events a second; three runs.

The tables written are emptied between rounds (untimed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from harness import audited_handler, call, environ, measure_rounds, settings_db  # noqa: I001


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):5.3f} (rounds {min(values):5.3f} to {max(values):5.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--events", type=int, default=20000)
    args = parser.parse_args()

    from django.db import connection
    from django.utils import timezone

    from bench.models import Record
    from bench.schema import RECORD_FIELDS
    from gql_audit.conf import conf
    from gql_audit.export.ship import Shipper
    from gql_audit.models import OutboxCursor, OutboxEvent, ReadObject, RequestReads, SecurityEvent

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    Record.objects.bulk_create(
        Record(name=f"name {i}", email=f"u{i}@example.org", phone=f"+1 555 {i:04}", city="Lisbon", score=i)
        for i in range(args.objects)
    )
    audited = audited_handler()
    sink = os.path.join(tempfile.gettempdir(), f"gql_audit_bench_{os.getpid()}.jsonl")
    export = {"format": "ocsf", "sinks": [f"file://{sink}"]}

    def configured(**values: Any) -> Callable[..., Any]:
        """The audited stack with these settings for its requests (the settings are process-wide)."""

        def app(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            conf._cache.update(values)
            conf._cache.pop("derived:access_store", None)
            return audited(env, start_response)

        return app

    def clear() -> None:
        with connection.cursor() as cursor:
            for model in (RequestReads, ReadObject, OutboxEvent, SecurityEvent, OutboxCursor):
                table = connection.ops.quote_name(model._meta.db_table)
                cursor.execute(f"DELETE FROM {table}" if connection.vendor == "sqlite" else f"TRUNCATE {table}")

    print(
        f"gql_audit export and metrics benchmark ({connection.vendor}, {settings_db()}): "
        f"{args.rounds} rounds x {args.requests} requests"
    )
    records = "{ records { %s } }" % RECORD_FIELDS
    samples = measure_rounds(
        {
            "EXPORT off": (configured(EXPORT=None, METRICS=False), environ("/records/audit/", records)),
            "EXPORT on": (configured(EXPORT=export, METRICS=False), environ("/records/audit/", records)),
        },
        args.rounds,
        args.requests,
        warmup=5,
        between=clear,
        interleave=True,
    )
    ratios = [on / off for on, off in zip(samples["EXPORT on"], samples["EXPORT off"], strict=True)]
    print(
        f"\nList of {args.objects} objects x 8 fields, read through the default store (goal: ratio <= 1.05)\n"
        f"  EXPORT off {statistics.median(samples['EXPORT off']) * 1e3:8.3f} ms/request, "
        f"on {statistics.median(samples['EXPORT on']) * 1e3:8.3f} ms/request; on/off {spread(ratios)}"
    )
    staged = OutboxEvent.objects.count()
    print(f"  (an EXPORT request staged {staged / max(1, args.requests):.1f} outbox rows: one a request's reads)")

    one_field = "{ serviceStatus { ok } }"
    samples = measure_rounds(
        {
            "METRICS off": (configured(EXPORT=None, METRICS=False), environ("/audit/", one_field)),
            "METRICS on": (configured(EXPORT=None, METRICS=True), environ("/audit/", one_field)),
        },
        args.rounds,
        args.requests * 10,
        warmup=50,
        interleave=True,
    )
    ratios = [on / off for on, off in zip(samples["METRICS on"], samples["METRICS off"], strict=True)]
    print(
        "\nOne-field public query (goal: ratio <= 1.02)\n"
        f"  METRICS off {statistics.median(samples['METRICS off']) * 1e3:8.3f} ms/request, "
        f"on {statistics.median(samples['METRICS on']) * 1e3:8.3f} ms/request; on/off {spread(ratios)}"
    )

    conf._cache.update(EXPORT=export, METRICS=False)
    rates = []
    for _ in range(3):
        clear()
        now = timezone.now()
        events = SecurityEvent.objects.bulk_create(
            SecurityEvent(
                created_at=now,
                kind="login_failed",
                severity="warning",
                request_id=f"bench-{i}",
                remote_addr="198.51.100.7",
                operation={"type": "mutation", "name": "Login", "hash": "0" * 64},
                path="tokenAuth",
                message="Please enter valid credentials",
                details={"username": f"user{i}", "count": 1, "actor": None},
            )
            for i in range(args.events)
        )
        OutboxEvent.objects.bulk_create(OutboxEvent(at=now, kind="event", record_id=str(event.pk)) for event in events)
        if os.path.exists(sink):
            os.unlink(sink)
        shipper = Shipper(alias=connection.alias)
        start = time.perf_counter()
        delivered = shipper.run()
        elapsed = time.perf_counter() - start
        assert delivered == args.events and not OutboxEvent.objects.exists(), delivered
        rates.append(delivered / elapsed)
    with open(sink, "rb") as file:
        size = sum(len(line) for line in file) / args.events
    os.unlink(sink)
    print(
        f"\ngql_audit_ship, {args.events} security events as OCSF to a file sink (goal: >= 10,000 events/s)\n"
        f"  {statistics.median(rates):,.0f} events/s (runs {min(rates):,.0f} to {max(rates):,.0f}), "
        f"{size:.0f} bytes an event"
    )
    call(configured(EXPORT=None, METRICS=False), environ("/audit/", one_field))
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
