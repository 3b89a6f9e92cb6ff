from __future__ import annotations

import contextlib
import json
import os
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from django.conf import settings

from gql_audit.conf import conf

TEST_DB = os.environ.get("GQL_AUDIT_TEST_DB", "sqlite")

# --- Test sizes ----------------------------------------------------------------------
#: ``quick`` (the default of the README's test command): fuzzing and stress tests at
#: sizes a newcomer waits a few seconds for; ``full`` under ``CI=true``, or with
#: ``GQL_AUDIT_TEST_PROFILE=full``: the sizes that make them worth their name.
PROFILE = os.environ.get("GQL_AUDIT_TEST_PROFILE") or ("full" if os.environ.get("CI") == "true" else "quick")
if PROFILE not in ("quick", "full"):
    raise pytest.UsageError(f"GQL_AUDIT_TEST_PROFILE must be 'quick' or 'full', not {PROFILE!r}")


def sized(full: int, quick: int) -> int:
    """The size of a fuzzing or stress test (examples, requests, rows) in this run's profile."""
    return full if PROFILE == "full" else quick


#: The access stores a test that holds for both runs once for each: both in the full
#: profile; in the quick one the default store alone (the tests of the other store itself
#: set it, and always run).
ACCESS_STORES = ["gql_audit", "auditlog"] if PROFILE == "full" else ["gql_audit"]


def pytest_report_header(config):
    return f"gql_audit test database: {TEST_DB}; sizes: {PROFILE} (GQL_AUDIT_TEST_PROFILE)"


#: Passes on a PostgreSQL server: PostgreSQL's backend, and django-cockroachdb's on PostgreSQL.
SERVER_PASSES = ("postgres", "cockroachdb")


def pytest_collection_modifyitems(config, items):
    if PROFILE != "full":
        # Each installs into a virtual environment of its own (half a minute or more): a
        # newcomer's quick run leaves them to CI.
        fresh = pytest.mark.skip(
            reason="installs into a fresh virtual environment: runs in the full profile "
            "(CI=true or GQL_AUDIT_TEST_PROFILE=full)"
        )
        for item in items:
            if "venv" in item.keywords:
                item.add_marker(fresh)
    if TEST_DB in SERVER_PASSES:
        return
    skip = pytest.mark.skip(
        reason="needs PostgreSQL: runs in the PostgreSQL pass of tests/run.sh (GQL_AUDIT_TEST_DB=postgres)"
    )
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_settings():
    conf.reload()
    yield
    conf.reload()
    # The process's seal chains name rows the test database loses with the test: the
    # next test starts its own, as a new process would.
    from gql_audit.evidence import sealing

    sealing.forget()


@pytest.fixture
def users(django_user_model):
    from example_service.models import Document, Profile

    made = {}
    for name, active in [("alice", True), ("bob", True), ("carol", False)]:
        user = django_user_model.objects.create_user(
            username=name, email=f"{name}@example.org", password=f"{name}-password", is_active=active
        )
        Profile.objects.create(user=user, full_name=name.title())
        Document.objects.create(owner=user, title=f"{name} public", classification="public")
        Document.objects.create(owner=user, title=f"{name} secret", classification="confidential")
        made[name] = user
    return made


def make_token(username: str, *, expires_in: timedelta = timedelta(minutes=5), key: str | None = None) -> str:
    payload = {"username": username, "exp": datetime.now(UTC) + expires_in}
    return jwt.encode(payload, key or settings.SECRET_KEY, algorithm="HS256")


@pytest.fixture
def token():
    return make_token


def post_graphql(client, query, *, variables=None, token=None, headers=None, path="/graphql/", **extra):
    payload = {"query": query}
    if variables is not None:
        payload["variables"] = variables
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"JWT {token}"
    return client.post(path, json.dumps(payload), content_type="application/json", headers=headers or {}, **extra)


@pytest.fixture
def gql(client):
    def run(query, **kwargs):
        response = post_graphql(client, query, **kwargs)
        assert response.status_code == 200, response.content
        assert b"Traceback" not in response.content
        return response.json()

    return run


def close_async_connections():
    """Close the database connections of asgiref's shared sync thread.

    Sync work of async requests runs there; left open, PostgreSQL cannot drop
    the test database at the end of the session.
    """
    import asyncio

    from asgiref.sync import sync_to_async
    from django.db import connections

    asyncio.run(sync_to_async(connections.close_all, thread_sensitive=True)())


@pytest.fixture
def async_connections_closed():
    yield
    close_async_connections()


