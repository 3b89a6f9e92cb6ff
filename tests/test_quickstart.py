"""Follow docs/quickstart.md step by step (tests/pages.py reads its marked blocks).

The example service runs as ``example_service/run.sh`` runs it, with this run's
interpreter, on a SQLite file of the test's own and a free port in place of 8000;
the page's curl commands are sent to it as they are, and its outputs compared.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pages import free_port, run_block, steps, wait_for

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "docs" / "quickstart.md"


def test_the_quickstart_marks_its_steps():
    found = steps(QUICKSTART.read_text(), "quickstart")
    assert [s.action for s in found].count("server") == 1 and found[0].action == "server"
    assert {s.action for s in found} == {"server", "run", "output", "python"}


@pytest.mark.server
@pytest.mark.skipif(shutil.which("curl") is None and os.environ.get("CI") != "true", reason="needs curl")
def test_following_the_quickstart(tmp_path):
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GQL_AUDIT_", "EXAMPLE_"))},
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "EXAMPLE_SQLITE_PATH": str(tmp_path / "example.sqlite3"),
    }

    def here(text: str) -> str:
        return text.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace(".venv/bin/python", sys.executable)

    server = None
    server_output = tmp_path / "server.log"
    last_output = None
    try:
        for step in steps(QUICKSTART.read_text(), "quickstart"):
            if step.action == "server":
                assert step.text.split("#")[0].strip() == "./example_service/run.sh"
                # What run.sh does once .venv is installed: migrate and seed, then serve.
                manage = [sys.executable, "example_service/manage.py"]
                subprocess.run([*manage, "seed_demo", "--migrate", "--quiet"], cwd=ROOT, env=env, check=True)
                server = subprocess.Popen(
                    [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
                    cwd=ROOT,
                    env=env,
                    stdout=server_output.open("wb"),
                    stderr=subprocess.STDOUT,
                )
                wait_for(f"http://127.0.0.1:{port}/health/", server)
            elif step.action == "run":
                last_output = run_block(here(step.text), ROOT, env, tmp_path / ".quickstart-variables")
            elif step.action == "output":
                assert last_output is not None, "an output block follows no run block"
                assert last_output.strip() == step.text.strip()
                last_output = None
            elif step.action == "python":
                # As settings.py runs it: before Django is configured, then given to dictConfig.
                probe = "import logging, logging.config\nlogging.config.dictConfig(LOGGING)\n"
                probe += "logging.getLogger('gql_audit.quickstart').info('configured')\n"
                done = subprocess.run(
                    [sys.executable, "-c", step.text + probe], cwd=tmp_path, env=env, capture_output=True, text=True
                )
                assert done.returncode == 0, done.stderr
                assert json.loads(done.stdout.splitlines()[-1])["message"] == "configured"
        assert server is not None
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    # "Each with the request's request_id": the development server's own lines too.
    lines = [json.loads(line) for line in server_output.read_text().splitlines() if line.startswith("{")]
    served = [line for line in lines if line["logger"] == "django.server"]
    operations = {line["request_id"] for line in lines if line["logger"] == "gql_audit.request"}
    posts = [line for line in served if line["message"].startswith('"POST /graphql/')]
    assert len(posts) == 4 and len(operations) == 4
    assert all(line["request_id"] for line in served)
    assert {line["request_id"] for line in posts} == operations
