"""Read auditing against bare graphene-django and against the floor, every configuration in one run.

    python bench/access.py [--objects 1000] [--rounds 7] [--requests 10] [--runs 3]
    BENCH_DB=sqlite-wal python bench/access.py --objects 20 --requests 50
    BENCH_DB=postgres PGHOST=... python bench/access.py
    BENCH_DB=sqlite-wal python bench/access.py --objects 1000 --stored-reads 1000000

A list of ``--objects`` objects of an 8-field model, every field read, through full
Django WSGI stacks called in-process, the configurations taking turns request by
request (what a commit costs varies from one second to the next by more than what is
measured here):

- ``bare``: bare graphene-django, no auditing;
- ``capture``: gql_audit with its write skipped (what finding and recording the
  objects costs);
- ``floor``: bare graphene-django plus one durable row per request, the row
  gql_audit's own store writes for that request, written by the same statement, in a
  table with the same columns and indexes but no object index: the least a durable
  record of each request costs;
- ``default``: gql_audit as installed (``ACCESS_STORE = "gql_audit"``);
- ``sealed``: the default with ``TAMPER_EVIDENCE``;
- ``protections``: the default with ``QUERY_LIMITS``, ``PERSISTED_OPERATIONS`` and
  ``THROTTLE`` (a local-memory cache);
- ``auditlog store``: ``ACCESS_STORE = "auditlog"``, one ACCESS ``LogEntry`` per object;
- ``write after response``: the default with ``WRITE_AFTER_RESPONSE``, timed as the
  client sees it;
- with ``--with-signal``, auditlog alone: one ``accessed.send`` per object.

Each is printed as its ratio to bare and as its excess over the floor (its ratio minus
the floor's), the median of its rounds, with the lowest and highest round; with
``--runs`` above 1, the median and range of the runs' medians. A request is timed up to
its last byte; what its server does after that (``response.close()``: the write after
the response, the object index caught up in bulk on SQLite) is printed apart, per request.

``--stored-reads N`` fills the trail with N reads first (requests of ``--objects``
objects each, the objects the benchmark reads), so that every write goes into a store
and an object index of that size. Rows written by the benchmark are removed between
rounds (untimed), the ones filled in are kept.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import audited_handler, bare_handler, call, environ, measure_rounds, settings_db, with_settings  # noqa: I001

#: A key for the sealed configuration (any 32 characters or more).
SEAL_KEY = "benchmark sealing key, long enough for HMAC-SHA256"
LIMITS = {"max_depth": 10, "max_aliases": 30, "max_fields": 50000, "max_tokens": 5000, "mode": "enforce"}
THROTTLE = {"login": "5/300s", "auth_failures": "30/60s"}
BARE, CAPTURE, FLOOR, DEFAULT = "bare", "capture", "floor", "default"


def fill_records(objects: int) -> None:
    from bench.models import Record

    Record.objects.bulk_create(
        Record(
            name=f"name {i}",
            email=f"user{i}@example.org",
            phone=f"+1 555 {i:04}",
            city="Lisbon",
            country="PT",
            status="active",
            score=i,
        )
        for i in range(objects)
    )


def skip_write(app: Callable[..., Any]) -> Callable[..., Any]:
    """gql_audit with its write skipped: everything but the database."""
    from gql_audit import middleware

    def run(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        flush = middleware.flush
        middleware.flush = lambda ctx: True
        try:
            return app(env, start_response)
        finally:
            middleware.flush = flush

    return run


def floor_row() -> dict[str, Any]:
    """The values of the reads row the default configuration writes for the benchmark's request."""
    from gql_audit.models import RequestReads

    row = RequestReads.objects.order_by("-at").first()
    assert row is not None, "the default configuration wrote no reads row"
    names = [f.attname for f in RequestReads._meta.concrete_fields if f.attname not in ("id", "at")]
    return {name: getattr(row, name) for name in names}


