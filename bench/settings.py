"""Settings for the benchmarks: the example service on SQLite (in memory, or a WAL file) or PostgreSQL."""

import os

from example_service.databases import postgres_from_environment
from example_service.settings import *  # noqa: F403

DEBUG = False
INSTALLED_APPS = [*INSTALLED_APPS, "bench"]  # noqa: F405
if os.environ.get("BENCH_DB") == "postgres":
    # BENCH_PG_NAME: to run two benchmarks side by side on one server.
    DATABASES = {"default": postgres_from_environment(os.environ.get("BENCH_PG_NAME", "gql_audit_bench"))}
elif os.environ.get("BENCH_DB") == "sqlite-wal":
    # A file in WAL mode, as docs/access-log.md recommends: what a durable SQLite costs.
    import tempfile

    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.path.join(tempfile.gettempdir(), "gql_audit_bench.sqlite3"),
            "TEST": {"NAME": os.path.join(tempfile.gettempdir(), "gql_audit_bench_test.sqlite3")},
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
