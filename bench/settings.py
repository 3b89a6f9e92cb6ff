"""Settings for the benchmarks: the example service on SQLite (in memory, or a WAL file) or PostgreSQL.

``BENCH_NAME`` names the throwaway database (PostgreSQL) or file (SQLite) a run creates,
so that two runs side by side do not share one.
"""

import os

from example_service.databases import postgres_from_environment
from example_service.settings import *  # noqa: F403

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
if os.environ.get("BENCH_DB") == "postgres":
    # BENCH_PG_NAME: to run two benchmarks side by side on one server.
    DATABASES = {"default": postgres_from_environment(os.environ.get("BENCH_PG_NAME", "gql_audit_bench"))}
    if os.environ.get("BENCH_PG_PREPARED"):
        # Server-side binding, each statement prepared on its second run (docs/performance.md).
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}
elif os.environ.get("BENCH_DB") == "sqlite-wal":
    # A file in WAL mode, as docs/access-log.md recommends: what a durable SQLite costs.
    import tempfile

    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "gql_audit_bench.sqlite3"),
            "TEST": {
                "NAME": os.path.join(
                    tempfile.gettempdir(), os.environ.get("BENCH_NAME", "gql_audit_bench_test") + ".sqlite3"
                )
            },
            "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
        }
    }
else:
    DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
ROOT_URLCONF = "bench.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {"version": 1, "disable_existing_loggers": False}

AUTHENTICATION_BACKENDS = [
    "graphql_jwt.backends.JSONWebTokenBackend",
    "django.contrib.auth.backends.ModelBackend",
]

# The example turns the protections on; bench/protections.py measures them, the other
# benchmarks measure gql_audit without them.
GQL_AUDIT = {k: v for k, v in GQL_AUDIT.items() if k not in ("QUERY_LIMITS", "THROTTLE")}  # noqa: F405
SILENCED_SYSTEM_CHECKS = []

# bench/evidence.py runs a checkpointer process on the benchmark's own database.
if os.environ.get("GQA_BENCH_DB_NAME"):
    import json

    for _alias in DATABASES:
        DATABASES[_alias]["NAME"] = os.environ["GQA_BENCH_DB_NAME"]
    GQL_AUDIT = {**GQL_AUDIT, **json.loads(os.environ.get("GQA_BENCH_GQL_AUDIT", "{}"))}  # noqa: F405

# Served by a real server (bench/throughput.py): BENCH_SERVE says which configuration,
# on the database the benchmark created, its connections kept from one request to the
# next (CONN_MAX_AGE, or Django's pool with BENCH_POOL), as a service under load keeps them.
SERVE = os.environ.get("BENCH_SERVE")
if SERVE:
    DATABASES["default"]["NAME"] = DATABASES["default"]["TEST"]["NAME"]
    if os.environ.get("BENCH_POOL"):
        # ASGI: each request runs in a thread of its own, so connections are pooled, not kept.
        DATABASES["default"]["OPTIONS"] = {"pool": {"min_size": 2, "max_size": 4}}
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = 600
    ALLOWED_HOSTS = ["*"]
    if SERVE in ("bare", "floor"):
        MIDDLEWARE = [m for m in MIDDLEWARE if m != "gql_audit.middleware.AuditContextMiddleware"]  # noqa: F405
        if SERVE == "floor":  # bare, and one durable row a request (bench/floor.py)
            MIDDLEWARE = ["bench.floor.FloorRowMiddleware", *MIDDLEWARE]
    elif SERVE == "sealed":
        GQL_AUDIT = {**GQL_AUDIT, "TAMPER_EVIDENCE": {"key": "benchmark sealing key, long enough for HMAC-SHA256"}}  # noqa: F405
    elif SERVE != "default":
        raise RuntimeError(f"BENCH_SERVE must be bare, floor, default or sealed, not {SERVE!r}")
