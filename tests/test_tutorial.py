"""Follow docs/tutorial.md step by step: the page and the code cannot drift apart.

The tutorial marks its code blocks with HTML comments that the site does not
show: ``<!-- tutorial: file PATH -->`` (write the block to PATH),
``<!-- tutorial: append PATH -->``, ``<!-- tutorial: run -->`` (run the shell
block), ``<!-- tutorial: output -->`` (what the previous ``run`` block prints)
and ``<!-- tutorial: server -->`` (the command that serves the project). The test
builds the project in a temporary directory, on SQLite, with this checkout's
gql_audit, a free port in place of 8000, and real HTTP requests made by curl.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parent.parent / "docs" / "tutorial.md"
MARKED_BLOCK = re.compile(r"<!-- tutorial: (\w+)(?: (\S+))? -->\n```[a-z]*\n(.*?)```", re.DOTALL)
ASSIGNED = re.compile(r"^([A-Z_][A-Z0-9_]*)=", re.MULTILINE)


@dataclass
class Step:
    action: str
    path: str | None
    text: str


def steps(markdown: str) -> list[Step]:
    return [Step(m.group(1), m.group(2), m.group(3)) for m in MARKED_BLOCK.finditer(markdown)]


def test_the_tutorial_marks_its_steps():
    found = steps(TUTORIAL.read_text())
    assert [s.action for s in found].count("server") == 1
    assert {s.action for s in found} == {"run", "file", "append", "server", "output"}
    # Every marker is followed by its block: none is silently skipped.
    assert len(found) == TUTORIAL.read_text().count("<!-- tutorial: ")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited: {process.stdout.read().decode() if process.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=2)  # noqa: S310 - a local URL
            return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url}")


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
        for step in steps(TUTORIAL.read_text()):
            text = step.text.replace("127.0.0.1:8000", f"127.0.0.1:{port}")
            if step.action == "file":
                (tmp_path / step.path).write_text(text)
            elif step.action == "append":
                with (tmp_path / step.path).open("a") as file:
                    file.write("\n" + text)
            elif step.action == "run":
                last_output = run_block(text, tmp_path, env)
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


def run_block(script: str, cwd: Path, env: dict[str, str]) -> str:
    """Run a shell block; variables it assigns (``TOKEN=...``) are kept for the next blocks."""
    saved = cwd / ".tutorial-variables"
    names = ASSIGNED.findall(script)
    keep = "".join(f'\ndeclare -p {name} >> "{saved}"' for name in names)
    full = f'set -eu\n[ -f "{saved}" ] && . "{saved}"\n{script}{keep}\n'
    done = subprocess.run(["bash", "-c", full], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout
