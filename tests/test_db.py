"""Database context, retries on 40001, the health view and the SQL comment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from django.db import OperationalError, connection, transaction

from gql_audit import db, dbcontext
from gql_audit.models import SecurityEvent
from tests.conftest import SQLRecorder, make_token, post_graphql, retries_seen, run_in_threads

FIXTURES = Path(__file__).parent / "fixtures" / "cockroachdb_retry_errors.txt"


def documented_errors():
    """CockroachDB's own texts (tests/fixtures/cockroachdb_retry_errors.txt says where each is from)."""
    text = "\n".join(line for line in FIXTURES.read_text().splitlines() if not line.startswith("#"))
    for n, block in enumerate(text.split("\n---\n")):
        head, message = block.strip().split("\n", 1)
        reason, txn = head.split()
        yield pytest.param(reason, None if txn == "-" else txn, message, id=f"{n}-{reason}")


@pytest.mark.parametrize(("reason", "txn", "message"), list(documented_errors()))
def test_parser_on_documented_messages(reason, txn, message):
    parsed = db.parse_retry_error(message)
    assert parsed["reason"] == reason
    # The failing transaction's id, never the conflicting one's (another session's).
    assert parsed.get("txn") == txn


class Hostile:
    def __str__(self):
        raise RuntimeError("no")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "duplicate key value violates unique constraint",
        "RETRY",
        "meta={id=zzzz",
        None,
        42,
        b"\xff\xfe",
        Hostile(),
        "x" * 1_000_000,
        "restart transaction",
        "retry_serializable",
        # CockroachDB's 40003 (pkg/kv/kvpb/errors_test.go): ambiguous, not a retry error.
        "result is ambiguous: unknown cause",
    ],
)
def test_parser_returns_nothing_on_garbage(garbage):
    assert db.parse_retry_error(garbage) is None


