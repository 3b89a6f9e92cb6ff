"""Peak memory of one request for a list of 10,000 objects, against bare graphene-django.

    python bench/memory.py [--objects 10000] [--processes 5]
    BENCH_DB=postgres PGHOST=... python bench/memory.py

Each measurement is a fresh process (``--processes`` of them per configuration, taking
turns): Django set up, every code path warmed by a request for five objects, then one
request for all ``--objects`` objects (8 fields each) through the full Django stack.
Printed for each configuration, median of its processes:

- the request's peak RSS: how far the process's peak resident size (``ru_maxrss``)
  rose during it, and that as a ratio to bare's;
- the process's peak RSS once the request is done, and that as a ratio to bare's;
- the peak of Python's own allocations during the request (``tracemalloc``, measured in
  processes of its own: tracing slows a request several-fold).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
CONFIGS = {
    "bare": ("/records/bare/", {}),
    "default": ("/records/audit/", {"ACCESS_STORE": "gql_audit"}),
    "auditlog store": ("/records/audit/", {"ACCESS_STORE": "auditlog"}),
    "sealed": ("/records/audit/", {"TAMPER_EVIDENCE": {"key": "benchmark sealing key, long enough for HMAC-SHA256"}}),
}


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def measure(config: str, objects: int, traced: bool) -> None:
    """In the child: one configuration's request, its measurements printed as JSON."""
    import tracemalloc

    from harness import audited_handler, bare_handler, call, environ, with_settings

    from bench.schema import RECORD_FIELDS

    path, overrides = CONFIGS[config]
    app = bare_handler() if config == "bare" else with_settings(audited_handler(), overrides)
    query = "{ records(first: %d) { %s } }"
    call(app, environ(path, query % (5, RECORD_FIELDS)))
    big = environ(path, query % (objects, RECORD_FIELDS))
    if traced:
        tracemalloc.start()
        call(app, big)
        print(json.dumps({"traced_peak": tracemalloc.get_traced_memory()[1]}))
        return
    before = peak_kib()
    call(app, big)
    print(json.dumps({"request": (peak_kib() - before) * 1024, "process": peak_kib() * 1024}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.child, args.objects, args.traced)
        return

    import harness  # noqa: F401 - configures Django
    from access import fill_records
    from django.db import connection

    if connection.vendor == "sqlite" and connection.settings_dict["NAME"] == ":memory:":
        parser.error("BENCH_DB=sqlite-wal or postgres: the child processes share the database")
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    fill_records(args.objects)
    connection.close()
    env = {**os.environ, "BENCH_SERVE": "default"}  # the children use the database made here
    results: dict[str, dict[str, list[int]]] = {name: {} for name in CONFIGS}
    try:
        for traced in (False, True):
            for _ in range(args.processes):
                for name in CONFIGS:
                    command = [sys.executable, __file__, "--child", name, "--objects", str(args.objects)]
                    out = subprocess.run(
                        command + (["--traced"] if traced else []), env=env, check=True, capture_output=True, text=True
                    ).stdout
                    for key, value in json.loads(out.strip().splitlines()[-1]).items():
                        results[name].setdefault(key, []).append(value)
    finally:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)
    base = {key: statistics.median(values) for key, values in results["bare"].items()}
    print(
        f"gql_audit memory ({connection.vendor}): one request for {args.objects:,} objects x 8 fields, "
        f"median of {args.processes} processes each"
    )
    print(f"  {'':16} request's peak RSS     process's peak RSS     Python's peak (tracemalloc)")
    for name, found in results.items():
        cells = []
        for key in ("request", "process", "traced_peak"):
            median = statistics.median(found[key])
            cells.append(f"{median / 2**20:7.1f} MiB ({median / base[key]:.2f})")
        print(f"  {name:<16} " + "   ".join(f"{cell:<20}" for cell in cells))


if __name__ == "__main__":
    main()
