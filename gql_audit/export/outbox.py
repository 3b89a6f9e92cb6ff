"""The outbox: one row a record to export, written in the same write as the record.

The store calls :func:`stage` inside the transaction that writes a request's records,
and :func:`rows` for the one statement that writes them on PostgreSQL; auditlog's own
change entries are staged as they are saved (:func:`stage_entry`). With ``EXPORT``
unset each costs one test.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connections
from django.db.models import Model
from django.utils import timezone

from gql_audit.conf import conf
from gql_audit.models import OutboxEvent


def enabled() -> bool:
    """Whether records are put in the outbox (``EXPORT`` names at least one sink)."""
    export = conf.EXPORT
    return bool(export and export.get("sinks"))


def rows(written: Mapping[str, Iterable[Any]]) -> list[OutboxEvent]:
    """Outbox rows for the records ``{kind: rows or primary keys}`` (none when ``EXPORT`` is unset)."""
    if not enabled():
        return []
    now = timezone.now()
    return [
        OutboxEvent(at=now, kind=kind, record_id=str(item.pk if isinstance(item, Model) else item))
        for kind, items in written.items()
        for item in items
    ]


def stage(alias: str, written: Mapping[str, Iterable[Any]]) -> None:
    """Put the records just written in the outbox, in the caller's transaction (one statement)."""
    found = rows(written)
    if found:
        OutboxEvent.objects.using(alias).bulk_create(found)


def stage_entry(alias: str, pk: Any) -> None:
    """An auditlog entry auditlog itself just saved (a change, or an ACCESS entry outside a request):
    in its transaction when it has one."""
    if enabled():
        insert_together(alias, rows({"entry": [pk]}))


def insert_together(alias: str, instances: Sequence[Model]) -> None:
    """Unsaved rows (of any tables) in one statement where the database allows (a data-modifying
    ``WITH`` on PostgreSQL and CockroachDB), else one by one in one transaction."""
    from django.db import transaction

    from gql_audit.dbcontext import POSTGRES_VENDORS
    from gql_audit.evidence.sealing import insert_clause, with_inserts

    if not instances:
        return
    connection = connections[alias]
    if connection.vendor not in POSTGRES_VENDORS or len(instances) == 1:
        with transaction.atomic(using=alias, savepoint=False):
            for instance in instances:
                instance.save(using=alias, force_insert=True)
        return
    inserts, params = with_inserts(connection, instances[:-1])
    sql, values = insert_clause(connection, instances[-1])
    with connection.cursor() as cursor:
        cursor.execute(f"{inserts} {sql}", [*params, *values])
