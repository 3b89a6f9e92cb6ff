"""Who read this object, on a trail of a million reads: ``reads_of`` and its kin, timed.

    BENCH_DB=sqlite-wal python bench/reads_of.py [--reads 1000000] [--layout pages|mixed]
    BENCH_DB=postgres PGHOST=... python bench/reads_of.py --layout mixed

Fills a throwaway database with ``--reads`` reads in one of two layouts, then times each
question (median of ``--repeat`` calls after one warm-up):

- ``pages``: requests of ``--per-request`` objects each (1,000 by default), every
  request reading the same objects: each object is read in every request;
- ``mixed``: requests of 20 objects each, drawn from 100,000 objects, one object in
  every fifth request (the hot one), the rest spread evenly.

On SQLite the object index is built as the store builds it (``gql_audit.store.index``),
with the last requests left in its queue, as many as a process leaves there at most
(``--queued`` to choose).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import harness  # noqa: F401 - configures Django

POOL = 100_000
HOT = 7


def fill(reads: int, layout: str, per_request: int, queued: int) -> int:
    """Fill the store with ``reads`` reads (``pages``: of the objects 1 to ``per_request``);
    the number of requests."""
    from django.db import connection
    from django.utils import timezone

    from gql_audit.models import RequestReads
    from gql_audit.store import index

    shapes = [{"fields": ["email", "name", "phone"], "paths": ["records"]}]
    per_request = per_request if layout == "pages" else 20
    requests = reads // per_request
    rng = random.Random(7)

    def keys_of(n: int) -> list[str]:
        if layout == "pages":
            return [f"bench.record:{k}" for k in range(1, per_request + 1)]
        picked = {rng.randrange(POOL) for _ in range(per_request)}
        picked.discard(HOT)
        picked = set(list(picked)[: per_request - 1]) if n % 5 == 0 else picked
        if n % 5 == 0:
            picked.add(HOT)
        while len(picked) < per_request:
            candidate = rng.randrange(POOL)
            if candidate != HOT:
                picked.add(candidate)
        return [f"bench.record:{k}" for k in sorted(picked)]

    start = timezone.now() - timezone.timedelta(days=90)
    step = timezone.timedelta(days=90) / requests
    started = time.perf_counter()
    batch: list[RequestReads] = []
    for n in range(requests):
        keys = keys_of(n)
        batch.append(
            RequestReads(
                at=start + n * step,
                request_id=f"req-{n}",
                actor_id=str(n % 1000),
                actor={"id": n % 1000, "username": f"user-{n % 1000}"},
                remote_addr="10.0.0.1",
                operation={"type": "query", "name": f"Op{n % 50}", "hash": "0" * 64},
                context={"db": {"vendor": connection.vendor, "alias": "default"}},
                keys=keys,
                shape_of=[0] * len(keys),
                shapes=shapes,
            )
        )
        if len(batch) * per_request >= 50_000 or n in (requests - queued - 1, requests - 1):
            RequestReads.objects.bulk_create(batch)
            batch = []
            if n < requests - queued:
                index.catch_up(connection.alias)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    took = time.perf_counter() - started
    print(f"filled {requests * per_request:,} reads ({requests:,} requests, {layout}) in {took:.0f} s")
    return requests


def timed(call: Callable[[], Any], repeat: int) -> tuple[float, int]:
    result = call()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e3, len(result)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reads", type=int, default=1_000_000)
    parser.add_argument("--layout", choices=["pages", "mixed"], default="pages")
    parser.add_argument("--per-request", type=int, default=1000)
    parser.add_argument(
        "--queued", type=int, help="requests left to index (SQLite): by default, as many as a process leaves"
    )
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from django.db import connection
    from django.test import Client

    from bench.models import Record
    from gql_audit.history import reads_of, reads_of_objects
    from gql_audit.store import index

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    per_request = args.per_request if args.layout == "pages" else 20
    queued = args.queued if args.queued is not None else index.CATCH_UP_KEYS // per_request
    fill(args.reads, args.layout, args.per_request, queued)
    hot = HOT if args.layout == "mixed" else 3
    cold = 4242
    from django.contrib.auth import get_user_model

    staff = get_user_model().objects.create_superuser("bench-staff", "s@example.org", "pw")
    client = Client()
    client.force_login(staff)
    for pk in {hot, cold}:
        Record.objects.create(
            pk=pk, name=f"record {pk}", email="e", phone="p", city="c", country="c", status="s", score=0
        )
    questions: dict[str, Callable[[], Any]] = {
        "reads_of(hot object, limit=200)": lambda: reads_of(Record, hot, limit=200),
        "reads_of(hot object, limit=20)": lambda: reads_of(Record, hot, limit=20),
        "reads_of(a rarely read object)": lambda: reads_of(Record, cold),
        "reads_of_objects(50 objects, limit=200)": lambda: reads_of_objects(
            [(Record, pk) for pk in range(hot, hot + 50)], limit=200
        ),
        "admin: reads filtered by the hot object": lambda: [
            client.get(f"/admin/gql_audit/requestreads/?object=bench.Record:{hot}").status_code
        ],
    }
    print(f"{connection.vendor}: median of {args.repeat} calls")
    for name, call in questions.items():
        ms, count = timed(call, args.repeat)
        print(f"  {name:<44} {ms:8.1f} ms  ({count} results)")
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
