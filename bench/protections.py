"""What the protections cost, against the same requests with none, in the same run.

    python bench/protections.py [--rounds 15] [--requests 200] [--objects 20]

Full Django WSGI stacks called in-process (no network), the same middleware,
schema and query in each configuration; only ``QUERY_LIMITS``,
``PERSISTED_OPERATIONS`` and ``THROTTLE`` differ. Rounds alternate between
configurations request by request; each configuration's ratio is the median of
the rounds' own ratios, with the lowest and highest round's. Goals (docs/performance.md):

- every protection on, in enforce mode, a page of 20 objects: at most 1.03 times
  the same request with none;
- a hostile document under every limit (as many operations as the limits admit,
  deep fragments, duplicated fields that validation compares pairwise): refused or
  answered in at most 50 ms; and one far over them (200 operations), new to the
  process each time: refused in at most 50 ms;
- a 1 MB body over ``max_request_bytes``: refused without being parsed, in at
  most 2 ms.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import audited_handler, environ, measure_rounds, with_settings  # noqa: I001

#: The limits of the example service, every one of them on.
LIMITS = {
    "max_depth": 15,
    "max_aliases": 20,
    "max_fields": 300,
    "max_directives": 20,
    "max_tokens": 3000,
    "max_cost": 5000,
    "max_request_bytes": 200_000,
    "max_batch": 10,
    "mode": "enforce",
}
THROTTLE = {"login": "5/300s", "login_username": "30/3600s", "auth_failures": "30/60s", "operations": "100000/60s"}


def show(title: str, samples: dict[str, list[float]], unit: str = "request") -> None:
    """Each configuration's median round, and its ratio to the first's: the median of the
    rounds' own ratios (the configurations take turns request by request within a round,
    so a round's ratio compares requests that met the same machine; rounds themselves
    differ by far more than what is measured), with the lowest and highest round's."""
    print(f"\n{title}")
    base = next(iter(samples.values()))
    for name, values in samples.items():
        ratios = [value / first for value, first in zip(values, base, strict=True)]
        print(
            f"  {name:<44} {statistics.median(values) * 1e3:8.3f} ms/{unit}  ratio {statistics.median(ratios):5.3f}"
            f"  rounds {min(ratios):.3f}-{max(ratios):.3f} ({min(values) * 1e3:.3f}-{max(values) * 1e3:.3f} ms)"
        )


def timed_any(app: Callable[..., Any], env: dict[str, Any]) -> tuple[float, str]:
    """Seconds of one request whatever its answer, and its status line."""
    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["_body"])
    status: list[str] = []
    start = time.perf_counter()
    response = app(env, lambda s, h, *a: status.append(s))
    b"".join(response)
    elapsed = time.perf_counter() - start
    response.close()
    return elapsed, status[0]


def hostile_document(operations: int | None = None) -> str:
    """As much as fits under every limit above: operations spreading a chain of fragments,
    each fragment a list with every scalar of a document, ``@include`` on every spread;
    grown until one more operation would go over a limit (or, given ``operations``, that
    many, whatever the limits say)."""
    from gql_audit.protect.document import analyse

    scalars = "id title body classification createdAt updatedAt"
    chain = "\n".join(
        f"fragment F{i} on DocumentNode {{ {scalars} owner {{ ...U }} ...F{i + 1} @include(if: true) }}"
        for i in range(5)
    )
    chain += f"\nfragment F5 on DocumentNode {{ {scalars} }}\nfragment U on UserType {{ id username email }}"

    def document_of(count: int) -> str:
        return "\n".join(f"query Q{i} {{ p{i}: publicDocuments {{ ...F0 }} }}" for i in range(count)) + "\n" + chain

    if operations is not None:
        return document_of(operations)
    best = ""
    for count in range(1, 200):
        document = document_of(count)
        analysed = analyse(document, LIMITS["max_tokens"])
        worst = analysed.worst().as_dict()
        if analysed.over_tokens or any(worst[name] > LIMITS[name] for name in worst if name in LIMITS):
            break
        best = document
    return best


