"""The audit trail in a service's own tests.

::

    from gql_audit.testing import capture

    def test_reading_a_document_is_audited(client, alice, document):
        with capture() as trail:
            client.post("/graphql/", {"query": "{ documents { title } }"}, content_type="application/json",
                        headers={"Authorization": f"JWT {token_for(alice)}"})
        (read,) = trail.reads
        assert (read.model, read.object_pk, read.fields) == ("docs.Document", str(document.pk), ["title"])
        assert read.actor == {"id": alice.pk, "username": "alice"}
        assert not trail.events.filter(kind="graphql_error").exists()

``capture()`` collects what is written while the block runs, from any thread
(a live server's too), in either access store: nothing is mocked, the records
are the rows the service wrote, read back when asked for, so a change entry
whose transaction rolled back is not among them.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from django.db.models import QuerySet
from django.db.models.signals import post_save

from gql_audit import store
from gql_audit.history import Read, reads_in_row, reads_of_entries
from gql_audit.models import RequestReads, SecurityEvent

__all__ = ["Captured", "capture"]

_ids = itertools.count()


@dataclass
class Captured:
    """What was recorded inside a :func:`capture` block: the shapes of
    :func:`gql_audit.history.request_trail`, over every request of the block."""

    alias: str
    _reads: list[Any] = field(default_factory=list)
    _access: list[Any] = field(default_factory=list)
    _access_cids: list[str] = field(default_factory=list)
    _changes: list[Any] = field(default_factory=list)
    _events: list[Any] = field(default_factory=list)

    @property
    def reads(self) -> list[Read]:
        """The reads, in the order they were written (a request's in model and key order)."""
        from auditlog import get_logentry_model
        from django.db.models import Q

        LogEntry = get_logentry_model()
        rows = {row.pk: row for row in RequestReads.objects.using(self.alias).filter(pk__in=self._reads)}
        reads = [read for pk in self._reads if pk in rows for read in reads_in_row(rows[pk])]
        if self._access or self._access_cids:
            access = (
                LogEntry.objects.using(self.alias)
                .filter(action=LogEntry.Action.ACCESS)
                .filter(Q(pk__in=self._access) | Q(cid__in=self._access_cids))
                .select_related("content_type")
                .order_by("timestamp", "pk")
            )
            reads.extend(reads_of_entries(access))
        return reads

    @property
    def changes(self) -> QuerySet[Any]:
        """The change entries (auditlog ``LogEntry`` other than ACCESS) that are in the database."""
        from auditlog import get_logentry_model

        entries: QuerySet[Any] = get_logentry_model().objects.using(self.alias)
        # By time: keys are not ordered on CockroachDB (unordered_unique_rowid()).
        return entries.filter(pk__in=self._changes).order_by("timestamp", "pk")

    @property
    def events(self) -> QuerySet[SecurityEvent]:
        """The security events written to the database (``EVENT_SINK`` ``"logs"`` writes none)."""
        return SecurityEvent.objects.using(self.alias).filter(pk__in=self._events).order_by("created_at")


@contextmanager
def capture() -> Iterator[Captured]:
    """Collect the reads, change entries and security events recorded inside the block."""
    from auditlog import get_logentry_model

    LogEntry = get_logentry_model()
    captured = Captured(alias=store.audit_alias())
    targets = {"reads": captured._reads, "access": captured._access, "events": captured._events}

    def written(kind: str, alias: str, rows: list[Any]) -> None:
        if kind == "access_cid":
            captured._access_cids.extend(rows)
        elif kind in targets:
            targets[kind].extend(row.pk for row in rows)

    def saved(sender: Any, instance: Any, created: bool, **kwargs: Any) -> None:
        if created:
            (captured._access if instance.action == LogEntry.Action.ACCESS else captured._changes).append(instance.pk)

    uid = f"gql_audit.testing.capture.{next(_ids)}"
    store.observers.append(written)
    post_save.connect(saved, sender=LogEntry, weak=False, dispatch_uid=uid)
    try:
        yield captured
    finally:
        post_save.disconnect(sender=LogEntry, dispatch_uid=uid)
        store.observers.remove(written)
