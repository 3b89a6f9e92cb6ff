"""gql_audit_purge: exactly what is older than the cut-off, in bounded batches."""

from __future__ import annotations

import datetime
import io
import re

import pytest
from auditlog.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import SecurityEvent
from tests.conftest import sized

pytestmark = pytest.mark.django_db


def make_rows(access_old, access_new, events_old, events_new):
    now = timezone.now()
    old, new = now - datetime.timedelta(days=100), now - datetime.timedelta(days=10)
    content_type = ContentType.objects.get_for_model(SecurityEvent)

    def entry(i, when):
        return LogEntry(
            content_type=content_type,
            object_pk=str(i),
            object_id=i,
            object_repr=f"#{i}",
            action=LogEntry.Action.ACCESS,
            timestamp=when,
        )

    LogEntry.objects.bulk_create(
        [entry(i, old) for i in range(access_old)] + [entry(i, new) for i in range(access_new)], batch_size=5000
    )
    # A CREATE entry as old as the oldest: purge touches ACCESS entries only.
    LogEntry.objects.create(content_type=content_type, object_pk="x", object_repr="x", action=0, timestamp=old)
    SecurityEvent.objects.bulk_create(
        [SecurityEvent(created_at=old, kind="token_invalid", severity="warning") for _ in range(events_old)]
        + [SecurityEvent(created_at=new, kind="token_invalid", severity="warning") for _ in range(events_new)]
        + [SecurityEvent(created_at=old, kind="db_retry", severity="warning")],
        batch_size=5000,
    )


def purge(*args):
    out = io.StringIO()
    with CaptureQueriesContext(connection) as queries:
        call_command("gql_audit_purge", *args, stdout=out)
    deletes = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("DELETE FROM")]
    return out.getvalue(), deletes


