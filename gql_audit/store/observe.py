"""Who is told of every row the store writes (``gql_audit.testing.capture()`` listens here)."""

from __future__ import annotations

from typing import Any

#: Callables told of every row written: ``(kind, alias, rows)`` with ``kind`` one of
#: ``"reads"`` (``RequestReads``), ``"access"`` (ACCESS ``LogEntry``), ``"events"``, or
#: ``"access_cid"`` (the correlation id of ACCESS entries written without objects).
#: Empty, it costs one truthiness test.
observers: list[Any] = []


def notify(kind: str, alias: str, rows: list[Any]) -> None:
    for observer in list(observers):
        observer(kind, alias, rows)
