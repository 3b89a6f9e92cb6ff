"""What gql_audit costs per request, against bare graphene-django in the same run.

    python bench/overhead.py [--rounds 15] [--requests 400]

Each configuration is a full Django WSGI stack called in-process (no network):
the same Django middleware, the same schema, the same query. Rounds alternate
between configurations and the median round is reported, so machine noise
hits all of them alike. Ratios are printed against bare graphene-django.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_service")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.test import override_settings  # noqa: E402

OURS = "gql_audit.middleware.AuditContextMiddleware"
BASE_MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]


def handler(middleware: list[str]) -> WSGIHandler:
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def environ(path: str, query: str, token: str | None) -> dict:
    body = json.dumps({"query": query}).encode()
    env = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "wsgi.url_scheme": "http",
        "wsgi.errors": sys.stderr,
        "_body": body,
    }
    if token:
        env["HTTP_AUTHORIZATION"] = f"JWT {token}"
    return env


def call(app: WSGIHandler, env: dict) -> bytes:
    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["_body"])
    status = []
    chunks = app(env, lambda s, h, *a: status.append(s))
    out = b"".join(chunks)
    if not status[0].startswith("200") or b'"errors"' in out:
        raise SystemExit(f"benchmark request failed: {status[0]} {out[:300]!r}")
    return out


def measure(configs: dict[str, tuple[WSGIHandler, dict]], rounds: int, requests: int) -> dict[str, float]:
    for app, env in configs.values():  # warm up caches, imports, rules
        for _ in range(50):
            call(app, env)
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(rounds):
        for name, (app, env) in configs.items():
            start = time.perf_counter()
            for _ in range(requests):
                call(app, env)
            samples[name].append((time.perf_counter() - start) / requests)
    return {name: statistics.median(values) for name, values in samples.items()}


def report(title: str, results: dict[str, float], baseline: str) -> None:
    print(f"\n{title}")
    base = results[baseline]
    for name, seconds in results.items():
        print(f"  {name:<44} {seconds * 1e6:9.1f} us/run   ratio {seconds / base:5.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()

    call_command("migrate", verbosity=0)
    from django.contrib.auth import get_user_model
    from graphql_jwt.shortcuts import get_token

    user = get_user_model().objects.create_user("bench", "bench@example.org", "pw")
    token = get_token(user)

    bare = handler(BASE_MIDDLEWARE)
    after_auth = BASE_MIDDLEWARE.index("django.contrib.auth.middleware.AuthenticationMiddleware") + 1
    audited = handler([*BASE_MIDDLEWARE[:after_auth], OURS, *BASE_MIDDLEWARE[after_auth:]])
    one_field = "{ serviceStatus { ok } }"

    print(f"gql_audit overhead benchmark: {args.rounds} rounds x {args.requests} requests, median round")
    anonymous = measure(
        {
            "bare graphene-django": (bare, environ("/bare/", one_field, None)),
            "gql_audit (both middlewares)": (audited, environ("/audit/", one_field, None)),
        },
        args.rounds,
        args.requests,
    )
    report("One-field public query, no token (goal: ratio <= 1.10)", anonymous, "bare graphene-django")

    private = "{ me { username } }"
    authenticated = measure(
        {
            "graphene-django + graphql_jwt middleware": (bare, environ("/jwt/", private, token)),
            "gql_audit (both middlewares)": (audited, environ("/audit/", private, token)),
        },
        args.rounds,
        args.requests,
    )
    report("One-field private query with a valid token", authenticated, "graphene-django + graphql_jwt middleware")

    report(
        "Per-field path: 1,000 rows x 8 fields, executed in-process (no HTTP, no database)",
        per_field(args.rounds),
        "bare graphene",
    )


def per_field(rounds: int) -> dict[str, float]:
    from django.test import RequestFactory

    from bench.schema import QUERY, schema
    from gql_audit import context
    from gql_audit.graphene import AuditMiddleware

    request = RequestFactory().post("/")
    request.user = type("User", (), {"is_authenticated": True})()

    def run(middleware: list) -> float:
        token = context.bind(context.RequestContext(request_id="bench", request=request))
        try:
            start = time.perf_counter()
            result = schema.execute(QUERY, variables={"n": 1000}, context_value=request, middleware=middleware)
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
        "bare graphene": list,
        "a do-nothing middleware (the floor)": lambda: [PassThrough()],
        "gql_audit AuditMiddleware": lambda: [AuditMiddleware()],
    }
    samples: dict[str, list[float]] = {name: [] for name in configs}
    for make in configs.values():
        run(make())
    for _ in range(rounds):
        for name, make in configs.items():
            samples[name].append(run(make()))
    return {name: statistics.median(values) for name, values in samples.items()}


if __name__ == "__main__":
    main()
