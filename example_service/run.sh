#!/bin/sh
# Run the gql_audit example service: creates .venv, installs, migrates, seeds, serves.
# SQLite by default; DATABASE_URL=postgres://... or cockroach://... for a server.
# Installs only on the first run, or when pyproject.toml or the extras changed
# (a stamp in .venv holds their hash); later starts take a few seconds.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
case "${DATABASE_URL:-}" in
    cockroach*) EXTRAS="example,cockroachdb" ;;
    *) EXTRAS="example" ;;
esac
STAMP=.venv/.gql_audit_example_installed
WANTED="$( (cat pyproject.toml; echo "$EXTRAS") | sha256sum | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANTED" ]; then
    echo "Installing gql_audit[$EXTRAS] into .venv (once; again only when pyproject.toml changes)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e ".[$EXTRAS]"
    echo "$WANTED" > "$STAMP"
fi
ADDR="${EXAMPLE_ADDR:-127.0.0.1:8000}"
# Migrate and seed in one start-up; both idempotent: nothing to apply or create costs a moment.
.venv/bin/python example_service/manage.py seed_demo --migrate --url "http://$ADDR"
exec .venv/bin/python example_service/manage.py runserver "$ADDR"
