"""What gql_audit costs a request whatever its size, and what each object adds: a line fitted to its cost.

    BENCH_DB=postgres PGHOST=... python bench/fixed_cost.py [--sizes 1,20,100,500,1000] [--rounds 7] [--requests 20]

Bare graphene-django, capture only (gql_audit with its write skipped) and gql_audit as
installed, each on lists of every size in ``--sizes``, all taking turns request by
request in one run (as ``bench/access.py`` does). For each size, the median over rounds
of gql_audit's time minus bare's in the same round; then the least-squares line through
those points: its intercept is the fixed cost of a request, its slope the cost of one
object. The same for capture only. Absolute times move with the machine's load more than
ratios do: read several runs.
"""

from __future__ import annotations

import argparse
import statistics

from harness import audited_handler, bare_handler, environ, measure_rounds, with_settings  # noqa: I001


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Intercept and slope of the least-squares line through ``points``."""
    xs, ys = [x for x, _ in points], [y for _, y in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x in xs)
    return mean_y - slope * mean_x, slope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,20,100,500,1000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()

    from access import fill_records, skip_write
    from django.db import connection

    from bench.schema import RECORD_FIELDS

    sizes = [int(n) for n in args.sizes.split(",")]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    fill_records(max(sizes))
    bare, audited = bare_handler(), audited_handler()
    default, capture = with_settings(audited, {}), skip_write(with_settings(audited, {}))
    query = "{ records(first: %d) { %s } }"
    configs = {}
    for size in sizes:
        configs[f"bare {size}"] = (bare, environ("/records/bare/", query % (size, RECORD_FIELDS)))
        configs[f"capture {size}"] = (capture, environ("/records/audit/", query % (size, RECORD_FIELDS)))
        configs[f"default {size}"] = (default, environ("/records/audit/", query % (size, RECORD_FIELDS)))
    print(f"gql_audit cost against list size ({connection.vendor}): {args.rounds} rounds x {args.requests} requests")
    lines: dict[str, list[tuple[float, float]]] = {"default": [], "capture": []}
    for run in range(args.runs):
        samples = measure_rounds(configs, args.rounds, args.requests, warmup=5, interleave=True)
        print(f"\nrun {run + 1}: objects   bare ms   capture - bare   default - bare")
        points: dict[str, list[tuple[float, float]]] = {"default": [], "capture": []}
        for size in sizes:
            bare_ms = statistics.median(samples[f"bare {size}"]) * 1e3
            over = {}
            for name in points:
                rounds = zip(samples[f"{name} {size}"], samples[f"bare {size}"], strict=True)
                over[name] = statistics.median(mine - base for mine, base in rounds) * 1e3
                points[name].append((size, over[name]))
            print(f"  {size:13d} {bare_ms:9.3f} {over['capture']:13.3f} ms {over['default']:13.3f} ms")
        for name, found in points.items():
            intercept, slope = fit(found)
            lines[name].append((intercept, slope))
            print(f"  {name}: {intercept:.3f} ms a request + {slope * 1e3:.2f} us an object")
    if args.runs > 1:
        print(f"\n{args.runs} runs, median (lowest-highest)")
        for name, found in lines.items():
            intercepts, slopes = [i for i, _ in found], [s * 1e3 for _, s in found]
            print(
                f"  {name}: {statistics.median(intercepts):.3f} ms ({min(intercepts):.3f}-{max(intercepts):.3f}) "
                f"a request + {statistics.median(slopes):.2f} us ({min(slopes):.2f}-{max(slopes):.2f}) an object"
            )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
