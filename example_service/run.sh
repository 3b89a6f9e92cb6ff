#!/bin/sh
# Run the gql_audit example service: creates .venv, installs, migrates, seeds, serves.
# SQLite by default; DATABASE_URL=postgres://... or cockroach://... for a server.
# Installs only on the first run, or when pyproject.toml or the extras changed
# (a stamp in .venv holds their checksum); later starts take a few seconds.
set -eu
cd "$(dirname "$0")/.."
. scripts/venv.sh
case "${DATABASE_URL:-}" in
    cockroach*) EXTRAS="example,cockroachdb" ;;
    *) EXTRAS="example" ;;
esac
ensure_venv "$EXTRAS"
ADDR="${EXAMPLE_ADDR:-127.0.0.1:8000}"
# Migrate and seed in one start-up; both idempotent: nothing to apply or create costs a moment.
"$PY" example_service/manage.py seed_demo --migrate --url "http://$ADDR"
exec "$PY" example_service/manage.py runserver "$ADDR"