def test_backoff_follows_cockroachdbs_documented_retry_example():
    """CockroachDB's example waits ``2 ** retry * 0.1 * (random() + 0.5)`` seconds."""
    for attempt in range(1, 6):
        waits = [db.backoff(attempt) for _ in range(200)]
        low, high = 2**attempt * 0.1 * 0.5, min(5.0, 2**attempt * 0.1 * 1.5)
        assert all(low <= wait <= high for wait in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > (high - low) / 2  # jittered, not fixed
    assert max(db.backoff(attempt) for attempt in range(6, 200)) <= 5.0  # at most max_wait
    assert db.backoff(10**6) == 5.0  # no overflow however many attempts


def test_backoff_is_configurable(settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": {"base": 0.001, "jitter": 0}}
    assert [db.backoff(attempt) for attempt in (1, 2, 3)] == [0.002, 0.004, 0.008]
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": {"base": 1, "max_wait": 1.5, "jitter": 0}}
    assert db.backoff(1) == 1.5


@pytest.mark.parametrize(
    "value",
    [
        "fast",
        {"base": 0},
        {"base": -1},
        {"max_wait": -0.1},
        {"jitter": 1.5},
        {"jitter": -0.1},
        {"base": "0.1"},
        {"base": True},
        {"base": float("nan")},
        {"max_wait": float("inf")},
        {"cap": 1},
    ],
)
def test_a_malformed_retry_backoff_is_reported(settings, value):
    from django.core import checks

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": value}
    found = [m for m in checks.run_checks() if m.id == "gql_audit.E002"]
    assert len(found) == 1 and "RETRY_BACKOFF" in found[0].msg
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": {"base": 0.05, "jitter": 1, "max_wait": 0}}
    assert [m for m in checks.run_checks() if m.id == "gql_audit.E002"] == []


class FakeError(Exception):
    def __init__(self, sqlstate, message="fake"):
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.django_db(transaction=True)
def test_retries_only_serialization_failures(monkeypatch):
    monkeypatch.setattr(db, "backoff", lambda attempt: 0)
    calls = []

    def flaky(code, fail_times):
        calls.append(code)
        if len(calls) <= fail_times:
            raise FakeError(code)
        return "done"

    assert db.run_in_transaction(flaky, "40001", 2) == "done" and len(calls) == 3
    calls.clear()
    with pytest.raises(FakeError):
        db.run_in_transaction(flaky, "40003", 2)  # ambiguous result: not retried
    assert len(calls) == 1
    calls.clear()
    assert db.run_in_transaction(flaky, "40003", 1, idempotent=True) == "done" and len(calls) == 2
    calls.clear()
    with pytest.raises(FakeError):
        db.run_in_transaction(flaky, "23505", 1)
    assert len(calls) == 1
    with pytest.raises(ValueError, match="max_attempts"):
        db.run_in_transaction(flaky, "40001", 0, max_attempts=0)
    assert list(SecurityEvent.objects.values_list("kind", flat=True)) == ["db_retry"] * 3


@pytest.mark.django_db(transaction=True)
def test_decorator_forms(monkeypatch):
    monkeypatch.setattr(db, "backoff", lambda attempt: 0)
    seen = []

    @db.retry_transaction
    def plain(x):
        seen.append(x)
        if len(seen) == 1:
            raise FakeError("40001")
        return x * 2

    @db.retry_transaction(max_attempts=1)
    def once():
        raise FakeError("40001")

    @db.retry_transaction(2)  # the attempts given positionally
    def twice():
        seen.append("twice")
        raise FakeError("40001")

    assert plain(21) == 42 and seen == [21, 21]
    with pytest.raises(FakeError):
        once()
    with pytest.raises(FakeError):
        twice()
    assert seen == [21, 21, "twice", "twice"]
    assert SecurityEvent.objects.filter(kind="db_error", details__exhausted=True).count() == 2
    with pytest.raises(TypeError, match="a function or max_attempts"):
        db.retry_transaction("3")


@pytest.mark.django_db(transaction=True)
def test_nested_in_an_outer_transaction_runs_once_and_lets_the_outer_retry(monkeypatch):
    monkeypatch.setattr(db, "backoff", lambda attempt: 0)
    inner_calls, outer_calls = [], []

    def inner():
        inner_calls.append(1)
        if len(inner_calls) == 1:
            raise FakeError("40001")

    with pytest.raises(FakeError), transaction.atomic():
        db.run_in_transaction(inner)  # inside atomic: no retry of its own
    assert len(inner_calls) == 1

    inner_calls.clear()

    def outer():
        outer_calls.append(1)
        db.run_in_transaction(inner)

    db.run_in_transaction(outer)
    assert len(outer_calls) == 2 and len(inner_calls) == 2
    assert SecurityEvent.objects.filter(kind="db_retry").count() == 1


# --- on a real PostgreSQL ---------------------------------------------------------

#: CockroachDB's documented RETRY_SERIALIZABLE message (the fixture's first): its keys hold row values.
DOCUMENTED = next(documented_errors()).values[2]
ROW_KEY = "918951292305080321"  # the primary key of a row another transaction locked


def raise_sql(code):
    """A PL/pgSQL block raising ``code`` with CockroachDB's documented message."""
    return "DO $$ BEGIN RAISE EXCEPTION USING ERRCODE = %s, MESSAGE = %s; END $$", [code, DOCUMENTED]


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_exhausted_retries_raise_the_error_and_record_every_attempt(monkeypatch):
    monkeypatch.setattr(db, "backoff", lambda attempt: 0)

    def always_conflicts():
        with connection.cursor() as cursor:
            cursor.execute(*raise_sql("40001"))

    with pytest.raises(OperationalError) as raised:
        db.run_in_transaction(always_conflicts, max_attempts=3)
    assert db.sqlstate_of(raised.value) == "40001" and ROW_KEY in str(raised.value)
    retries = list(SecurityEvent.objects.filter(kind="db_retry").order_by("created_at"))
    assert [e.details["attempt"] for e in retries] == [1, 2]
    assert all(e.sqlstate == "40001" and e.details["reason"] == "RETRY_SERIALIZABLE" for e in retries)
    assert all(e.details["txn"] == "07d42834" for e in retries)
    last = SecurityEvent.objects.get(kind="db_error")
    assert last.details["attempts"] == 3 and last.details["exhausted"] is True
    # The class, SQLSTATE, reason and transaction; never the text, whose keys hold other rows' values.
    assert {e.message for e in retries} == {"OperationalError (SQLSTATE 40001): RETRY_SERIALIZABLE"}
    assert last.message == "transaction failed after 3 attempts: OperationalError (SQLSTATE 40001): RETRY_SERIALIZABLE"
    for event in [*retries, last]:
        stored = json.dumps([event.message, event.details, event.path])
        assert ROW_KEY not in stored and "/Table/" not in stored and "1b2bf263" not in stored


@pytest.mark.postgres
@pytest.mark.django_db
def test_a_resolvers_db_error_keeps_no_key_of_a_cockroachdb_retry_error():
    """A serialization failure reaching a resolver is a db_error event: CockroachDB's text is
    cut where it starts printing keys."""
    from gql_audit.errors import describe_database_error

    with pytest.raises(OperationalError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(*raise_sql("40001"))
    text, sqlstate = describe_database_error(raised.value)
    assert (text, sqlstate) == ("OperationalError (SQLSTATE 40001): restart transaction", "40001")


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_ambiguous_result_needs_idempotent(monkeypatch):
    monkeypatch.setattr(db, "backoff", lambda attempt: 0)
    calls = []

    def ambiguous():
        calls.append(1)
        if len(calls) == 1:
            with connection.cursor() as cursor:
                cursor.execute(*raise_sql("40003"))

    with pytest.raises(OperationalError):
        db.run_in_transaction(ambiguous)
    calls.clear()
    db.run_in_transaction(ambiguous, idempotent=True)
    assert len(calls) == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_increments_under_serializable(settings):
    """8 workers x 50 increments of one counter, SERIALIZABLE: exactly 400, and one
    db_retry event per retry observed."""
    # Short pauses: this is about the retries, not their pace (CockroachDB's would take minutes here).
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": {"base": 0.0005, "max_wait": 0.01}}
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE gql_audit_counter (id int PRIMARY KEY, value int NOT NULL)")
        cursor.execute("INSERT INTO gql_audit_counter VALUES (1, 0)")

    def increment():
        with connection.cursor() as cursor:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE")
            cursor.execute("SELECT value FROM gql_audit_counter WHERE id = 1")
            (value,) = cursor.fetchone()
            cursor.execute("UPDATE gql_audit_counter SET value = %s WHERE id = 1", [value + 1])

    def worker(n):
        for _ in range(50):
            db.run_in_transaction(increment, max_attempts=200)

    try:
        with retries_seen() as observed:
            errors = run_in_threads(worker, 8, timeout=300)
    finally:
        with connection.cursor() as cursor:
            cursor.execute("SELECT value FROM gql_audit_counter WHERE id = 1")
            (final,) = cursor.fetchone()
            cursor.execute("DROP TABLE gql_audit_counter")
    assert errors == []
    assert final == 400
    assert observed, "no serialization failure happened: the test did not test retries"
    assert set(observed) == {"40001"}
    assert SecurityEvent.objects.filter(kind="db_retry", sqlstate="40001").count() == len(observed)


def test_cockroachdb_context_says_none_for_what_is_not_known():
    known = dbcontext.cockroachdb_context("3", "region=eu-west1,zone=eu-west1-b", "1797d5b1")
    assert known == {"node_id": "3", "locality": "region=eu-west1,zone=eu-west1-b", "session_id": "1797d5b1"}
    # A tenant's SQL pod answers node_id "0"; PostgreSQL has none of these variables (NULL).
    unknown = {"node_id": None, "locality": None, "session_id": None}
    assert dbcontext.cockroachdb_context("0", "", "") == unknown
    assert dbcontext.cockroachdb_context(None, None, None) == unknown


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_probe_runs_once_per_connection(client, users):
    executed = SQLRecorder()
    connection.close()
    # Entered before the connection opens, so it also sees what runs on connect.
    with connection.execute_wrapper(executed):
        for _ in range(5):  # the test client keeps one connection across requests
            post_graphql(client, "{ publicDocuments { title } }")
        assert executed.count(dbcontext.PROBE_SQL) == 1
        assert len(executed) > 10
        connection.close()  # a new connection is probed once more
        for _ in range(5):
            post_graphql(client, "{ publicDocuments { title } }")
    assert executed.count(dbcontext.PROBE_SQL) == 2


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_context_on_entries_and_application_name(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "APPLICATION_NAME": "gql-audit-tests"}
    connection.close()
    post_graphql(
        client,
        'mutation { updateProfile(phone: "5") { profile { phone } } }',
        token=make_token("alice"),
        headers={"X-Request-ID": "dbctx"},
    )
    entry = LogEntry.objects.filter(cid="dbctx", action=LogEntry.Action.UPDATE).get()
    data = entry.additional_data["gql_audit"]["db"]
    assert data["vendor"] == connection.vendor and data["retries"] == 0
    if connection.vendor == "cockroachdb":
        # django-cockroachdb's backend on PostgreSQL: no CockroachDB node, locality or session there.
        assert (data["node_id"], data["locality"], data["session_id"]) == (None, None, None)
        assert "backend_pid" not in data
    else:
        assert isinstance(data["backend_pid"], int)
    with connection.cursor() as cursor:
        cursor.execute("SHOW application_name")
        assert cursor.fetchone()[0] == "gql-audit-tests"


@pytest.mark.django_db(transaction=True)
def test_request_id_as_sql_comment(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SQL_COMMENT": True}
    connection.close()
    seen = SQLRecorder()
    connection.ensure_connection()  # gql_audit's wrapper is installed on connect, before ours
    with connection.execute_wrapper(seen):
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "req-sql-1"})
    tagged = [sql for sql in seen if sql.endswith("/*request_id='req-sql-1'*/")]
    assert tagged and any("example_service_document" in sql for sql in tagged)
    seen.clear()
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SQL_COMMENT": False}
    with connection.execute_wrapper(seen):
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "req-sql-2"})
    assert seen and not any("/*request_id=" in sql for sql in seen)


