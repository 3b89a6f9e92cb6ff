"""Every statement the CockroachDB-backend pass sent, parsed by CockroachDB's own parser.

    python -m tests.crdb_on_postgres.check LOG

``LOG`` is the file ``GQL_AUDIT_CRDB_SQL_LOG`` named during the pass. Each distinct
statement goes to ``crdbparse`` (CockroachDB 25.2's parser; ``CRDBPARSE`` names the
binary, default ``../shared/tools/crdbparse/crdbparse``), which also renders what it
understood; a statement that parses but does what CockroachDB documents as
unsupported (:data:`LIMITATIONS`) is refused here. Exit status 0 only when nothing
was refused; the counts are printed either way.

Parsing is not executing: a statement that parses can still fail on a cluster.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.crdb_on_postgres.base import SEPARATOR

DEFAULT_CRDBPARSE = Path(__file__).resolve().parents[3] / "shared" / "tools" / "crdbparse" / "crdbparse"

#: What the grammar accepts and CockroachDB refuses: (why, pattern on crdbparse's rendering).
LIMITATIONS = (
    (
        "ALTER COLUMN TYPE combined with other ALTER TABLE changes in one statement "
        "(https://www.cockroachlabs.com/docs/stable/alter-table#known-limitations)",
        re.compile(
            r"^ALTER TABLE .*(SET DATA TYPE .*, (ALTER|ADD|DROP|RENAME|VALIDATE|SET|RESET)\b"
            r"|, ALTER COLUMN \S+ SET DATA TYPE )",
            re.S,
        ),
    ),
)


def statements(log: Path) -> list[str]:
    """The distinct statements of the log, in the order first sent."""
    blocks = log.read_text(encoding="utf-8").split(SEPARATOR)
    return [block for block in dict.fromkeys(blocks) if block.strip()]


def parse(found: list[str], crdbparse: str) -> list[dict[str, object]]:
    """crdbparse's verdict on each statement, in order."""
    marker = SEPARATOR.strip()
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".sql", delete=False) as batch:
        batch.write(("\n" + marker + "\n").join(found) + "\n")
    try:
        done = subprocess.run(
            [crdbparse, "-json", "-format", "-sep", marker, batch.name],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        os.unlink(batch.name)
    if done.returncode not in (0, 1):
        raise SystemExit(f"crdbparse could not read the statements (exit {done.returncode}): {done.stderr.strip()}")
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    if len(results) != len(found):
        raise SystemExit(f"crdbparse answered {len(results)} times for {len(found)} statements")
    return results


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    crdbparse = os.environ.get("CRDBPARSE") or str(DEFAULT_CRDBPARSE)
    if not os.access(crdbparse, os.X_OK):
        print(f"crdbparse not found at {crdbparse} (set CRDBPARSE)", file=sys.stderr)
        return 2
    found = statements(Path(argv[0]))
    if not found:
        print("no statement was recorded: the pass did not run through tests.crdb_on_postgres", file=sys.stderr)
        return 2
    refused = 0
    for sql, result in zip(found, parse(found, crdbparse), strict=True):
        if not result["ok"]:
            refused += 1
            print(f"REFUSED by CockroachDB's parser: {result.get('code')} {result.get('error')}\n  {sql[:2000]}\n")
            continue
        rendered = str(result.get("formatted", ""))
        for why, pattern in LIMITATIONS:
            if pattern.search(rendered):
                refused += 1
                print(f"REFUSED, a documented CockroachDB limitation: {why}\n  {sql[:2000]}\n")
    print(
        f"crdbparse (CockroachDB 25.2's parser): {len(found)} distinct statements checked, "
        f"{len(found) - refused} accepted, {refused} refused. Parsing is not executing: see docs/databases.md."
    )
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
