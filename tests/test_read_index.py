"""The object index of reads: every read found, the moment it is written, however far the index has got.

On SQLite the index (``ReadObject``) is built in bulk behind ``ReadIndexQueue``, off the
request path; on PostgreSQL the rows index themselves. These tests hold both to the same
answers: a read written a moment ago, a read indexed long ago, a crash in the middle of
indexing, writers and the catch-up running side by side.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from example_service.models import Document
from gql_audit import access, context
from gql_audit import store as audit_store
from gql_audit.evidence.sealing import insert
from gql_audit.evidence.verify import verify
from gql_audit.history import reads_of, reads_of_objects
from gql_audit.models import ReadIndexQueue, ReadObject, RequestReads
from gql_audit.store import index

ROOT = Path(__file__).resolve().parent.parent
SQLITE = os.environ.get("GQL_AUDIT_TEST_DB", "sqlite") == "sqlite"


@pytest.fixture(autouse=True)
def gql_audit_store(settings, monkeypatch):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    # No catch-up after a response unless a test asks for one.
    monkeypatch.setattr(index, "CATCH_UP_KEYS", 10**9)
    index._written.clear()


def write_reads(request_id, objects, *, fields=("title",), user=None):
    """One request's reads of ``objects``, written by the store as the middleware writes them."""
    request = RequestFactory().get("/")
    if user is not None:
        request.user = user
    ctx = context.RequestContext(request_id=request_id, request=request, remote_addr="192.0.2.7", accessed={})
    token = context.bind(ctx)
    try:
        for obj in objects:
            access.track(ctx, obj, type(obj), obj.pk, "documents", frozenset(fields))
        assert audit_store.flush(ctx)
    finally:
        context.reset(token)


def request_ids(reads):
    return [read.request_id for read in reads]


@pytest.fixture
def documents(users):
    return list(Document.objects.order_by("pk"))


@pytest.mark.django_db
def test_a_read_is_found_the_moment_it_is_written_indexed_or_not(documents):
    first, second = documents[:2]
    write_reads("r-0", [first, second], fields=("title", "body"))
    index.catch_up("default")
    write_reads("r-1", [first])
    write_reads("r-2", documents)  # every document, the first two among them
    if SQLITE:
        assert ReadIndexQueue.objects.count() == 2  # r-1 and r-2 wait; r-0 is indexed
        assert ReadObject.objects.count() == 2
    assert request_ids(reads_of(first)) == ["r-2", "r-1", "r-0"]
    assert request_ids(reads_of(second)) == ["r-2", "r-0"]
    assert [read.fields for read in reads_of(first)] == [["title"], ["title"], ["body", "title"]]
    assert request_ids(reads_of(first, limit=2)) == ["r-2", "r-1"]
    many = reads_of_objects(documents[:3])
    assert sorted((r.request_id, r.object_pk) for r in many) == sorted(
        [("r-0", str(first.pk)), ("r-0", str(second.pk)), ("r-1", str(first.pk))]
        + [("r-2", str(d.pk)) for d in documents[:3]]
    )
    # since: the reads written at or after a moment, indexed or not.
    moment = RequestReads.objects.get(request_id="r-1").at
    assert sorted(request_ids(reads_of_objects(documents[:2], since=moment))) == ["r-1", "r-2", "r-2"]
    before = [reads_of(d) for d in documents]
    index.catch_up("default")
    assert sorted(request_ids(reads_of_objects(documents[:2], since=moment))) == ["r-1", "r-2", "r-2"]
    assert [reads_of(d) for d in documents] == before  # the same answers once indexed
    if SQLITE:
        assert ReadIndexQueue.objects.count() == 0
        assert ReadObject.objects.count() == 2 + 1 + len(documents)


