"""What QUERY_LIMITS, PERSISTED_OPERATIONS and THROTTLE cost per request, against gql_audit without them.

    python bench/protections.py [--rounds 15] [--requests 400] [--objects 1000]

Full Django WSGI stacks called in-process (no network), the same middleware,
schema and query in each configuration; only the protections differ. Rounds
alternate between configurations and the median round is reported, with the
spread (lowest and highest round) beside it. The checks are cached per
document, so their goal is to be within that spread of no protections at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import audited_handler, environ, measure_rounds  # noqa: I001

LIMITS = {"max_depth": 10, "max_aliases": 30, "max_fields": 5000, "max_tokens": 5000, "mode": "enforce"}
THROTTLE = {"login": "5/300s", "auth_failures": "30/60s"}


#: Values gql_audit works out from these settings once per settings generation.
DERIVED = ("derived:protections", "derived:throttle_rates")


def configurer(values: dict[str, Any]) -> Callable[[], None]:
    """Puts these protection settings in force (process-wide), their derived values
    worked out on first use and then reused, as a settings generation would."""
    from gql_audit.conf import conf
    from gql_audit.protect import admission, counters

    derived: dict[str, Any] = {}

    def apply() -> None:
        for key in ("QUERY_LIMITS", "PERSISTED_OPERATIONS", "THROTTLE"):
            conf._cache[key] = values.get(key)
        if not derived:
            for key in DERIVED:
                conf._cache.pop(key, None)
            admission.active()
            counters.rate("login")
            derived.update({key: conf._cache[key] for key in DERIVED})
        conf._cache.update(derived)

    return apply


def with_protections(app: Callable[..., Any], values: dict[str, Any]) -> Callable[..., Any]:
    """The audited stack with these protection settings for its requests."""
    apply = configurer(values)

    def run(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        apply()
        return app(env, start_response)

    return run


def show(title: str, samples: dict[str, list[float]], unit: str = "request") -> None:
    print(f"\n{title}")
    base = statistics.median(next(iter(samples.values())))
    for name, values in samples.items():
        median = statistics.median(values)
        print(
            f"  {name:<44} {median * 1e3:8.3f} ms/{unit}  ratio {median / base:5.3f}"
            f"  rounds {min(values) * 1e3:.3f}-{max(values) * 1e3:.3f}"
        )


def checks_alone(configurations: dict[str, dict[str, Any]], documents: dict[str, str], repeat: int = 3000) -> None:
    """Microseconds the middleware's checks add to one request (``process_view``), the
    fastest of five batches: noise from other processes only ever adds time."""
    from django.test import RequestFactory
    from django.urls import resolve

    from gql_audit import context
    from gql_audit.middleware import AuditContextMiddleware

    middleware = AuditContextMiddleware(lambda request: None)
    view = resolve("/audit/").func
    print("\nThe checks alone (AuditContextMiddleware.process_view), per request")
    for document_name, text in documents.items():
        request = RequestFactory().post("/audit/", json.dumps({"query": text}), content_type="application/json")
        for name, values in configurations.items():
            configurer(values)()
            batches = []
            for _ in range(5):
                ctx = context.RequestContext(request_id="bench", request=request, remote_addr="127.0.0.1")
                token = context.bind(ctx)
                try:
                    start = time.perf_counter()
                    for _ in range(repeat):
                        ctx.operation = None
                        if middleware.process_view(request, view, (), {}) is not None:
                            raise SystemExit(f"refused: {name}, {document_name}")
                    batches.append((time.perf_counter() - start) / repeat)
                finally:
                    context.reset(token)
            print(f"  {document_name + ', ' + name:<64} {min(batches) * 1e6:7.2f} us")


def analysis_cost(documents: dict[str, str], repeat: int = 2000) -> None:
    """Microseconds to measure a document the first time, and each time after (the cache)."""
    from gql_audit.protect import document

    print("\nMeasuring a document (gql_audit.protect.document.analyse)")
    for name, text in documents.items():
        start = time.perf_counter()
        for _ in range(50):
            document._analyse(text)
        first = (time.perf_counter() - start) / 50
        document.analyse(text)
        start = time.perf_counter()
        for _ in range(repeat):
            document.analyse(text)
        cached = (time.perf_counter() - start) / repeat
        print(f"  {name:<44} first {first * 1e6:8.1f} us   cached {cached * 1e6:6.2f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    for option, default in (("--rounds", 15), ("--requests", 400), ("--list-requests", 10), ("--objects", 1000)):
        parser.add_argument(option, type=int, default=default)
    args = parser.parse_args()

    from django.db import connection

    from bench.models import Record
    from bench.schema import RECORD_FIELDS
    from gql_audit.models import ReadObject, RequestReads
    from gql_audit.protect.document import document_hash

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    Record.objects.bulk_create(
        Record(name=f"name {i}", email=f"u{i}@example.org", score=i) for i in range(args.objects)
    )
    one_field = "{ serviceStatus { ok } }"
    records = "{ records { %s } }" % RECORD_FIELDS
    manifest = Path(tempfile.mkdtemp()) / "manifest.json"
    manifest.write_text(json.dumps({document_hash(d): d for d in (one_field, records)}))
    persisted = {"manifest": str(manifest), "mode": "enforce"}

    audited = audited_handler()
    configurations = {
        "gql_audit, no protections": {},
        "+ QUERY_LIMITS (enforce)": {"QUERY_LIMITS": LIMITS},
        "+ QUERY_LIMITS + PERSISTED_OPERATIONS": {"QUERY_LIMITS": LIMITS, "PERSISTED_OPERATIONS": persisted},
        "+ both + THROTTLE (local-memory cache)": {
            "QUERY_LIMITS": LIMITS,
            "PERSISTED_OPERATIONS": persisted,
            "THROTTLE": THROTTLE,
        },
    }
    apps = {name: with_protections(audited, values) for name, values in configurations.items()}

    def clear() -> None:
        RequestReads.objects.all().delete()
        ReadObject.objects.all().delete()

    print(
        f"gql_audit protections benchmark ({connection.vendor}): {args.rounds} rounds; "
        f"{args.requests} one-field requests, {args.list_requests} list requests per round"
    )
    one_field_configs = {name: (app, environ("/audit/", one_field)) for name, app in apps.items()}
    show("One-field public query", measure_rounds(one_field_configs, args.rounds, args.requests))
    show(
        f"List of {args.objects} objects x 8 fields (reads recorded)",
        measure_rounds(
            {name: (app, environ("/records/audit/", records)) for name, app in apps.items()},
            args.rounds,
            args.list_requests,
            warmup=3,
            between=clear,
        ),
    )
    checks_alone(configurations, {"one-field query": one_field, "list query": records})
    analysis_cost(
        {
            "one-field query": one_field,
            "list query": records,
            "a 200-alias query through fragments": "query { ...F ...F } fragment F on Query { "
            + " ".join(f"a{i}: serviceStatus {{ ok name }}" for i in range(100))
            + " }",
        }
    )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