@pytest.mark.django_db
def test_health_view(client):
    response = client.get("/health/")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["database"]["reachable"] is True and body["database"]["vendor"] == connection.vendor
    assert body["database"]["latency_ms"] >= 0
    assert client.post("/health/").status_code == 405


@pytest.mark.django_db
def test_health_view_when_the_database_is_down(client, monkeypatch):
    from django.conf import settings

    def refuse(*args, **kwargs):
        raise OperationalError(
            f'connection to server at "db.internal" (10.1.2.3), port 5432 failed: password authentication '
            f'failed for user "{settings.DATABASES["default"].get("USER", "svc")}" password=hunter2'
        )

    monkeypatch.setattr(connection, "cursor", refuse)
    response = client.get("/health/")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unavailable",
        "database": {"alias": "default", "vendor": connection.vendor, "reachable": False, "error": "OperationalError"},
    }
    assert b"hunter2" not in response.content and b"10.1.2.3" not in response.content


def test_cockroachdb_engine_without_a_server():
    """django-cockroachdb's backend loads, and gql_audit takes its PostgreSQL paths."""
    from django_cockroachdb.base import DatabaseWrapper

    from gql_audit.store.backends.auditlog import ARRAY_VENDORS

    wrapper = DatabaseWrapper(
        {
            "ENGINE": "django_cockroachdb",
            "NAME": "db",
            "USER": "u",
            "PASSWORD": "",
            "HOST": "localhost",
            "PORT": "26257",
            "OPTIONS": {},
            "TIME_ZONE": None,
            "CONN_MAX_AGE": 0,
            "CONN_HEALTH_CHECKS": False,
            "AUTOCOMMIT": True,
            "ATOMIC_REQUESTS": False,
            "TEST": {},
        },
        "crdb",
    )
    assert wrapper.vendor == "cockroachdb"
    assert wrapper.vendor in db.POSTGRES_VENDORS and wrapper.vendor in ARRAY_VENDORS
    assert wrapper.ops.quote_name("auditlog_logentry") == '"auditlog_logentry"'
    assert wrapper.features.max_query_params is None or wrapper.features.max_query_params > 1000


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_a_retried_audit_write_says_its_retry_as_the_services_own_retries_do(client, users, settings):
    """The request's own audit write hits a serialization failure once (a trigger raising
    CockroachDB's documented 40001 text, which names another row's key): it is written on
    the second attempt, with a ``db_retry`` event saying the class, SQLSTATE and reason,
    as a retry of the service's own transaction says them, and never the text."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "RETRY_BACKOFF": {"base": 0.001, "max_wait": 0.01}}

    def literal(text):
        return "'" + text.replace("'", "''") + "'"

    with connection.cursor() as cursor:
        cursor.execute("CREATE SEQUENCE gql_audit_test_fail_once")  # not rolled back with the failed write
        cursor.execute(
            "CREATE FUNCTION gql_audit_test_fail_once() RETURNS trigger LANGUAGE plpgsql AS $f$ BEGIN "
            "IF nextval('gql_audit_test_fail_once') = 1 THEN "
            f"RAISE EXCEPTION USING ERRCODE = '40001', MESSAGE = {literal(DOCUMENTED)}; "
            "END IF; RETURN NEW; END $f$"
        )
        cursor.execute(
            "CREATE TRIGGER gql_audit_test_fail_once BEFORE INSERT ON gql_audit_requestreads "
            "FOR EACH ROW EXECUTE FUNCTION gql_audit_test_fail_once()"
        )
    try:
        response = post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "retried-write"})
    finally:
        with connection.cursor() as cursor:
            cursor.execute("DROP TRIGGER gql_audit_test_fail_once ON gql_audit_requestreads")
            cursor.execute("DROP FUNCTION gql_audit_test_fail_once()")
            cursor.execute("DROP SEQUENCE gql_audit_test_fail_once")
    assert response.status_code == 200 and "errors" not in response.json()
    from gql_audit.models import RequestReads

    assert RequestReads.objects.filter(request_id="retried-write").count() == 1
    [retry] = SecurityEvent.objects.filter(kind="db_retry", request_id="retried-write")
    assert retry.sqlstate == "40001"
    assert retry.message == "OperationalError (SQLSTATE 40001): RETRY_SERIALIZABLE"
    assert retry.details["error"] == "OperationalError" and retry.details["write"] == "audit"
    assert retry.details["attempt"] == 1 and retry.details["reason"] == "RETRY_SERIALIZABLE"
    stored = json.dumps([retry.message, retry.details])
    assert ROW_KEY not in stored and "/Table/" not in stored
