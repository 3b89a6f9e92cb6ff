"""A task published by a GraphQL mutation, run by a real Celery worker through a real Redis broker."""

from __future__ import annotations

import os
import threading
import time
import uuid
from urllib.parse import urlparse

import graphene
import pytest
from auditlog.models import LogEntry
from auditlog.signals import accessed
from celery.signals import task_postrun
from django.db import OperationalError
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView

from example_service.models import Document
from gql_audit.history import request_trail
from tests.conftest import REDIS_URL, make_token, post_graphql

celery = pytest.importorskip("celery")

# Database 5 unless the URL names one (redis://host:6379/4): the queue's name is this run's own anyway.
BROKER = REDIS_URL if urlparse(REDIS_URL).path.strip("/") else f"{REDIS_URL}/5"
app = celery.Celery("gql_audit_tests", broker=BROKER)
app.conf.update(task_default_queue=f"gql-audit-tests-{uuid.uuid4().hex}", worker_hijack_root_logger=False)


@app.task(name="tests.rename")
def rename(document_id: int, title: str) -> None:
    document = Document.objects.get(pk=document_id)
    document.title = title
    document.save()


@app.task(name="tests.explode")
def explode() -> None:
    raise OperationalError("server closed the connection: password=hunter2")


@app.task(name="tests.refuse")
def refuse() -> None:
    raise ValueError("no such customer")


class Rename(graphene.Mutation):
    class Arguments:
        id = graphene.Int(required=True)
        title = graphene.String(required=True)

    queued = graphene.Boolean()

    def mutate(root, info, id, title):
        rename.delay(id, title)
        explode.delay()
        refuse.delay()
        return Rename(queued=True)


@app.task(name="tests.read")
def read(document_id: int) -> None:
    accessed.send(sender=Document, instance=Document.objects.get(pk=document_id))


class ReadLater(graphene.Mutation):
    class Arguments:
        id = graphene.Int(required=True)

    queued = graphene.Boolean()

    def mutate(root, info, id):
        read.delay(id)
        return ReadLater(queued=True)


class Query(graphene.ObjectType):
    ok = graphene.Boolean()


schema = graphene.Schema(
    query=Query,
    mutation=type("Mutation", (graphene.ObjectType,), {"rename": Rename.Field(), "read_later": ReadLater.Field()}),
)
urlpatterns = [path("graphql/", csrf_exempt(GraphQLView.as_view(schema=schema)))]


