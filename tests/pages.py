"""Following a documentation page step by step: the page and the code cannot drift apart.

A page marks its code blocks with HTML comments that the site does not show,
``<!-- PAGE: ACTION [PATH] -->`` right above the block, PAGE being the page's own
word (``tutorial``, ``quickstart``): ``file PATH`` (write the block to PATH),
``append PATH``, ``run`` (run the shell block), ``output`` (what the previous
``run`` block prints), ``server`` (the command that serves the project) and
``python`` (a settings snippet, run as Python before Django is configured).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ASSIGNED = re.compile(r"^([A-Z_][A-Z0-9_]*)=", re.MULTILINE)


@dataclass
class Step:
    action: str
    path: str | None
    text: str


def steps(markdown: str, page: str) -> list[Step]:
    """The marked blocks of ``markdown``, in order; every marker must be followed by its block."""
    marked = re.compile(rf"<!-- {page}: (\w+)(?: (\S+))? -->\n```[a-z]*\n(.*?)```", re.DOTALL)
    found = [Step(m.group(1), m.group(2), m.group(3)) for m in marked.finditer(markdown)]
    assert len(found) == markdown.count(f"<!-- {page}: "), "a marker not followed by its block is skipped"
    return found


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


def run_block(script: str, cwd: Path, env: dict[str, str], state: Path) -> str:
    """Run a shell block in ``cwd``; variables it assigns (``TOKEN=...``) are kept in
    the file ``state`` for the next blocks, as they would be in the reader's shell."""
    names = ASSIGNED.findall(script)
    keep = "".join(f'\ndeclare -p {name} >> "{state}"' for name in names)
    full = f'set -eu\n[ -f "{state}" ] && . "{state}"\n{script}{keep}\n'
    done = subprocess.run(["bash", "-c", full], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{script}\n--- stdout\n{done.stdout}\n--- stderr\n{done.stderr}"
    return done.stdout