@pytest.mark.django_db
def test_reads_of_with_a_limit_takes_the_newest_in_sql_and_loads_no_row_whole(documents):
    doc = documents[0]
    for n in range(30):
        write_reads(f"r-{n}", documents)
        if n == 19:
            index.catch_up("default")  # the first twenty indexed, the last ten queued
    with CaptureQueriesContext(connection) as queries:
        newest = reads_of(doc, limit=12)
    assert request_ids(newest) == [f"r-{n}" for n in range(29, 17, -1)]
    table = RequestReads._meta.db_table
    selected = [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SELECT")]
    # No statement hands back a row's keys or shape_of: the reads are taken from them in the database.
    assert not [sql for sql in selected if f'"{table}"."keys"' in sql or f'"{table}"."shape_of"' in sql]
    assert reads_of(doc)[:12] == newest


@pytest.mark.django_db
def test_the_newest_reads_of_an_object_last_read_long_ago(documents):
    """Many requests since, none reading it: its newest reads are still found, newest first."""
    old, busy = documents[0], documents[1]
    for n in range(3):
        write_reads(f"old-{n}", [old, busy])
    for n in range(40):
        write_reads(f"busy-{n}", [busy])
        if n == 20:
            index.catch_up("default")
    assert request_ids(reads_of(old, limit=2)) == ["old-2", "old-1"]
    assert request_ids(reads_of(busy, limit=3)) == ["busy-39", "busy-38", "busy-37"]
    assert request_ids(reads_of_objects([old, busy], limit=4)) == ["busy-39", "busy-38", "busy-37", "busy-36"]
    assert sorted(request_ids(reads_of_objects([old], limit=10))) == ["old-0", "old-1", "old-2"]


@pytest.mark.django_db
def test_an_object_index_row_naming_an_object_its_row_does_not_hold_adds_no_read(documents):
    """The index only finds candidate rows; the reads come from the rows' own keys."""
    if not SQLITE:
        pytest.skip("PostgreSQL's rows index themselves")
    read, unread = documents[0], documents[1]
    write_reads("r-0", [read])
    index.catch_up("default")
    row = RequestReads.objects.get(request_id="r-0")
    ReadObject.objects.create(reads_id=row.id, key=audit_store.object_key(Document, unread.pk), at=row.at)
    assert reads_of(unread) == []
    assert request_ids(reads_of(read)) == ["r-0"]


@pytest.mark.django_db
def test_a_row_written_by_anyone_is_queued_by_its_own_statement(documents):
    """The trigger queues whatever inserts a row: no write path can leave one out."""
    if not SQLITE:
        pytest.skip("the queue is SQLite's")
    row = RequestReads.objects.create(
        at=timezone.now(),
        request_id="orm",
        keys=[audit_store.object_key(Document, documents[0].pk)],
        shape_of=[0],
        shapes=[{"fields": ["title"], "paths": ["documents"]}],
    )
    assert list(ReadIndexQueue.objects.values_list("reads_id", flat=True)) == [row.id]
    assert request_ids(reads_of(documents[0])) == ["orm"]


@pytest.mark.django_db
def test_the_row_and_its_place_in_the_queue_commit_together(documents):
    """A queue that cannot take the row's place refuses the row itself: never a row the index would miss."""
    if not SQLITE:
        pytest.skip("the queue is SQLite's")
    row = RequestReads(at=timezone.now(), request_id="lost", keys=["example_service.document:1"], shape_of=[0])
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Inside the test's transaction: the table is back when it rolls back.
            cursor.execute(f"DROP TABLE {ReadIndexQueue._meta.db_table}")
        with pytest.raises(OperationalError, match="no such table"):
            insert("default", row)
        assert not RequestReads.objects.filter(request_id="lost").exists()
        transaction.set_rollback(True)


@pytest.mark.django_db
def test_a_catch_up_that_fails_half_way_leaves_everything_queued(documents, monkeypatch):
    """The index rows and the queue's removal commit together: a failure after the first
    statement indexes nothing, and the next catch-up indexes each row once."""
    if not SQLITE:
        pytest.skip("the queue is SQLite's")
    for n in range(3):
        write_reads(f"r-{n}", documents)
    real = connection.cursor

    class Failing:
        def __init__(self):
            self.cursor = real()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.cursor.close()

        def execute(self, sql, params=None):
            if sql.startswith("DELETE"):
                raise OperationalError("disk I/O error")
            return self.cursor.execute(sql, params)

        @property
        def rowcount(self):
            return self.cursor.rowcount

    monkeypatch.setattr(connection, "cursor", Failing)
    with pytest.raises(OperationalError):
        index.catch_up("default")
    monkeypatch.undo()
    assert ReadObject.objects.count() == 0 and ReadIndexQueue.objects.count() == 3
    assert request_ids(reads_of(documents[0])) == ["r-2", "r-1", "r-0"]
    assert index.catch_up("default") == 3
    assert ReadObject.objects.count() == 3 * len(documents)
    assert request_ids(reads_of(documents[0])) == ["r-2", "r-1", "r-0"]


@pytest.mark.django_db(transaction=True)  # rows count towards a catch-up once committed
def test_the_index_catches_up_after_the_response_once_enough_was_written(client, documents, monkeypatch, caplog):
    from tests.conftest import post_graphql

    monkeypatch.setattr(index, "CATCH_UP_KEYS", 2 * 3)  # publicDocuments: three documents a request
    post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "a-0"})
    if SQLITE:
        assert ReadIndexQueue.objects.count() == 1
    post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "a-1"})
    if SQLITE:  # caught up when the second response was closed
        assert ReadIndexQueue.objects.count() == 0 and ReadObject.objects.count() == 6
    # A catch-up that fails is logged; the rows stay queued, and found.
    monkeypatch.setattr(index, "catch_up", lambda alias: (_ for _ in ()).throw(OperationalError("locked")))
    post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "a-2"})
    post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "a-3"})
    public = Document.objects.filter(classification="public").first()
    assert request_ids(reads_of(public)) == ["a-3", "a-2", "a-1", "a-0"]
    if SQLITE:
        assert "could not catch up" in caplog.text
        assert ReadIndexQueue.objects.count() == 2


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("in_transaction", [False, True])
def test_a_rows_objects_count_towards_a_catch_up_only_once_committed(documents, monkeypatch, in_transaction):
    """Counted before its commit, a row's objects could make another thread's catch-up
    due while the row is not yet queued: that catch-up uses the count up, finds nothing,
    and the row waits for the next one."""
    if not SQLITE:
        pytest.skip("PostgreSQL's rows index themselves")
    from django.db import transaction

    from gql_audit.store.backends import reads as reads_store

    seen_at_insert = []
    real_insert = reads_store.sealing.insert

    def insert(alias, row):
        real_insert(alias, row)
        seen_at_insert.append(index._written.get(alias, 0))

    monkeypatch.setattr(reads_store.sealing, "insert", insert)
    if in_transaction:  # the store's other path: the row written inside a transaction
        with transaction.atomic():
            write_reads("r-0", documents)
            assert index._written.get("default", 0) == 0
            rolled_back = False
        with pytest.raises(RuntimeError), transaction.atomic():
            write_reads("r-gone", documents)
            rolled_back = True
            raise RuntimeError
        assert rolled_back
    else:
        write_reads("r-0", documents)
    assert seen_at_insert[0] == 0
    # Counted once committed; a row rolled back is not.
    assert index._written["default"] == len(documents)


