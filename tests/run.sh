#!/bin/sh
# Run the gql_audit test suite: creates .venv, installs the package with its
# dev extra, then runs the suite on SQLite and, when a PostgreSQL server is
# configured (PGHOST ...) or under CI=true, again on PostgreSQL, then through
# django-cockroachdb's backend on PostgreSQL (its block at the end).
# Extra arguments go to pytest, e.g. tests/run.sh -k actor
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev]'

echo "== lint (ruff), types (mypy --strict), layers (import-linter: an upward import or a cycle fails)"
.venv/bin/ruff check --quiet .
PYTHONPATH=.:example_service .venv/bin/mypy
.venv/bin/lint-imports --no-cache

echo "== documentation site (mkdocs --strict: a warning or a broken link fails)"
SITE_DIR=$(mktemp -d)
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$SITE_DIR"
rm -rf "$SITE_DIR"

echo "== gql_audit tests on SQLite"
GQL_AUDIT_TEST_DB=sqlite .venv/bin/python -m pytest "$@"

if [ -n "${PGHOST:-}" ] || [ "${CI:-}" = "true" ]; then
    echo "== gql_audit tests on PostgreSQL (${PGHOST:-unset}:${PGPORT:-5432})"
    GQL_AUDIT_TEST_DB=postgres .venv/bin/python -m pytest "$@"
else
    echo "== PostgreSQL pass not run: no server configured."
    echo "   Set PGHOST, PGPORT, PGUSER, PGPASSWORD (a role with CREATEDB) to run it,"
    echo "   or run 'sudo .ci/run', which installs and starts Debian's PostgreSQL."
fi

# --- CockroachDB-backend pass -------------------------------------------------------
# django-cockroachdb's own backend on the same PostgreSQL server, at SERIALIZABLE
# (CockroachDB's default isolation): CockroachDB's Django backend, not CockroachDB
# (tests/crdb_on_postgres/, docs/databases.md). Then every statement it sent,
# parameters rendered, goes through CockroachDB 25.2's parser: one refusal fails.
if [ -n "${PGHOST:-}" ] || [ "${CI:-}" = "true" ]; then
    echo "== gql_audit tests through django-cockroachdb's backend on PostgreSQL, SERIALIZABLE (not CockroachDB)"
    CRDB_SQL=$(mktemp)
    trap 'rm -f "$CRDB_SQL"' EXIT
    GQL_AUDIT_TEST_DB=cockroachdb GQL_AUDIT_CRDB_SQL_LOG="$CRDB_SQL" .venv/bin/python -m pytest "$@"
    echo "== every statement of that pass, parsed by CockroachDB's parser (crdbparse)"
    .venv/bin/python -m tests.crdb_on_postgres.check "$CRDB_SQL"
fi
# --- end of the CockroachDB-backend pass ---------------------------------------------
