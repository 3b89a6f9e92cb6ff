#!/bin/sh
# Run the gql_audit example service: creates .venv, installs, migrates, seeds, serves.
# SQLite by default; DATABASE_URL=postgres://... or cockroach://... for a server.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
case "${DATABASE_URL:-}" in
    cockroach*) EXTRAS="example,cockroachdb" ;;
    *) EXTRAS="example" ;;
esac
.venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
ADDR="${EXAMPLE_ADDR:-127.0.0.1:8000}"
.venv/bin/python example_service/manage.py migrate --no-input --verbosity 0
.venv/bin/python example_service/manage.py seed_demo --url "http://$ADDR"
exec .venv/bin/python example_service/manage.py runserver "$ADDR"
