# shellcheck shell=sh
# Sourced by tests/run.sh, example_service/run.sh and docs/serve.sh (from the checkout's root).
#
# ensure_venv EXTRAS [PIP ARGUMENT ...]: make sure $VENV (default .venv) exists, made by
# $PYTHON (default python3), and holds this checkout installed in editable mode with
# EXTRAS (e.g. "dev" or "example,cockroachdb") and the other pip arguments (e.g. a
# constraint "Django~=6.1.0"). Installs only the first time, and again when
# pyproject.toml or the arguments change: a stamp in $VENV holds their checksum.
# Sets PY to the environment's interpreter.

ensure_venv() {
    extras=$1
    shift
    VENV=${VENV:-.venv}
    if [ ! -x "$VENV/bin/python" ]; then
        "${PYTHON:-python3}" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
    stamp="$VENV/.gql_audit-installed-$(echo "$extras" | tr ',' '-')"
    wanted=$( (cat pyproject.toml; echo "$extras $*") | cksum)
    if [ "$(cat "$stamp" 2>/dev/null || true)" != "$wanted" ]; then
        echo "Installing gql_audit[$extras] $* into $VENV (once; again only when pyproject.toml changes)"
        # --no-compile: Python compiles what it imports when it imports it; compiling
        # every file of every package up front takes a third of the install's time.
        "$PY" -m pip install --quiet --no-compile -e ".[$extras]" "$@"
        echo "$wanted" > "$stamp"
    fi
}