def worst_case(title: str, app: Callable[..., Any], env: dict[str, Any], goal_ms: float, runs: int = 30) -> None:
    samples = []
    statuses = set()
    for _ in range(runs):
        seconds, status = timed_any(app, env)
        samples.append(seconds)
        statuses.add(status)
    print(
        f"\n{title}\n  {statistics.median(samples) * 1e3:8.3f} ms median, {max(samples) * 1e3:.3f} ms worst of {runs}"
        f"  (goal <= {goal_ms:g} ms)  answers: {', '.join(sorted(statuses))}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    for option, default in (("--rounds", 15), ("--requests", 200), ("--objects", 20)):
        parser.add_argument(option, type=int, default=default)
    args = parser.parse_args()

    from django.db import connection

    from bench.models import Record
    from bench.schema import RECORD_FIELDS
    from gql_audit.models import ReadObject, RequestReads
    from gql_audit.protect.document import analyse, document_hash

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    Record.objects.bulk_create(
        Record(name=f"name {i}", email=f"u{i}@example.org", score=i) for i in range(args.objects)
    )
    page = "query Page { records { %s } }" % RECORD_FIELDS
    hostile = hostile_document()
    manifest = Path(tempfile.mkdtemp()) / "manifest.json"
    manifest.write_text(json.dumps({document_hash(page): page, document_hash(hostile): hostile}))
    all_on = {
        "QUERY_LIMITS": LIMITS,
        "PERSISTED_OPERATIONS": {"manifest": str(manifest), "mode": "enforce"},
        "THROTTLE": THROTTLE,
    }
    audited = audited_handler()
    configurations = {"protections off": {}, "all on, enforce (local-memory throttle)": all_on}
    redis_url = os.environ.get("BENCH_REDIS")
    if redis_url:
        from django.conf import settings
        from django.test import override_settings

        # As a service configures it: Django's cache handler reads CACHES again.
        override_settings(
            CACHES={
                **settings.CACHES,
                "throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": redis_url},
            }
        ).enable()
        configurations["all on, enforce (Redis throttle)"] = {**all_on, "THROTTLE_CACHE": "throttle"}
    # Each configuration with a settings cache of its own: what the protections work out
    # from their settings is worked out once, as in a service.
    apps = {name: with_settings(audited, values) for name, values in configurations.items()}

    def clear() -> None:
        RequestReads.objects.all().delete()
        ReadObject.objects.all().delete()

    print(f"gql_audit protections benchmark ({connection.vendor}): {args.rounds} rounds of {args.requests} requests")
    show(
        f"A page of {args.objects} objects x 8 fields (reads recorded)",
        measure_rounds(
            {name: (app, environ("/records/audit/", page)) for name, app in apps.items()},
            args.rounds,
            args.requests,
            warmup=20,
            between=clear,
            interleave=True,
        ),
    )
    measured = analyse(hostile, LIMITS["max_tokens"])
    worst = measured.worst()
    print(
        f"\nThe hostile document: {len(measured.operations)} operations, {len(hostile)} characters,"
        f" depth {worst.depth}, fields {worst.fields} (each under the limits)"
    )
    hostile_env = {
        **environ("/audit/", hostile),
        "_body": json.dumps({"query": hostile, "operationName": "Q0"}).encode(),
    }
    hostile_env["CONTENT_LENGTH"] = str(len(hostile_env["_body"]))
    worst_case(
        "A hostile document under every limit, all protections on",
        apps["all on, enforce (local-memory throttle)"],
        hostile_env,
        50,
    )
    worst_case("The same document, protections off (for comparison)", apps["protections off"], hostile_env, 50, runs=5)
    # Over the limits: 200 operations (only the first one named to run), each new to the
    # process, as a client varying its document to dodge the analysis cache sends them.
    over_samples, over_statuses = [], set()
    over = hostile_document(200)
    for n in range(30):
        document = over.replace("query Q0 ", f"query Q0_{n} ", 1)
        body = json.dumps({"query": document, "operationName": f"Q0_{n}"}).encode()
        env = {**environ("/audit/", document), "_body": body, "CONTENT_LENGTH": str(len(body))}
        seconds, status = timed_any(apps["all on, enforce (local-memory throttle)"], env)
        over_samples.append(seconds)
        over_statuses.add(status)
    print(
        f"\nA hostile document over the limits (200 operations, {len(document)} characters), each one new"
        f"\n  {statistics.median(over_samples) * 1e3:8.3f} ms median, {max(over_samples) * 1e3:.3f} ms worst of 30"
        f"  (goal <= 50 ms)  answers: {', '.join(sorted(over_statuses))}"
    )
    big = json.dumps({"query": "{ serviceStatus { ok } }", "padding": "x" * 1_000_000}).encode()
    big_env = {**environ("/audit/", ""), "_body": big, "CONTENT_LENGTH": str(len(big))}
    worst_case(
        "A 1 MB body over max_request_bytes", apps["all on, enforce (local-memory throttle)"], big_env, 2, runs=50
    )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    sys.exit(main())
