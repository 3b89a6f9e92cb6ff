#!/bin/sh
# Run the gql_audit test suite: creates .venv and installs the package with its dev
# extra (the first time, and again when pyproject.toml changes), checks lint, types,
# layers and the documentation site, then runs the suite on SQLite and, when a
# PostgreSQL server is configured (PGHOST ...) or under CI=true, again on PostgreSQL and
# through django-cockroachdb's backend on PostgreSQL (step_cockroachdb).
# Each pass runs the tests on pytest-xdist workers: four in the quick profile, two in the full.
#
# Profiles: by default the quick one: fuzzing and stress tests at quick sizes, the tests
# that hold for both access stores on the default store, and no install into a fresh
# virtual environment. The full one under CI=true or with GQL_AUDIT_TEST_PROFILE=full:
# all of it, at full sizes (the README says how long each takes).
# Extra arguments go to pytest, e.g. tests/run.sh -k actor
#
# All optional, for a matrix such as .ci/run's:
#   PYTHON=python3.13       the interpreter that makes a new virtual environment
#   VENV=.venv-ci/x         the virtual environment (default .venv)
#   DJANGO=6.1              the Django series to install (default: the newest pip allows)
#   STEPS="checks sqlite"   what to run, in order: each is a step_<name> function below
#   GQL_AUDIT_TEST_WORKERS  pytest-xdist workers (default 4, 2 in the full profile; 0 runs in the pytest process)
set -eu
cd "$(dirname "$0")/.."
. scripts/venv.sh

# --- Steps: add one as a step_<name> function, and name it in STEPS ------------------------

step_checks() {
    echo "== lint (ruff), types (mypy --strict), layers (import-linter: an upward import or a cycle fails)"
    "$VENV/bin/ruff" check --quiet .
    PYTHONPATH=.:example_service "$VENV/bin/mypy"
    "$VENV/bin/lint-imports" --no-cache
    echo "== documentation site (mkdocs --strict: a warning or a broken link fails)"
    site=$(mktemp -d)
    NO_MKDOCS_2_WARNING=1 "$VENV/bin/mkdocs" build --strict --quiet --site-dir "$site"
    rm -rf "$site"
}

step_sqlite() {
    echo "== gql_audit tests on SQLite"
    GQL_AUDIT_TEST_DB=sqlite run_pytest "$@"
}

step_postgres() {
    echo "== gql_audit tests on PostgreSQL (${PGHOST:-unset}:${PGPORT:-5432})"
    GQL_AUDIT_TEST_DB=postgres run_pytest "$@"
}

# The tests of what gql_audit writes itself (its rows, seals, outbox and checkpoints)
# again, on PostgreSQL with server-side binding and prepared statements, as a service
# may configure its connections (docs/performance.md).
step_postgres_prepared() {
    echo "== gql_audit's own statements on PostgreSQL, server-side binding and prepared statements"
    GQL_AUDIT_TEST_DB=postgres GQL_AUDIT_TEST_PG_PREPARED=1 run_pytest \
        -k "seal or tamper or store or reads or evidence or checkpoint or verify or outbox or export" "$@"
}

# django-cockroachdb's own backend on the same PostgreSQL server, at SERIALIZABLE
# (CockroachDB's default isolation): CockroachDB's Django backend, not CockroachDB
# (tests/crdb_on_postgres/, docs/databases.md). Then every statement it sent,
# parameters rendered, goes through CockroachDB 25.2's parser: one refusal fails.
step_cockroachdb() {
    echo "== gql_audit tests through django-cockroachdb's backend on PostgreSQL, SERIALIZABLE (not CockroachDB)"
    crdb_sql=$(mktemp)
    status=0
    GQL_AUDIT_TEST_DB=cockroachdb GQL_AUDIT_CRDB_SQL_LOG="$crdb_sql" run_pytest "$@" || status=$?
    if [ "$status" -eq 0 ]; then
        echo "== every statement of that pass, parsed by CockroachDB's parser (crdbparse)"
        "$PY" -m tests.crdb_on_postgres.check "$crdb_sql" || status=$?
    fi
    rm -f "$crdb_sql"
    return $status
}

step_release() {
    echo "== release: python -m build (sdist and wheel), twine check --strict"
    dist=$(mktemp -d)
    log=$(mktemp)
    if ! "$PY" -m build --outdir "$dist" . >"$log" 2>&1; then
        cat "$log"
        return 1
    fi
    "$VENV/bin/twine" check --strict "$dist"/*
    rm -rf "$dist" "$log"
}

# graphene 3.4 keeps graphql-core below 3.3: the tests of gql_audit's graphql-core-level
# code (marked graphql_core) run again with 3.3 forced in, and 3.2 is put back after.
step_graphql_core_33() {
    echo "== gql_audit's graphql-core-level code on graphql-core 3.3 (SQLite)"
    "$PY" -m pip install --quiet --no-deps "graphql-core~=3.3.0"
    status=0
    GQL_AUDIT_TEST_DB=sqlite run_pytest -m graphql_core "$@" || status=$?
    "$PY" -m pip install --quiet "graphql-core<3.3"
    return $status
}

run_pytest() {
    # Most of a quick run waits on servers and processes: four workers keep two cores
    # busy. The full profile's stress tests measure under load: two there.
    if [ "${CI:-}" = "true" ] || [ "${GQL_AUDIT_TEST_PROFILE:-}" = "full" ]; then
        workers=${GQL_AUDIT_TEST_WORKERS:-2}
    else
        workers=${GQL_AUDIT_TEST_WORKERS:-4}
    fi
    if [ "$workers" -gt 0 ]; then
        "$PY" -m pytest -n "$workers" --dist worksteal "$@"
    else
        "$PY" -m pytest "$@"
    fi
}

# --- Run ------------------------------------------------------------------------------------

if [ -n "${DJANGO:-}" ]; then
    ensure_venv dev "Django~=$DJANGO.0"
else
    ensure_venv dev
fi
"$PY" -c 'import sys, django; print(f"== Python {sys.version.split()[0]}, Django {django.__version__} ({sys.executable})")'

if [ -z "${STEPS:-}" ]; then
    STEPS="checks sqlite"
    if [ -n "${PGHOST:-}" ] || [ "${CI:-}" = "true" ]; then
        STEPS="$STEPS postgres postgres_prepared cockroachdb"
    else
        no_postgres=1
    fi
fi
for step in $STEPS; do
    started=$(date +%s)
    "step_$step" "$@"
    echo "== $step: $(($(date +%s) - started)) s"
done
if [ -n "${no_postgres:-}" ]; then
    echo "== PostgreSQL pass not run: no server configured."
    echo "   Set PGHOST, PGPORT, PGUSER, PGPASSWORD (a role with CREATEDB) to run it,"
    echo "   or run 'sudo .ci/run', which installs and starts Debian's PostgreSQL."
fi