def redis_reachable() -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="module")
def worker(django_db_blocker):
    if not redis_reachable():
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI at {REDIS_URL} (.ci/run starts Debian's redis-server)")
        pytest.skip(f"needs Redis at {REDIS_URL} (GQL_AUDIT_TEST_REDIS): apt-get install redis-server")
    import logging

    from celery.contrib.testing.worker import start_worker

    # The embedded worker sets the root logger's level for its own output: other tests' logging must not change.
    level = logging.root.level
    try:
        with django_db_blocker.unblock(), start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            yield
    finally:
        logging.root.setLevel(level)


def wait_for(condition, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("the worker did not finish the tasks in time")


@pytest.mark.urls("tests.test_celery")
@pytest.mark.django_db(transaction=True)
def test_task_records_carry_the_request_id_and_the_actor(client, users, worker):
    alice = users["alice"]
    doc = alice.documents.first()
    response = post_graphql(
        client,
        'mutation { rename(id: %d, title: "renamed by a task") { queued } }' % doc.pk,
        token=make_token("alice"),
        headers={"X-Request-ID": "queued-1"},
    )
    assert response.json()["data"] == {"rename": {"queued": True}}
    trail = request_trail("queued-1")
    wait_for(lambda: trail.changes.exists() and trail.events.filter(kind__in=["db_error", "task_failed"]).count() == 2)
    (change,) = trail.changes
    assert change.object_pk == str(doc.pk) and change.action == LogEntry.Action.UPDATE
    assert change.actor_id == alice.pk and change.cid == "queued-1"
    ours = change.additional_data["gql_audit"]
    assert ours["request_id"] == "queued-1"
    assert ours["actor"] == {"id": alice.pk, "username": "alice"}
    assert ours["task"]["name"] == "tests.rename"
    assert ours["operation"]["type"] == "mutation"
    (failure,) = trail.events.filter(kind="db_error")
    assert failure.actor_id == alice.pk and failure.details["task"] == "tests.explode"
    assert failure.details["exception"] == "OperationalError"
    assert "hunter2" not in failure.message + str(failure.details)
    (refused,) = trail.events.filter(kind="task_failed")
    assert refused.message == "no such customer" and refused.details["task"] == "tests.refuse"
    assert refused.severity == "error"


@pytest.mark.urls("tests.test_celery")
@pytest.mark.django_db(transaction=True)
def test_the_reads_a_task_writes_are_indexed_by_the_worker(client, users, worker, settings, monkeypatch):
    """A worker serves no response: on SQLite it indexes its own reads after its tasks."""
    from django.db import connection

    from gql_audit.history import reads_of
    from gql_audit.models import ReadIndexQueue, ReadObject
    from gql_audit.store import index, object_key

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    monkeypatch.setattr(index, "CATCH_UP_KEYS", 1)
    # Waited for without reading the database meanwhile: a read polling the tables while
    # the worker indexes (SQLite's shared-cache test database locks by table) would make
    # the catch-up fail, which leaves the rows queued for the next one, as designed.
    finished = threading.Event()

    def after_read(sender=None, **kwargs):  # connected after gql_audit's own: runs after its catch-up
        if getattr(sender, "name", None) == "tests.read":
            finished.set()

    task_postrun.connect(after_read, weak=False)
    try:
        doc = users["alice"].documents.first()
        post_graphql(
            client,
            "mutation { readLater(id: %d) { queued } }" % doc.pk,
            token=make_token("alice"),
            headers={"X-Request-ID": "read-later"},
        )
        assert finished.wait(30), "the worker did not finish the task in time"
    finally:
        task_postrun.disconnect(after_read)
    (read_by_task,) = reads_of(doc)
    assert read_by_task.request_id == "read-later"
    assert read_by_task.actor == {"id": users["alice"].pk, "username": "alice"}
    if connection.vendor == "sqlite":
        assert not ReadIndexQueue.objects.exists()
        assert ReadObject.objects.filter(key=object_key(Document, doc.pk)).count() == 1


@pytest.mark.django_db(transaction=True)
def test_a_task_published_outside_a_request_runs_without_one(users, worker):
    doc = users["bob"].documents.first()
    rename.delay(doc.pk, "renamed by cron")
    wait_for(lambda: Document.objects.filter(pk=doc.pk, title="renamed by cron").exists())
    entry = LogEntry.objects.get_for_object(doc).filter(action=LogEntry.Action.UPDATE).latest("timestamp")
    assert entry.actor_id is None and "gql_audit" not in (entry.additional_data or {})


def test_a_forged_header_is_ignored(users):
    from gql_audit import celery as ours
    from gql_audit import context

    task = type("Task", (), {"name": "t", "request": type("R", (), {"gql_audit": {"request_id": "bad id\n"}})()})()
    ours.enter_task(task_id="1", task=task)
    assert context.current() is None


@pytest.mark.django_db(transaction=True)
def test_a_failing_task_stores_none_of_its_arguments_and_a_forged_operation_is_bounded(users):
    import json

    from gql_audit import celery as ours
    from gql_audit import context
    from gql_audit.models import SecurityEvent

    secret = "Task-Argument-Secret-77"
    forged = {"type": "mutation", "name": "x" * 100_000, "hash": {"nested": [1] * 1000}}
    header = {"request_id": "task-forged", "operation": forged}
    task = type("Task", (), {"name": "t", "request": type("R", (), {"gql_audit": header})()})()
    ours.enter_task(task_id="forged-1", task=task)
    try:
        assert context.current().operation == {"type": "mutation", "name": None, "hash": None}
        error = ValueError(f"cannot log in alice with {secret}")
        ours.task_failed(sender=task, task_id="forged-1", exception=error, args=("alice", secret), kwargs={})
    finally:
        ours.leave_task(task_id="forged-1")
    (event,) = SecurityEvent.objects.filter(request_id="task-forged")
    assert event.kind == "task_failed" and "cannot log in" in event.message
    assert secret not in event.message + json.dumps(event.details)
    assert len(json.dumps(event.operation)) < 200
