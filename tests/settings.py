"""Test settings: the example service, on SQLite or PostgreSQL.

``GQL_AUDIT_TEST_DB=postgres`` selects PostgreSQL, reached through the usual
libpq variables (PGHOST, PGPORT, PGUSER, PGPASSWORD, PGDATABASE);
``GQL_AUDIT_TEST_DB=cockroachdb`` django-cockroachdb's backend on that server.
"""

import os
from pathlib import Path

from example_service.databases import postgres_from_environment
from example_service.settings import *  # noqa: F403

TEST_DB = os.environ.get("GQL_AUDIT_TEST_DB", "sqlite")
TMP_DIR = Path(__file__).resolve().parent / ".tmp"

if TEST_DB == "postgres":
    # GQL_AUDIT_TEST_PG_NAME: to run two PostgreSQL passes side by side on one server.
    DATABASES = {"default": postgres_from_environment(os.environ.get("GQL_AUDIT_TEST_PG_NAME", "test_gql_audit"))}
    if os.environ.get("GQL_AUDIT_TEST_PG_PREPARED"):
        # Server-side binding and prepared statements, as a service may configure them.
        DATABASES["default"]["OPTIONS"] = {"server_side_binding": True, "prepare_threshold": 2}
    # A second connection to the same database, for AUDIT_DATABASE.
    DATABASES["audit"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
# --- CockroachDB-backend pass (GQL_AUDIT_TEST_DB=cockroachdb) -----------------------
elif TEST_DB == "cockroachdb":
    # django-cockroachdb's own backend on PostgreSQL at SERIALIZABLE, CockroachDB's default
    # isolation: CockroachDB's Django backend, not CockroachDB (tests/crdb_on_postgres/).
    from psycopg import IsolationLevel

    DATABASES = {
        "default": {
            **postgres_from_environment(os.environ.get("GQL_AUDIT_TEST_CRDB_NAME", "test_gql_audit_crdb")),
            "ENGINE": "tests.crdb_on_postgres",
            "OPTIONS": {"isolation_level": IsolationLevel.SERIALIZABLE},
        }
    }
    DATABASES["audit"] = {**DATABASES["default"], "TEST": {"MIRROR": "default"}}
    # What docs/databases.md tells CockroachDB users to set (system checks E060, W060).
    AUDITLOG_TWO_STEP_MIGRATION = True
    DISABLE_COCKROACHDB_TELEMETRY = True
# --- end of the CockroachDB-backend pass ---------------------------------------------
elif TEST_DB == "sqlite":
    TMP_DIR.mkdir(exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            # A file, not memory: threaded servers in the tests each need their own connection.
            "NAME": str(TMP_DIR / "gql_audit.sqlite3"),
            "TEST": {"NAME": str(TMP_DIR / f"test_gql_audit_{os.getpid()}.sqlite3")},
            "OPTIONS": {"timeout": 60, "transaction_mode": "IMMEDIATE"},
        }
    }
else:
    raise RuntimeError(f"GQL_AUDIT_TEST_DB must be 'sqlite', 'postgres' or 'cockroachdb', not {TEST_DB!r}")

ROOT_URLCONF = "tests.urls"
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
ALLOWED_HOSTS = ["*"]
DEBUG = False

# The example's JSON-to-stdout routing stops gql_audit records at their own
# handler; tests capture from the root logger instead.
LOGGING = {"version": 1, "disable_existing_loggers": False}

# The tests correlate requests by the X-Request-ID they send, as a proxy in
# front of the service would: the test client's address is that proxy.
# Tests of untrusted peers send from other addresses or override this.
GQL_AUDIT = {**GQL_AUDIT, "TRUSTED_PROXIES": ["127.0.0.1/32"]}  # noqa: F405

# ACCESS_STORE stays the default ("gql_audit"): tests of the auditlog store, or of both, set it themselves.

# The example turns the protections on; the tests that exercise them configure their own.
GQL_AUDIT = {k: v for k, v in GQL_AUDIT.items() if k not in ("QUERY_LIMITS", "THROTTLE")}
SILENCED_SYSTEM_CHECKS = []
