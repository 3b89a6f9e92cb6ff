"""What gql_audit costs per request, against bare graphene-django in the same run.

    python bench/overhead.py [--rounds 15] [--requests 400]

Each configuration is a full Django WSGI stack called in-process (no network):
the same Django middleware, the same schema, the same query. Rounds alternate
between configurations and the median round is reported, so machine noise
hits all of them alike. Ratios are printed against the baseline of each table.
"""

from __future__ import annotations

import argparse
import statistics
import time

from harness import audited_handler, bare_handler, call, environ, measure, report  # noqa: I001


def per_field(rounds: int) -> dict[str, float]:
    from django.test import RequestFactory

    from bench.schema import QUERY, bare_schema, schema
    from gql_audit import context
    from gql_audit.graphene import AuditMiddleware

    request = RequestFactory().post("/")
    request.user = type("User", (), {"is_authenticated": True})()

    def run(middleware: list, instrumented: bool = False) -> float:
        ctx = context.RequestContext(request_id="bench", request=request, accessed={})
        target = bare_schema
        if instrumented:
            # What AuditContextMiddleware.process_view sets for graphene-django's GraphQLView.
            ctx.view_schema, target = schema.graphql_schema, schema
        token = context.bind(ctx)
        try:
            start = time.perf_counter()
            result = target.execute(QUERY, variables={"n": 1000}, context_value=request, middleware=middleware)
            elapsed = time.perf_counter() - start
        finally:
            context.reset(token)
        if result.errors:
            raise SystemExit(f"benchmark query failed: {result.errors}")
        return elapsed

    class PassThrough:
        """The floor: what graphql-core charges for any middleware at all."""

        def resolve(self, next, root, info, **args):
            return next(root, info, **args)

    configs = {
        "bare graphene": (list, False),
        "a do-nothing middleware": (lambda: [PassThrough()], False),
        "gql_audit AuditMiddleware on every field": (lambda: [AuditMiddleware()], False),
        "gql_audit, instrumented schema (INSTRUMENT_SCHEMA)": (lambda: [AuditMiddleware()], True),
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for make, instrumented in configs.values():
        run(make(), instrumented)
    for _ in range(rounds):
        for name, (make, instrumented) in configs.items():
            samples[name].append(run(make(), instrumented))
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    from django.contrib.auth import get_user_model
    from django.db import connection
    from graphql_jwt.shortcuts import get_token

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    user = get_user_model().objects.create_user("bench", "bench@example.org", "pw")
    token = get_token(user)
    bare, audited = bare_handler(), audited_handler()

    print(f"gql_audit overhead benchmark ({connection.vendor}): {args.rounds} rounds x {args.requests} requests")
    one_field = "{ serviceStatus { ok } }"
    anonymous = measure(
        {
            "bare graphene-django": (bare, environ("/bare/", one_field)),
            "gql_audit (both middlewares)": (audited, environ("/audit/", one_field)),
        },
        args.rounds,
        args.requests,
    )
    report("One-field public query, no token (goal: ratio <= 1.10)", anonymous, "bare graphene-django")

    private = "{ me { username } }"
    authenticated = measure(
        {
            "graphene-django + graphql_jwt middleware": (bare, environ("/jwt/", private, token)),
            "gql_audit (both middlewares, access logged)": (audited, environ("/audit/", private, token)),
        },
        args.rounds,
        args.requests,
    )
    report("One-field private query with a valid token", authenticated, "graphene-django + graphql_jwt middleware")

    report(
        "Per-field path: 1,000 rows x 8 fields of plain objects, in-process (no HTTP, no database)",
        per_field(args.rounds),
        "bare graphene",
        unit="run",
    )
    call(bare, environ("/bare/", one_field))  # the stacks are still healthy
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
