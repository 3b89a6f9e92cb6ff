#!/bin/sh
# Run the gql_audit example service on SQLite: creates .venv, installs, migrates, seeds, serves.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e .
ADDR="${EXAMPLE_ADDR:-127.0.0.1:8000}"
.venv/bin/python example_service/manage.py migrate --no-input --verbosity 0
.venv/bin/python example_service/manage.py seed_demo --url "http://$ADDR"
exec .venv/bin/python example_service/manage.py runserver "$ADDR"
