"""Follow docs/tutorial.md step by step (tests/pages.py reads its marked blocks).

The test builds the project in a temporary directory, on SQLite, with this
checkout's gql_audit, a free port in place of 8000, and real HTTP requests made
by curl.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pages import free_port, run_block, steps, wait_for

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"


def test_the_tutorial_marks_its_steps():
    found = steps(TUTORIAL.read_text(), "tutorial")
    assert [s.action for s in found].count("server") == 1
    assert {s.action for s in found} == {"run", "file", "append", "server", "output"}


@pytest.mark.server
@pytest.mark.skipif(shutil.which("curl") is None and os.environ.get("CI") != "true", reason="needs curl")
def test_following_the_tutorial_gives_an_audited_service(tmp_path):
    port = free_port()
    bin_dir = Path(sys.executable).parent
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "GQL_AUDIT_"))},
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": "",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    server = None
    last_output = None
    try:
        for step in steps(TUTORIAL.read_text(), "tutorial"):
            text = step.text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if step.action == "file":
                (tmp_path / step.path).write_text(text)
            elif step.action == "append":
                with (tmp_path / step.path).open("a") as file:
                    file.write("\n" + text)
            elif step.action == "run":
                last_output = run_block(text, tmp_path, env, tmp_path / ".tutorial-variables")
            elif step.action == "output":
                assert last_output is not None, "an output block follows no run block"
                assert last_output.strip() == text.strip()
                last_output = None
            elif step.action == "server":
                assert text.strip() == "python manage.py runserver"
                server = subprocess.Popen(
                    [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"],
                    cwd=tmp_path,
                    env=env,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                )
                wait_for(f"http://127.0.0.1:{port}/graphql/", server)
        assert server is not None
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
    # Beyond what the page shows: the service's own check of who did what.
    check = (
        "from auditlog.models import LogEntry; from gql_audit.models import RequestReads; "
        "entries = list(LogEntry.objects.all()); reads = list(RequestReads.objects.all()); "
        "print(len(entries), {e.actor.username for e in entries}, len(reads), {r.actor['username'] for r in reads})"
    )
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "--verbosity", "0", "-c", check],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert out.strip() == "2 {'alice'} 3 {'alice'}"
