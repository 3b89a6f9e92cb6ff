#!/bin/sh
# Run the gql_audit test suite: creates .venv, installs the package with its
# dev extra, then runs the suite on SQLite and, when a PostgreSQL server is
# configured (PGHOST ...) or under CI=true, again on PostgreSQL.
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
