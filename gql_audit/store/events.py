"""Security event rows."""

from __future__ import annotations

from typing import Any

from gql_audit.models import SecurityEvent
from gql_audit.store.observe import notify, observers


def insert_events(events: list[dict[str, Any]], alias: str) -> list[SecurityEvent]:
    """Insert ``events`` (one statement); the rows as written."""
    rows = SecurityEvent.objects.using(alias).bulk_create([SecurityEvent(**event) for event in events])
    if observers:
        notify("events", alias, rows)
    return rows