def with_floor_row(app: Callable[..., Any], values: dict[str, Any]) -> Callable[..., Any]:
    """Bare graphene-django, then one durable row a request, written as gql_audit writes its own."""
    from django.db import connection

    from bench.floor import write_row

    def run(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        response = app(env, start_response)
        write_row(values, connection.alias)
        return response

    return run


def summary(values: list[float]) -> str:
    return f"{statistics.median(values):6.3f} ({min(values):.3f}-{max(values):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--stored-reads", type=int, default=0)
    parser.add_argument("--only", default="", help="comma-separated configurations besides bare, capture and floor")
    parser.add_argument("--with-signal", action="store_true", help="add auditlog alone, accessed.send per object")
    args = parser.parse_args()

    from auditlog.models import LogEntry
    from django.db import connection

    from bench.models import FloorReads
    from bench.schema import RECORD_FIELDS
    from gql_audit.evidence import sealing
    from gql_audit.models import ReadIndexQueue, ReadObject, RequestReads, Seal, SealChain
    from gql_audit.protect.document import document_hash

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    fill_records(args.objects)
    LogEntry.objects.all().delete()
    if args.stored_reads:
        from reads_of import fill

        from gql_audit.store import index

        fill(args.stored_reads, "pages", args.objects, index.CATCH_UP_KEYS // args.objects)
    filled_until = RequestReads.objects.order_by("-at").values_list("at", flat=True).first()

    query = "{ records { %s } }" % RECORD_FIELDS
    manifest = Path(tempfile.mkdtemp()) / "manifest.json"
    manifest.write_text(json.dumps({document_hash(query): query}))
    protections = {
        "QUERY_LIMITS": LIMITS,
        "PERSISTED_OPERATIONS": {"manifest": str(manifest), "mode": "enforce"},
        "THROTTLE": THROTTLE,
    }
    bare, audited = bare_handler(), audited_handler()
    audit_env, bare_env = environ("/records/audit/", query), environ("/records/bare/", query)
    default = with_settings(audited, {"ACCESS_STORE": "gql_audit"})
    call(default, audit_env)  # the row the floor writes
    configs: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
        BARE: (bare, bare_env),
        CAPTURE: (skip_write(with_settings(audited, {})), audit_env),
        FLOOR: (with_floor_row(bare, floor_row()), bare_env),
        DEFAULT: (default, audit_env),
        "sealed": (with_settings(audited, {"TAMPER_EVIDENCE": {"key": SEAL_KEY}}), audit_env),
        "protections": (with_settings(audited, protections), audit_env),
        "auditlog store": (with_settings(audited, {"ACCESS_STORE": "auditlog"}), audit_env),
        "write after response": (with_settings(audited, {"WRITE_AFTER_RESPONSE": True}), audit_env),
    }
    if args.only:
        wanted = {BARE, CAPTURE, FLOOR, *args.only.split(",")}
        configs = {name: config for name, config in configs.items() if name in wanted}
    if args.with_signal:
        signal_query = "{ recordsWithAccessedSignal { %s } }" % RECORD_FIELDS
        configs["auditlog alone, accessed.send"] = (bare, environ("/records/bare/", signal_query))

    def clear() -> None:
        sealing.forget()  # the chain rows go with the tables below
        with connection.cursor() as cursor:
            for model in (LogEntry, FloorReads, Seal, SealChain, ReadIndexQueue):
                table = connection.ops.quote_name(model._meta.db_table)
                # TRUNCATE, not DELETE, on PostgreSQL: it would keep the dead rows and
                # their index entries, and every later round would write into a bigger table.
                cursor.execute(f"DELETE FROM {table}" if connection.vendor == "sqlite" else f"TRUNCATE {table}")
            for model in (RequestReads, ReadObject):
                table = connection.ops.quote_name(model._meta.db_table)
                if filled_until is None:
                    cursor.execute(f"DELETE FROM {table}" if connection.vendor == "sqlite" else f"TRUNCATE {table}")
                else:
                    cursor.execute(f"DELETE FROM {table} WHERE at > %s", [filled_until])

    names = list(configs)
    ratios: dict[str, list[float]] = {name: [] for name in names}
    excess: dict[str, list[float]] = {name: [] for name in names}
    print(
        f"gql_audit read auditing ({connection.vendor}, {settings_db()}): {args.objects} objects x 8 fields, "
        f"{args.runs} run(s) of {args.rounds} rounds x {args.requests} requests"
        + (f", {args.stored_reads:,} reads stored before" if args.stored_reads else "")
    )
    for run in range(args.runs):
        closes: dict[str, list[float]] = {}
        samples = measure_rounds(
            configs, args.rounds, args.requests, warmup=3, between=clear, interleave=True, closes=closes
        )
        per_round = {name: [s / b for s, b in zip(samples[name], samples[BARE], strict=True)] for name in names}
        over = {name: [r - f for r, f in zip(per_round[name], per_round[FLOOR], strict=True)] for name in names}
        print(f"\nrun {run + 1}: {'':31} ms/request  ratio to bare (rounds)  over the floor     after the response")
        for name in names:
            ratios[name].append(statistics.median(per_round[name]))
            excess[name].append(statistics.median(over[name]))
            print(
                f"  {name:<34} {statistics.median(samples[name]) * 1e3:9.3f}   {summary(per_round[name])}"
                f"   {summary(over[name])}   {statistics.median(closes[name]) * 1e3:7.3f} ms"
            )
        goal = ratios[CAPTURE][-1] + ratios[FLOOR][-1] - 1 + 0.05
        if DEFAULT in ratios:
            print(f"  default's goal, capture + floor + 0.05: {goal:.3f} (measured {ratios[DEFAULT][-1]:.3f})")
    if args.runs > 1:
        print(f"\n{args.runs} runs: median of the runs' medians (lowest-highest)")
        print(f"  {'':34} ratio to bare            over the floor")
        for name in names:
            print(f"  {name:<34} {summary(ratios[name])}   {summary(excess[name])}")
    clear()
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
