"""Shared set-up for the benchmarks: Django configured, WSGI stacks called in-process."""

from __future__ import annotations

import io
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "example_service")]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")

import django  # noqa: E402

django.setup()

from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import close_old_connections  # noqa: E402

# As Django's test client does: neither the start of a request nor the close of its
# response may close the database connection (with CONN_MAX_AGE 0 both would), or
# every request of every configuration would pay a new connection, which on
# PostgreSQL costs more than the whole request and hides what is measured.
request_started.disconnect(close_old_connections)
request_finished.disconnect(close_old_connections)

from django.conf import settings  # noqa: E402
from django.core.handlers.wsgi import WSGIHandler  # noqa: E402
from django.test import override_settings  # noqa: E402

OURS = "gql_audit.middleware.AuditContextMiddleware"
AUTH = "django.contrib.auth.middleware.AuthenticationMiddleware"
BASE_MIDDLEWARE = [m for m in settings.MIDDLEWARE if m != OURS]


def handler(middleware: list[str]) -> WSGIHandler:
    with override_settings(MIDDLEWARE=middleware):
        return WSGIHandler()


def bare_handler() -> WSGIHandler:
    return handler(BASE_MIDDLEWARE)


def audited_handler() -> WSGIHandler:
    after_auth = BASE_MIDDLEWARE.index(AUTH) + 1
    return handler([*BASE_MIDDLEWARE[:after_auth], OURS, *BASE_MIDDLEWARE[after_auth:]])


def settings_db() -> str:
    """What the benchmark database is, in words (SQLite's journal mode matters)."""
    from django.db import connection

    if connection.vendor != "sqlite":
        return connection.vendor
    with connection.cursor() as cursor:
        cursor.execute("PRAGMA journal_mode")
        return f"journal_mode={cursor.fetchone()[0]}"


def environ(path: str, query: str, token: str | None = None) -> dict:
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
    """One request, closed as a WSGI server closes it."""
    out, response = send(app, env)
    response.close()
    return out


def send(app: WSGIHandler, env: dict) -> tuple[bytes, Any]:
    """One request up to its last byte, as the client sees it: ``response.close()`` is left to the caller."""
    env = dict(env)
    env["wsgi.input"] = io.BytesIO(env["_body"])
    status = []
    response = app(env, lambda s, h, *a: status.append(s))
    out = b"".join(response)
    if not status[0].startswith("200") or b'"errors"' in out:
        raise SystemExit(f"benchmark request failed: {status[0]} {out[:300]!r}")
    return out, response


def measure(
    configs: dict[str, tuple[WSGIHandler, dict]], rounds: int, requests: int, **options: Any
) -> dict[str, float]:
    """Median seconds per request of each configuration, rounds alternating (see :func:`measure_rounds`)."""
    samples = measure_rounds(configs, rounds, requests, **options)
    return {name: statistics.median(values) for name, values in samples.items()}


def measure_rounds(
    configs: dict[str, tuple[WSGIHandler, dict]],
    rounds: int,
    requests: int,
    *,
    warmup: int = 20,
    between: Callable[[], None] | None = None,
    interleave: bool = False,
    closes: dict[str, list[float]] | None = None,
) -> dict[str, list[float]]:
    """Seconds per request of each round of each configuration.

    Rounds alternate configurations (``between`` runs before each); with
    ``interleave`` the configurations take turns request by request instead
    (``between`` runs once a round, and which goes first rotates), so that every
    configuration meets the same machine, disk and database: what a commit's flush
    costs varies from one second to the next by more than a few percent.

    A request is timed up to its response's last byte, as its client sees it;
    the server's ``response.close()`` after that (where ``WRITE_AFTER_RESPONSE``
    writes) is not counted; with ``closes`` given, it is timed on its own and its
    seconds per request of each round are added there.
    """
    for app, env in configs.values():
        for _ in range(warmup):
            call(app, env)
    samples: dict[str, list[float]] = {name: [] for name in configs}
    names = list(configs)
    for _ in range(rounds):
        if interleave:
            if between is not None:
                between()
            elapsed = dict.fromkeys(names, 0.0)
            closing = dict.fromkeys(names, 0.0)
            for n in range(requests):
                for name in names[n % len(names) :] + names[: n % len(names)]:
                    seconds, closed = _timed(*configs[name])
                    elapsed[name] += seconds
                    closing[name] += closed
            for name in names:
                samples[name].append(elapsed[name] / requests)
                if closes is not None:
                    closes.setdefault(name, []).append(closing[name] / requests)
            continue
        for name, (app, env) in configs.items():
            if between is not None:
                between()
            timings = [_timed(app, env) for _ in range(requests)]
            samples[name].append(sum(seconds for seconds, _ in timings) / requests)
            if closes is not None:
                closes.setdefault(name, []).append(sum(closed for _, closed in timings) / requests)
    return samples


def _timed(app: WSGIHandler, env: dict) -> tuple[float, float]:
    """Seconds of one request up to its last byte, and of its ``close()`` apart."""
    start = time.perf_counter()
    _, response = send(app, env)
    sent = time.perf_counter()
    response.close()
    return sent - start, time.perf_counter() - sent


def with_settings(app: Callable[..., Any], overrides: dict[str, Any]) -> Callable[..., Any]:
    """``app`` with these ``GQL_AUDIT`` values in force for its requests.

    Each configuration gets a settings cache of its own, put in place before each of
    its requests: what gql_audit works out from its settings (the access store, the
    sealing key, the protections' rules) is worked out once per configuration, as a
    service works it out once per settings change, and never leaks into another.
    """
    from gql_audit.conf import conf

    cache = dict(overrides)

    def run(env: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        conf._cache = cache
        return app(env, start_response)

    return run


def report(title: str, results: dict[str, float], baseline: str, unit: str = "request") -> None:
    print(f"\n{title}")
    base = results[baseline]
    for name, seconds in results.items():
        print(f"  {name:<48} {seconds * 1e3:9.3f} ms/{unit}   ratio {seconds / base:5.3f}")
