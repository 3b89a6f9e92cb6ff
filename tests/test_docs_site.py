"""``docs/serve.sh`` serves the documentation from a fresh clone: no virtual
environment yet, the tests never run; it installs what the site needs itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.pages import free_port, wait_for
from tests.test_packaging import OFFLINE

ROOT = Path(__file__).resolve().parent.parent

#: What a fresh clone does not have.
NOT_CLONED = shutil.ignore_patterns(
    ".git", ".venv*", "__pycache__", "*.egg-info", "build", "dist", "site", ".tmp", ".*_cache", ".hypothesis"
)


@pytest.mark.index
@pytest.mark.venv
@pytest.mark.server
def test_docs_serve_works_in_a_fresh_clone(tmp_path):
    clone = shutil.copytree(ROOT, tmp_path / "clone", ignore=NOT_CLONED)
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GQL_AUDIT_", "VENV"))},
        "PYTHON": sys.executable,
        "DOCS_ADDR": f"127.0.0.1:{port}",
    }
    log = tmp_path / "serve.log"
    server = subprocess.Popen(["./docs/serve.sh"], cwd=clone, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        try:
            wait_for(f"http://127.0.0.1:{port}/", server, timeout=600)
        except AssertionError:
            output = log.read_text()
            if os.environ.get("CI") != "true" and any(word in output for word in OFFLINE):
                pytest.skip(f"needs the package index (pip could not reach it): {output.strip().splitlines()[-1]}")
            raise AssertionError(output[-4000:]) from None
        page = urllib.request.urlopen(f"http://127.0.0.1:{port}/quickstart/", timeout=30).read().decode()  # noqa: S310
        assert "<title>Quickstart - gql_audit</title>" in page
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert (clone / ".venv" / "bin" / "mkdocs").exists()
