"""The purge, the subject report and ``reads_of`` on 10 million reads, on PostgreSQL.

    DATABASE_URL=postgres://user:password@host:5432/scratch_db \\
        PYTHONPATH=.:example_service python -m bench.trail_scale [--reads 10000000] [--runs 5] [--no-fill]

Fills a scratch database (migrated here; its audit tables are emptied first) with
``--reads`` rows of reads (one a request, three objects each, over 90 days) and a
tenth as many change entries and security events (``bench.admin_million.fill``),
then, ``--runs`` times:

- ``reads_of`` of 20 objects (each read about 1,000 times);
- the subject report of one user (their user row, profile and documents: about
  10,000 reads), over the whole trail and over the last 30 days;
- ``gql_audit_purge --kind access`` of the oldest remaining day of reads, run by
  the command itself (about ``reads / 90`` rows, in batches of 1,000).

For each it prints the median and the spread over the runs, and whether the plan of
each statement it sent reads a table whole (``Seq Scan``) rather than through an
index. The purge's batch query is also timed (warm) in the shape it had before it
took batches oldest first (``... WHERE at < cut-off LIMIT 1000``, no order), beside
the shape it has now.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time

#: Tables whose whole read is what the indexes are there to avoid.
BIG_TABLES = ("gql_audit_requestreads", "auditlog_logentry", "gql_audit_securityevent")


def spread(values: list[float]) -> str:
    return f"median {statistics.median(values):9.1f} ms  (min {min(values):.1f}, max {max(values):.1f})"


def whole_table_reads(statements: list[str]) -> list[str]:
    """The big tables some statement's plan reads whole (EXPLAIN of each SELECT sent)."""
    from django.db import connection

    found = []
    with connection.cursor() as cursor:
        for sql in statements:
            if not sql.lstrip().upper().startswith("SELECT"):
                continue
            cursor.execute("EXPLAIN " + sql)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            found.extend(table for table in BIG_TABLES if f"Seq Scan on {table}" in plan)
    return sorted(set(found))


def timed(work, *args, **kwargs) -> tuple[float, list[str], object]:
    """Milliseconds ``work(*args, **kwargs)`` took, the statements it sent, and what it returned."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as queries:
        started = time.perf_counter()
        result = work(*args, **kwargs)
        elapsed = (time.perf_counter() - started) * 1000
    return elapsed, [q["sql"] for q in queries.captured_queries], result


def prepare_subject() -> tuple[object, list[int]]:
    """bench-42 with a profile and three documents (objects the fill's reads name); 20 objects to look up."""
    from django.contrib.auth import get_user_model

    from example_service.models import Document, Profile

    user = get_user_model().objects.get(username="bench-42")
    Profile.objects.get_or_create(pk=4242, defaults={"user": user, "full_name": "Bench Profile"})
    while Document.objects.filter(owner=user).count() < 3:
        Document.objects.create(owner=user, title="bench document")
    return user, [100 + 397 * n for n in range(20)]


def measure(runs: int) -> None:
    import datetime

    from django.core.management import call_command
    from django.db import connection
    from django.utils import timezone

    from example_service.models import Profile
    from gql_audit.history import reads_of
    from gql_audit.report import subject_report

    user, profiles = prepare_subject()
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM gql_audit_requestreads")
        (rows,) = cursor.fetchone()
    results: dict[str, list[float]] = {}
    scans: dict[str, set[str]] = {}

    def note(name: str, elapsed: float, statements: list[str]) -> None:
        results.setdefault(name, []).append(elapsed)
        scans.setdefault(name, set()).update(whole_table_reads(statements))

    month = datetime.timedelta(days=30)
    for run in range(runs):
        for pk in profiles:
            elapsed, statements, reads = timed(reads_of, Profile, pk)
            note("reads_of one object (20 objects)", elapsed, statements)
        elapsed, statements, report = timed(subject_report, user)
        note("subject report, whole trail", elapsed, statements)
        elapsed, statements, recent = timed(subject_report, user, since=month)
        note("subject report, last 30 days", elapsed, statements)

        with connection.cursor() as cursor:
            cursor.execute("SELECT min(at) FROM gql_audit_requestreads")
            (oldest,) = cursor.fetchone()
        age = timezone.now() - (oldest + datetime.timedelta(days=1))
        cutoff = timezone.now() - datetime.timedelta(hours=int(age.total_seconds() // 3600))
        shapes = [("before: no order", ""), ("now: oldest first", " ORDER BY at")]
        for shape, order in shapes if run % 2 == 0 else shapes[::-1]:  # neither always warms the other's pages
            sql = f"SELECT id FROM gql_audit_requestreads WHERE at < %s{order} LIMIT 1000"
            with connection.cursor() as cursor:
                for _ in range(2):  # the second, warm
                    started = time.perf_counter()
                    cursor.execute(sql, [cutoff])
                    cursor.fetchall()
                    elapsed = (time.perf_counter() - started) * 1000
            note(f"purge batch query, {shape}", elapsed, [connection.ops.compose_sql(sql, [cutoff])])
        out = io.StringIO()
        hours = f"{int(age.total_seconds() // 3600)}h"
        elapsed, statements, _ = timed(
            call_command, "gql_audit_purge", "--older-than", hours, "--kind", "access", stdout=out
        )
        deleted = sum(int(line.rsplit(" ", 1)[1]) for line in out.getvalue().splitlines() if "deleted" in line)
        note("purge of one day of reads", elapsed, statements)
        results.setdefault("rows purged", []).append(deleted)
        print(f"  run {run + 1}: purged {deleted:,} rows in {elapsed / 1000:.1f} s")
    print(
        f"\n{rows:,} rows of reads at the start; subject report: {len(report.entries):,} entries "
        f"(last 30 days: {len(recent.entries):,}); reads_of: {len(reads):,} reads of an object"
    )
    for name, values in results.items():
        if name == "rows purged":
            continue
        whole = ", ".join(sorted(scans[name])) or "none"
        print(f"{name:42} {spread(values)}   tables read whole: {whole}")


def main() -> None:
    from bench.admin_million import fill, on_scratch_database

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reads", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-fill", action="store_true", help="measure the rows already there")
    args = on_scratch_database(parser)
    if not args.no_fill:
        print(f"Filling {args.reads:,} rows of reads, {args.reads // 10:,} change entries and security events")
        fill(args.reads, entries=args.reads // 10, events=args.reads // 10)
    measure(args.runs)


if __name__ == "__main__":
    main()
