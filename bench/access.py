"""Full read auditing against bare graphene-django: a list of objects x 8 fields.

    python bench/access.py [--rounds 7] [--requests 10] [--objects 1000]
    BENCH_DB=sqlite-wal python bench/access.py --objects 20
    BENCH_DB=postgres PGHOST=... python bench/access.py

Seven configurations, one process, one run, full Django WSGI stacks called
in-process, taking turns request by request (a commit's flush varies in cost
from one second to the next by more than what is measured), median round
reported:

- bare graphene-django, no access logging;
- gql_audit, ``ACCESS_STORE = "gql_audit"`` (the default: one row per request);
- gql_audit, ``ACCESS_STORE = "auditlog"`` (one ACCESS LogEntry per object);
- the default store with ``WRITE_AFTER_RESPONSE`` (timed as the client sees it);
- the default store with ``TAMPER_EVIDENCE`` (every request's records sealed),
  and with ``WRITE_AFTER_RESPONSE`` too;
- auditlog alone, one ``accessed.send`` per object (one INSERT each).

The tables written are emptied between rounds (untimed) so every round writes
into tables of the same size.
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable
from typing import Any

from harness import audited_handler, bare_handler, call, environ, measure_rounds, report, settings_db  # noqa: I001

#: A key for the sealed configuration (any 32 characters or more).
SEAL_KEY = "benchmark sealing key, long enough for HMAC-SHA256"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=10)
    parser.add_argument("--objects", type=int, default=1000)
    parser.add_argument(
        "--without-signal",
        action="store_true",
        help="leave out auditlog's accessed.send per object (a commit per object: by far the slowest)",
    )
    args = parser.parse_args()

    from auditlog.models import LogEntry
    from django.db import connection

    from bench.models import Record
    from bench.schema import RECORD_FIELDS
    from gql_audit.conf import conf
    from gql_audit.evidence import sealing
    from gql_audit.models import ReadObject, RequestReads, Seal, SealChain

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
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
        for i in range(args.objects)
    )
    LogEntry.objects.all().delete()
    bare, audited = bare_handler(), audited_handler()

    def with_store(store: str, after_response: bool = False, sealed: bool = False) -> Callable[..., Any]:
        """The audited stack with ``ACCESS_STORE`` (and ``WRITE_AFTER_RESPONSE``,
        ``TAMPER_EVIDENCE``) set for its requests (the settings are process-wide)."""

        def app(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
            conf._cache["ACCESS_STORE"] = store
            conf._cache["WRITE_AFTER_RESPONSE"] = after_response
            conf._cache["TAMPER_EVIDENCE"] = {"key": SEAL_KEY} if sealed else None
            return audited(env, start_response)

        return app

    def clear() -> None:
        sealing.forget()  # the chain rows go with the tables below
        # TRUNCATE, not DELETE: PostgreSQL would keep the dead rows and their
        # index entries, and every later round would insert into a bigger table.
        with connection.cursor() as cursor:
            for model in (LogEntry, RequestReads, ReadObject, Seal, SealChain):
                table = connection.ops.quote_name(model._meta.db_table)
                cursor.execute(f"DELETE FROM {table}" if connection.vendor == "sqlite" else f"TRUNCATE {table}")

    query = "{ records { %s } }" % RECORD_FIELDS
    signal_query = "{ recordsWithAccessedSignal { %s } }" % RECORD_FIELDS
    samples = measure_rounds(
        {
            "bare graphene-django": (bare, environ("/records/bare/", query)),
            "gql_audit, ACCESS_STORE gql_audit": (with_store("gql_audit"), environ("/records/audit/", query)),
            "gql_audit, ACCESS_STORE auditlog": (with_store("auditlog"), environ("/records/audit/", query)),
            "gql_audit store, WRITE_AFTER_RESPONSE": (with_store("gql_audit", True), environ("/records/audit/", query)),
            "gql_audit store, TAMPER_EVIDENCE": (
                with_store("gql_audit", sealed=True),
                environ("/records/audit/", query),
            ),
            "gql_audit store, TAMPER_EVIDENCE, WRITE_AFTER_RESPONSE": (
                with_store("gql_audit", True, sealed=True),
                environ("/records/audit/", query),
            ),
            **(
                {}
                if args.without_signal
                else {"auditlog accessed.send per object": (bare, environ("/records/bare/", signal_query))}
            ),
        },
        args.rounds,
        args.requests,
        warmup=3,
        between=clear,
        interleave=True,
    )
    results = {name: statistics.median(values) for name, values in samples.items()}
    clear()
    call(with_store("gql_audit"), environ("/records/audit/", query))
    call(with_store("auditlog"), environ("/records/audit/", query))
    rows = RequestReads.objects.all()
    print(
        f"gql_audit access benchmark ({connection.vendor}, {settings_db()}): {args.objects} objects x 8 fields, "
        f"{args.rounds} rounds x {args.requests} requests; one audited request wrote "
        f"{rows.count()} row of {sum(len(r.keys) for r in rows)} reads (gql_audit store), "
        f"{LogEntry.objects.filter(action=LogEntry.Action.ACCESS).count()} entries (auditlog store)"
    )
    report(f"List of {args.objects} objects", results, "bare graphene-django")
    # Sealing against the same store unsealed, round by round.
    paired = [
        sealed / plain
        for sealed, plain in zip(
            samples["gql_audit store, TAMPER_EVIDENCE"], samples["gql_audit, ACCESS_STORE gql_audit"], strict=True
        )
    ]
    print(f"  TAMPER_EVIDENCE over the same store unsealed: {statistics.median(paired):5.3f} (median of rounds)")
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