def stored_text() -> str:
    """Every audit row as one JSON text (security events, auditlog's entries, the default access
    store's reads): what someone with the database could read."""
    from auditlog.models import LogEntry

    from gql_audit.models import RequestReads, SecurityEvent

    rows = [*SecurityEvent.objects.values(), *LogEntry.objects.values(), *RequestReads.objects.values()]
    return json.dumps(rows, default=str, sort_keys=True)


def codes(body) -> dict[tuple, str]:
    """``{path: extensions.code}`` of a GraphQL response body."""
    return {tuple(e.get("path") or ()): (e.get("extensions") or {}).get("code") for e in body.get("errors", [])}


@contextlib.contextmanager
def table_away(table: str):
    """Rename ``table`` away for the block, as if it had been dropped."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE {table} RENAME TO {table}_away")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"ALTER TABLE {table}_away RENAME TO {table}")


class SQLRecorder(list):
    """An execute wrapper keeping every statement's SQL: ``with connection.execute_wrapper(recorder)``."""

    def __call__(self, execute, sql, params, many, context):
        self.append(sql)
        return execute(sql, params, many, context)


@pytest.fixture
def password_checks():
    """How many times Django's ModelBackend was asked to check a password."""
    from unittest import mock

    from django.contrib.auth.backends import ModelBackend

    calls = []
    original = ModelBackend.authenticate

    def counting(self, request, username=None, password=None, **kwargs):
        calls.append(username)
        return original(self, request, username=username, password=password, **kwargs)

    with mock.patch.object(ModelBackend, "authenticate", counting):
        yield calls


def clear_of_window_edge(period: int, margin: float) -> None:
    """Wait, when fewer than ``margin`` seconds are left of the current ``period``-second
    window, until the next one starts: the throttle's windows are fixed (they start at
    multiples of their period), and a test whose counts straddle two windows would
    see each half alone. Windows of 60 s end at every edge of the longer ones used here."""
    import time

    left = period - time.time() % period
    if left < margin:
        time.sleep(left + 0.05)


@pytest.fixture
def empty_cache():
    """Django's default cache (the throttle's in the tests) empty before and after, and the
    test started clear of a throttle window's edge."""
    from django.core.cache import caches

    clear_of_window_edge(60, 3)
    caches["default"].clear()
    yield
    caches["default"].clear()


@contextlib.contextmanager
def retries_seen():
    """The SQLSTATE of every retry ``gql_audit.db`` makes in the block, from any thread."""
    import threading

    from gql_audit import db

    seen: list[str] = []
    lock = threading.Lock()

    def on_retry(sender, sqlstate, **kwargs):
        with lock:
            seen.append(sqlstate)

    db.transaction_retried.connect(on_retry)
    try:
        yield seen
    finally:
        db.transaction_retried.disconnect(on_retry)


def run_in_threads(work, count: int, *, timeout: float = 600) -> list[BaseException]:
    """``work(n)`` for n in ``range(count)``, all in threads at once, each closing its database
    connections when done; what they raised."""
    import threading

    from django.db import connections

    raised: list[BaseException] = []

    def run(n):
        try:
            work(n)
        except BaseException as exc:  # noqa: BLE001 - returned to the test
            raised.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return raised


def writes_of_a_request(client, token: str, request_id: str) -> list[tuple[str, bool, bool]]:
    """What one request (after a first one, which starts the process's seal chain in its own
    transaction) sends other than SELECTs: ``(sql, in an atomic block, autocommit)`` each."""
    from django.db import connection

    post_graphql(client, "{ documents { title } }", token=token)
    seen = []

    def spy(execute, sql, params, many, context):
        seen.append((sql, connection.in_atomic_block, connection.get_autocommit()))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(spy):
        post_graphql(client, "{ documents { title } }", token=token, headers={"X-Request-ID": request_id})
    return [entry for entry in seen if not entry[0].lstrip().upper().startswith("SELECT")]


#: The Redis of the tests that need one (``.ci/run`` starts it).
REDIS_URL = os.environ.get("GQL_AUDIT_TEST_REDIS", "redis://127.0.0.1:6379")


@pytest.fixture
def redis_prefix():
    """A key prefix of this run's own in a Redis that answers; its keys deleted afterwards."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and no Redis at {REDIS_URL} ({exc}): .ci/run starts one")
        pytest.skip(f"no Redis at {REDIS_URL} ({exc}); set GQL_AUDIT_TEST_REDIS or run .ci/run")
    prefix = f"gqa-test-{uuid.uuid4().hex}"
    yield prefix
    for key in client.scan_iter(match=f"{prefix}:*"):
        client.delete(key)
    client.close()
