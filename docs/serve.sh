#!/bin/sh
# Serve this documentation as a site at http://127.0.0.1:8001/ (DOCS_ADDR to change it),
# rebuilt as pages change: creates .venv and installs what the site needs the first time
# (no need to have run the tests first); a port apart from the example service's 8000.
set -eu
cd "$(dirname "$0")/.."
. scripts/venv.sh
ensure_venv docs
NO_MKDOCS_2_WARNING=1 exec "$VENV/bin/mkdocs" serve --dev-addr "${DOCS_ADDR:-127.0.0.1:8001}"