@pytest.mark.django_db
def test_verify_takes_queued_rows_as_waiting_and_reports_a_row_neither_queued_nor_indexed(documents, settings):
    if not SQLITE:
        pytest.skip("PostgreSQL's rows index themselves")
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": {"key": "k" * 40}}
    write_reads("r-0", documents)
    write_reads("r-1", documents)
    index.catch_up("default")
    write_reads("r-2", documents)
    assert verify().problems == []
    waiting = RequestReads.objects.get(request_id="r-2")
    ReadIndexQueue.objects.filter(reads_id=waiting.id).delete()
    indexed = RequestReads.objects.get(request_id="r-0")
    ReadObject.objects.filter(reads_id=indexed.id).order_by("pk").first().delete()
    found = {(p.what, p.kind, p.id) for p in verify().problems}
    assert found == {("edited", "reads", str(waiting.id)), ("edited", "reads", str(indexed.id))}


@pytest.mark.django_db
def test_the_admin_filter_by_object_finds_queued_and_indexed_rows(admin_client, documents):
    doc = documents[0]
    write_reads("r-0", [doc])
    index.catch_up("default")
    write_reads("r-1", [doc])
    write_reads("r-2", documents[1:])
    response = admin_client.get(f"/admin/gql_audit/requestreads/?object=example_service.Document:{doc.pk}")
    assert response.status_code == 200
    listed = {row.request_id for row in response.context["cl"].result_list}
    assert listed == {"r-0", "r-1"}