def test_purge_in_batches():
    n = sized(10_000, 1_000)  # 100,000 rows in the full profile
    make_rows(access_old=6 * n, access_new=3 * n, events_old=6 * n // 10, events_new=4 * n // 10 - 1)
    assert LogEntry.objects.count() + SecurityEvent.objects.count() == 10 * n + 1
    batch = 7 * n // 10
    output, deletes = purge("--older-than", "90d", "--batch-size", str(batch))
    batches = [int(size) for size in re.findall(r"batch of (\d+)", output)]
    assert all(0 < size <= batch for size in batches)
    assert sum(batches) == 6 * n + 6 * n // 10 + 1
    assert len(deletes) == len(batches) > 2  # one DELETE statement per batch
    assert f"access entries: deleted {6 * n}" in output and f"security events: deleted {6 * n // 10 + 1}" in output
    assert LogEntry.objects.filter(action=LogEntry.Action.ACCESS).count() == 3 * n
    assert LogEntry.objects.filter(action=0).count() == 1
    assert SecurityEvent.objects.count() == 4 * n // 10 - 1
    assert not LogEntry.objects.filter(action=3, timestamp__lt=timezone.now() - datetime.timedelta(days=90)).exists()
    output, deletes = purge("--older-than", "90d", "--batch-size", str(batch))
    assert deletes == [] and "deleted 0" in output


def test_kind_and_dry_run():
    make_rows(access_old=5, access_new=0, events_old=3, events_new=0)
    output, deletes = purge("--older-than", "30d", "--dry-run")
    assert deletes == [] and "security events: would delete 4" in output and "access entries: would delete 5" in output
    output, _ = purge("--older-than", "30d", "--kind", "db_retry")
    assert "security events: deleted 1" in output and "access entries" not in output
    assert SecurityEvent.objects.count() == 3 and LogEntry.objects.filter(action=3).count() == 5
    output, _ = purge("--older-than", "30d", "--kind", "access")
    assert "access entries: deleted 5" in output and SecurityEvent.objects.count() == 3


@pytest.mark.parametrize(
    "bad",
    [
        ["--older-than", "90"],
        ["--older-than", "0d"],
        ["--older-than", "x"],
        ["--older-than", "9d", "--batch-size", "0"],
    ],
)
def test_bad_arguments_are_clear_errors(bad):
    with pytest.raises(CommandError):
        call_command("gql_audit_purge", *bad)


def test_units_mean_one_thing_and_a_dry_run_deletes_nothing_nor_says_it_does():
    """``6m`` meant six minutes, where an operator may mean six months: refused, with the
    two spellings that say which. A dry run never prints "Deleting"; progress shows the total."""
    make_rows(access_old=3, access_new=0, events_old=5, events_new=0)
    with pytest.raises(CommandError, match="'min' or 'mo'"):
        call_command("gql_audit_purge", "--older-than", "6m")
    output, deletes = purge("--older-than", "2mo", "--dry-run")  # 60 days: the rows are 100 days old
    assert deletes == [] and "Deleting" not in output and "dry run, nothing is deleted" in output
    assert "security events: would delete 6" in output and "access entries: would delete 3" in output
    output, _ = purge("--older-than", "1440min", "--batch-size", "2")
    assert "security events: batch of 2, 2 of 6" in output and "security events: deleted 6 of 6" in output
    assert SecurityEvent.objects.count() == 0


def test_purge_the_gql_audit_store(client, users, settings):
    from gql_audit.history import reads_of
    from gql_audit.models import ReadObject, RequestReads
    from gql_audit.store import index
    from tests.conftest import post_graphql

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    for n in range(4):
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": f"p-{n}"})
        if n == 1:
            index.catch_up("default")  # p-0 and p-1 indexed, p-2 and p-3 still queued
    doc = users["alice"].documents.get(classification="public")
    assert len(reads_of(doc)) == 4
    old = RequestReads.objects.filter(request_id__in=["p-0", "p-1", "p-2"])
    ReadObject.objects.filter(reads_id__in=old.values("id")).update(at=timezone.now() - datetime.timedelta(days=100))
    old.update(at=timezone.now() - datetime.timedelta(days=100))
    output, _ = purge("--older-than", "90d", "--kind", "access", "--batch-size", "1")
    assert "requests' reads: deleted 3" in output
    assert [r.request_id for r in reads_of(doc)] == ["p-3"]
    assert RequestReads.objects.count() == 1
    # Where the database has no array index, the object index goes with its rows, and a
    # row purged while queued leaves nothing behind.
    index.catch_up("default")
    assert ReadObject.objects.count() == (0 if connection.vendor in POSTGRES_VENDORS else 3)
    assert [r.request_id for r in reads_of(doc)] == ["p-3"]


@pytest.mark.postgres
def test_reads_of_uses_the_object_index_on_postgresql(client, users, settings):
    from gql_audit.history import reads_of
    from gql_audit.models import RequestReads

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    doc = users["alice"].documents.get(classification="public")
    queryset = RequestReads.objects.order_by().filter(keys__contains=[f"example_service.document:{doc.pk}"])
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        plan = queryset.explain()
    assert "gql_audit_requestreads_keys_gin" in plan
    assert reads_of(doc) == []


class StopAfterFirstBatch(io.StringIO):
    """A stdout that interrupts the purge when it reports its first batch."""

    def write(self, text):
        if "batch of" in text:
            raise KeyboardInterrupt
        return super().write(text)


@pytest.mark.parametrize("kind", ["token_invalid", "access"])
def test_an_interrupted_purge_has_deleted_the_oldest_first(kind, settings):
    """Each batch takes the oldest rows: retention only ever takes the oldest records."""
    from gql_audit.models import RequestReads

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    now = timezone.now()
    ages = [400, 100, 300, 200, 150, 250]  # days, not in order of insertion
    for n, age in enumerate(ages):
        when = now - datetime.timedelta(days=age)
        SecurityEvent.objects.create(created_at=when, kind="token_invalid", severity="warning", request_id=f"e{age}")
        RequestReads.objects.create(at=when, request_id=f"r{age}", keys=[f"auth.user:{n}"], shape_of=[0])
    with pytest.raises(KeyboardInterrupt):
        call_command(
            "gql_audit_purge", "--older-than", "90d", "--kind", kind, "--batch-size", "2", stdout=StopAfterFirstBatch()
        )
    if kind == "access":
        left = sorted(RequestReads.objects.values_list("request_id", flat=True))
        assert left == sorted(f"r{age}" for age in ages if age not in (400, 300))
    else:
        left = sorted(SecurityEvent.objects.values_list("request_id", flat=True))
        assert left == sorted(f"e{age}" for age in ages if age not in (400, 300))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("outbox_read", ["once", "per batch"])
def test_a_record_not_yet_shipped_is_kept_and_the_purge_of_its_kind_stops_there(outbox_read, monkeypatch):
    """With EXPORT, a record still in the outbox has not reached every sink: deleting it
    would lose it from the SIEM. The purge deletes the older records of its kind, stops
    at it (it and the newer ones wait for the next purge), and says so; the reads' object
    index follows its rows. Other kinds are purged as usual. A small outbox is read once,
    a large one asked batch by batch."""
    from gql_audit.evidence.sealing import insert
    from gql_audit.management.commands import gql_audit_purge

    if outbox_read == "per batch":
        monkeypatch.setattr(gql_audit_purge, "OUTBOX_IN_MEMORY", 1)
    from gql_audit.models import OutboxEvent, ReadObject, RequestReads

    old = timezone.now() - datetime.timedelta(days=100)
    events = [
        SecurityEvent.objects.create(created_at=old + datetime.timedelta(seconds=n), kind="token_invalid")
        for n in range(5)
    ]
    reads = []
    for n in range(3):
        row = RequestReads(at=old + datetime.timedelta(seconds=n), request_id=f"r{n}", keys=["a.b:1"], shape_of=[0])
        row.shapes = [{"fields": ["id"], "paths": ["b"]}]
        insert(connection.alias, row)
        ReadObject.objects.create(reads_id=row.pk, key="a.b:1", at=row.at)
        reads.append(row)
    entry = LogEntry.objects.create(
        content_type=ContentType.objects.get_for_model(SecurityEvent),
        object_pk="1",
        object_repr="#1",
        action=LogEntry.Action.ACCESS,
        timestamp=old,
    )
    waiting = [("event", events[2].pk), ("event", events[4].pk), ("reads", reads[1].pk)]
    OutboxEvent.objects.bulk_create([OutboxEvent(at=old, kind=kind, record_id=str(pk)) for kind, pk in waiting])

    dry, _ = purge("--older-than", "30d", "--dry-run")
    assert "security events: would delete 5 (2 'event' records wait in the outbox, not yet shipped" in dry
    assert "requests' reads: would delete 3 (1 'reads' records wait in the outbox" in dry
    assert "access entries: would delete 1\n" in dry

    output, _ = purge("--older-than", "30d", "--batch-size", "2")
    assert set(SecurityEvent.objects.values_list("pk", flat=True)) == {e.pk for e in events[2:]}
    assert set(RequestReads.objects.values_list("pk", flat=True)) == {r.pk for r in reads[1:]}
    assert set(ReadObject.objects.values_list("reads_id", flat=True)) == {r.pk for r in reads[1:]}
    assert not LogEntry.objects.filter(pk=entry.pk).exists()  # nothing of its kind waits: purged
    assert f"security events: stopped at a record of {events[2].created_at.isoformat()} not yet shipped" in output
    assert "security events: deleted 2 of 5" in output and "requests' reads: deleted 1 of 3" in output

    # Shipped since: the next purge takes them.
    OutboxEvent.objects.all().delete()
    purge("--older-than", "30d")
    assert not SecurityEvent.objects.exists() and not RequestReads.objects.exists() and not ReadObject.objects.exists()