# --- concurrency and crashes -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", [None, "IMMEDIATE"])
def test_writers_the_catch_up_and_a_reader_side_by_side_lose_no_read(users, monkeypatch, mode):
    """Three writers, a catch-up running in a loop and a reader: every read the reader has
    seen stays seen (no moment where a row is neither queued nor indexed), no writer
    fails, and at the end every row is indexed once. SQLite's default transaction mode
    (DEFERRED) and IMMEDIATE both."""
    monkeypatch.setattr(index, "BATCH_ROWS", 7)
    docs = list(Document.objects.order_by("pk"))
    target = docs[0]
    errors: list[BaseException] = []
    done = threading.Event()

    def in_thread(work):
        def run():
            try:
                if SQLITE:
                    connections["default"].ensure_connection()
                    connections["default"].transaction_mode = mode
                work()
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            finally:
                connections.close_all()

        return threading.Thread(target=run)

    def writer(n):
        def work():
            for i in range(25):
                write_reads(f"w{n}-{i}", docs)

        return work

    def catcher():
        while not done.is_set():
            index.catch_up("default")
            time.sleep(0.002)

    seen: set[str] = set()

    def reader():
        while not done.is_set():
            now = set(request_ids(reads_of(target)))
            assert seen <= now, f"reads vanished: {sorted(seen - now)}"
            seen.update(now)

    writers = [in_thread(writer(n)) for n in range(3)]
    others = [in_thread(catcher), in_thread(reader)]
    for thread in writers + others:
        thread.start()
    for thread in writers:
        thread.join(timeout=120)
    done.set()
    for thread in others:
        thread.join(timeout=60)
    assert not errors, errors
    index.catch_up("default")
    expected = {f"w{n}-{i}" for n in range(3) for i in range(25)}
    assert set(request_ids(reads_of(target))) == expected
    assert len(reads_of(target)) == 75
    if SQLITE:
        assert ReadIndexQueue.objects.count() == 0
        assert ReadObject.objects.count() == 75 * len(docs)
        assert ReadObject.objects.filter(key=audit_store.object_key(Document, target.pk)).count() == 75


#: A child process on its own SQLite file (WAL, as recommended): migrated, 40 rows written, then
#: stopped inside a catch-up, after its INSERT of index rows and before the queue's DELETE.
CRASHING_CATCH_UP = """
import sys, time
import django
from django.conf import settings

django.setup()
settings.DATABASES["default"]["NAME"] = sys.argv[1]
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from gql_audit.models import RequestReads
from gql_audit.store import index
from gql_audit.evidence.sealing import insert

call_command("migrate", verbosity=0)
for n in range(40):
    keys = [f"example_service.document:{k}" for k in range(50)]
    shapes = [{"fields": ["title"], "paths": ["documents"]}]
    row = RequestReads(at=timezone.now(), request_id=f"c-{n}", keys=keys, shape_of=[0] * 50, shapes=shapes)
    insert("default", row)
real = connection.cursor


class Stalling:
    def __init__(self):
        self.cursor = real()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.cursor.close()

    def execute(self, sql, params=None):
        result = self.cursor.execute(sql, params)
        if sql.startswith("INSERT"):
            print("indexed, not yet dequeued", flush=True)
            time.sleep(60)
        return result


connection.cursor = Stalling
index.catch_up("default")
"""

#: Then another process on the same file: what a restarted service finds, and its catch-up.
AFTER_THE_CRASH = """
import sys
import django
from django.conf import settings

django.setup()
settings.DATABASES["default"]["NAME"] = sys.argv[1]
from gql_audit.history import request_trail
from gql_audit.models import ReadIndexQueue, ReadObject, RequestReads
from gql_audit.store import index

print(RequestReads.objects.count(), ReadIndexQueue.objects.count(), ReadObject.objects.count())
print(len(request_trail("c-7").reads))
print(index.catch_up("default"), ReadIndexQueue.objects.count(), ReadObject.objects.count())
print(ReadObject.objects.filter(key="example_service.document:3").count())
"""


def run_child(script, database, **options):
    return subprocess.Popen(
        [sys.executable, "-c", script, str(database)],
        cwd=ROOT,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.settings",
            "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'example_service'}",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **options,
    )


def test_a_process_killed_in_the_middle_of_a_catch_up_loses_nothing(tmp_path):
    """SIGKILL between the index rows and the queue's removal: the database comes back
    with every row queued and none indexed, readers find every read, and the next
    catch-up indexes each row once."""
    if not SQLITE:
        pytest.skip("the queue is SQLite's")
    import sqlite3

    database = tmp_path / "crash.sqlite3"
    sqlite3.connect(database).execute("PRAGMA journal_mode=WAL").close()
    child = run_child(CRASHING_CATCH_UP, database)
    try:
        line = child.stdout.readline()
        assert line.strip() == "indexed, not yet dequeued", child.stderr.read()
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    after = run_child(AFTER_THE_CRASH, database)
    out, err = after.communicate(timeout=60)
    assert after.returncode == 0, err
    assert out.split("\n")[:4] == ["40 40 0", "50", "40 0 2000", "40"]
