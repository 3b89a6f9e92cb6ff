"""Real PostgreSQL faults: the database failing at authentication, refusing or
dropping the audit write, and refusing a change entry.

Every fault is made on the server, not by raising a fake exception: a table
locked by another session under a statement timeout, the backend terminated
with ``pg_terminate_backend``, new connections refused (``ALLOW_CONNECTIONS
false``), ``INSERT`` revoked, a trigger that raises. Each test then checks what
the client got, what reached the tables and what reached the fallback log, and
that neither the token, a password, nor the database's address leaked anywhere.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time

import django.db.utils
import graphene_django.views
import psycopg
import pytest
from auditlog.models import LogEntry
from django.db import DatabaseError, connection, connections

from example_service.models import Document, Profile
from gql_audit.conf import conf
from gql_audit.errors import AUTH_UNAVAILABLE, INTERNAL_ERROR, MESSAGES, sqlstate_of
from gql_audit.history import request_trail
from gql_audit.models import SecurityEvent
from tests.conftest import codes, make_token, post_graphql, stored_text

pytestmark = pytest.mark.postgres

#: The client's address, forwarded by the trusted test proxy (127.0.0.1): no record
#: of a request then has any reason to contain the database host when it is 127.0.0.1.
CLIENT = "198.51.100.7"
#: Passwords of the ``users`` fixture.
USER_PASSWORDS = ("alice-password", "bob-password", "carol-password")
#: Names that legitimately appear in records; a database password equal to a part
#: of one (the local setup uses ``gql_audit``) is looked for only in credential shapes.
BENIGN_NAMES = ("gql_audit", "auditlog_logentry", "gql_audit_securityevent", "example_service")

MIXED = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
#: Four Document objects read (three public, alice's secret) and one resolver error.
READS_AND_ERROR = '{ publicDocuments { title } documents { title } document(id: "bm9wZQ==") { title } }'
PUBLIC_TITLES = ["alice public", "bob public", "carol public"]
READ_BY_ALICE = ["alice public", "alice secret", "bob public", "carol public"]


# --- helpers ------------------------------------------------------------------------


def admin_connection(dbname: str | None = None) -> psycopg.Connection:
    """A connection of its own to the test database (or ``dbname``), outside Django."""
    s = connection.settings_dict
    return psycopg.connect(
        host=s["HOST"],
        port=s["PORT"],
        user=s["USER"],
        password=s["PASSWORD"],
        dbname=dbname or s["NAME"],
        autocommit=True,
        connect_timeout=5,
    )


def backend_pid(alias: str = "default") -> int:
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def terminate(admin: psycopg.Connection, pid: int) -> None:
    """Kill the backend ``pid`` and wait until it is gone (so the next statement
    reliably gets the server's 57P01, not a race)."""
    assert admin.execute("SELECT pg_terminate_backend(%s)", [pid]).fetchone()[0] is True
    deadline = time.monotonic() + 10
    while admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
        assert time.monotonic() < deadline, f"backend {pid} did not exit"
        time.sleep(0.01)


def request(client, query, *, rid, token=None, variables=None):
    return post_graphql(
        client, query, variables=variables, token=token, headers={"X-Request-ID": rid, "X-Forwarded-For": CLIENT}
    )


def audit_lines(caplog) -> list[dict]:
    """The fallback log: ``gql_audit.audit`` records at ERROR, as dicts."""
    lines = []
    for record in caplog.records:
        if record.name == "gql_audit.audit" and record.levelno == logging.ERROR:
            payload = record.gql_audit_payload
            assert json.loads(record.getMessage()) == payload
            lines.append(payload)
    return lines


def titles(object_pks) -> list[str]:
    """The titles of the documents with these primary keys, sorted (a key twice, its title twice)."""
    return sorted(Document.objects.get(pk=pk).title for pk in object_pks)


def secrets(*tokens: str) -> list[str]:
    """The values that must appear nowhere: tokens, the users' passwords, the
    database password (when it is not also the name of something recorded)."""
    found = [t for t in tokens if t] + list(USER_PASSWORDS)
    password = connection.settings_dict.get("PASSWORD") or ""
    if len(password) >= 4 and not any(password in name for name in BENIGN_NAMES):
        found.append(password)
    return found


def server_detail_patterns() -> list[re.Pattern]:
    """How the database's address and credentials look in driver text and DSNs."""
    s = connection.settings_dict
    host, port, user = str(s["HOST"]), str(s["PORT"]), str(s["USER"])
    password = str(s.get("PASSWORD") or "")
    patterns = [
        re.escape(host),
        rf"port\W{{0,3}}{port}\b",
        rf":{port}\b",
        r"server at",
        r"\bhost\s*=",
        r"\bdbname\s*=",
        r"(?i)\bpassword\s*=",
        rf"\buser\W{{0,3}}{re.escape(user)}\b",
        r"(?i)postgres(ql)?://",
    ]
    if password:
        patterns += [rf"(?i)password\W{{0,4}}{re.escape(password)}", rf":{re.escape(password)}@"]
    return [re.compile(p) for p in patterns]


def assert_clean(text: str, *, tokens: tuple[str, ...] = (), server_details: bool = True, where: str = "") -> None:
    for secret in secrets(*tokens):
        assert secret not in text, f"{secret!r} leaked into {where}"
    if server_details:
        for pattern in server_detail_patterns():
            assert not pattern.search(text), f"{pattern.pattern!r} found in {where}: {text[:2000]}"


def assert_body_clean(response, *, tokens: tuple[str, ...] = ()) -> None:
    text = response.content.decode()
    tables = ("auth_user", "auditlog_logentry", "gql_audit_requestreads")
    for marker in ("Traceback", "LINE 1", "psycopg", "SQLSTATE", *tables, "SELECT", "INSERT"):
        assert marker not in text, f"{marker!r} in the response: {text}"
    assert_clean(text, tokens=tokens, where="the response")


@contextlib.contextmanager
def audit_alias(settings, alias):
    """``AUDIT_DATABASE`` = ``alias``, its connection open before the fault."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUDIT_DATABASE": alias}
    if alias is not None:
        connections[alias].ensure_connection()
    yield


# --- a. the database fails during authentication ---------------------------------------


@contextlib.contextmanager
def user_lookup_times_out(failed):
    """``auth_user`` locked by another session, Django's session under a statement
    timeout: the authenticator's lookup fails with 57014.

    The lock is released as soon as a statement on ``auth_user`` failed: held on,
    it would also block the audit write's COMMIT, whose deferred foreign-key
    checks lock the referenced table even for a NULL actor (and PostgreSQL does
    not apply statement_timeout to COMMIT; lock_timeout bounds it here).
    """
    with admin_connection() as holder:
        holder.execute("SET lock_timeout = '5s'")
        holder.execute("BEGIN")
        holder.execute("LOCK TABLE auth_user IN ACCESS EXCLUSIVE MODE")
        held = [True]

        def release():
            if held:
                holder.execute("COMMIT")
                held.clear()

        def note_failures(execute, sql, params, many, context):
            try:
                return execute(sql, params, many, context)
            except Exception as exc:
                failed.append((sql, sqlstate_of(exc)))
                if '"auth_user"' in sql:
                    release()
                raise

        with connection.cursor() as cursor:
            cursor.execute("SET statement_timeout = '300ms'")
            cursor.execute("SET lock_timeout = '5s'")
        try:
            with connection.execute_wrapper(note_failures):
                yield
        finally:
            release()
            with connection.cursor() as cursor:
                cursor.execute("RESET statement_timeout")
                cursor.execute("RESET lock_timeout")


@pytest.mark.django_db(transaction=True)
def test_user_lookup_times_out_on_a_locked_table(client, users, caplog):
    """Another session holds auth_user locked; the lookup hits statement_timeout (57014)."""
    caplog.set_level(logging.INFO)
    jwt = make_token("alice")
    failed = []
    with user_lookup_times_out(failed):
        response = request(client, MIXED, rid="auth-timeout", token=jwt)

    # Only the authenticator's user lookup failed, on the server's timeout.
    assert len(failed) == 1, failed
    sql, sqlstate = failed[0]
    assert '"auth_user"' in sql and '"username"' in sql and sqlstate == "57014"

    assert response.status_code == 200
    body = response.json()
    assert codes(body) == {("me",): AUTH_UNAVAILABLE}
    (error,) = body["errors"]
    assert error["message"] == MESSAGES[AUTH_UNAVAILABLE]
    assert body["data"]["serviceStatus"] == {"ok": True} and body["data"]["me"] is None
    assert sorted(d["title"] for d in body["data"]["publicDocuments"]) == PUBLIC_TITLES
    assert_body_clean(response, tokens=(jwt,))

    (event,) = SecurityEvent.objects.filter(request_id="auth-timeout")
    assert (event.kind, event.severity, event.sqlstate) == ("db_error", "error", "57014")
    assert event.message == MESSAGES[AUTH_UNAVAILABLE] and event.actor_id is None
    assert event.details["code"] == AUTH_UNAVAILABLE and event.details["paths"] == ["me"]
    assert event.details["reason"].startswith("OperationalError (SQLSTATE 57014)")
    assert event.remote_addr == CLIENT and event.operation["type"] == "query"
    # Public reads are still audited, without an actor.
    reads = request_trail("auth-timeout").reads
    assert titles(read.object_pk for read in reads) == PUBLIC_TITLES and {read.actor_id for read in reads} == {None}
    assert not SecurityEvent.objects.filter(kind__in=["token_invalid", "token_expired"]).exists()
    assert audit_lines(caplog) == []
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt,), where="the logs")


@pytest.mark.django_db(transaction=True)
def test_user_lookup_timeout_reason_has_the_servers_message(client, users):
    """docs: details.reason is the class and SQLSTATE, plus the server's primary
    message when the failure is not about connecting or logging in."""
    with user_lookup_times_out([]):
        request(client, "{ me { username } }", rid="auth-timeout-reason", token=make_token("alice"))
    event = SecurityEvent.objects.get(request_id="auth-timeout-reason")
    assert event.details["reason"] == (
        "OperationalError (SQLSTATE 57014): canceling statement due to statement timeout"
    )


@pytest.mark.django_db(transaction=True, databases=["default", "audit"])
@pytest.mark.parametrize("alias", ["audit", None], ids=["audit-alias", "same-connection"])
def test_backend_terminated_during_the_user_lookup(client, users, caplog, settings, alias):
    """The server kills Django's session (57P01) as the authenticator queries the user."""
    caplog.set_level(logging.INFO)
    jwt = make_token("alice")
    pid = backend_pid()
    lookups = []

    def terminate_at_user_lookup(execute, sql, params, many, context):
        if '"auth_user"' in sql and not lookups:
            lookups.append(sql)
            terminate(admin, pid)
        return execute(sql, params, many, context)

    try:
        with admin_connection() as admin, audit_alias(settings, alias):
            assert alias is None or backend_pid(alias) != pid
            with connection.execute_wrapper(terminate_at_user_lookup):
                response = request(client, MIXED, rid="auth-killed", token=jwt)
    finally:
        connection.close()  # the test client, like Django, never reopens it mid-request

    assert len(lookups) == 1 and '"username"' in lookups[0]
    assert response.status_code == 200
    body = response.json()
    # The private field: unavailable, not invalid. The public field that needs the
    # dead connection: an internal error, masked.
    assert codes(body) == {("me",): AUTH_UNAVAILABLE, ("publicDocuments",): INTERNAL_ERROR}
    assert body["data"] == {"serviceStatus": {"ok": True}, "publicDocuments": None, "me": None}
    (internal,) = [e for e in body["errors"] if e["path"] == ["publicDocuments"]]
    assert internal["extensions"]["request_id"] == "auth-killed"
    assert_body_clean(response, tokens=(jwt,))

    if alias is not None:
        events = list(SecurityEvent.objects.filter(request_id="auth-killed").values())
        assert audit_lines(caplog) == []
    else:
        # The audit write needs the same dead connection: everything is in the log.
        lines = audit_lines(caplog)
        assert lines[0]["event"] == "audit_write_failed"
        assert (lines[0]["access_entries"], lines[0]["security_events"]) == (0, 2)
        events = [line for line in lines[1:] if line["event"] == "security_event"]
        assert len(events) == len(lines) - 1
        assert not SecurityEvent.objects.filter(request_id="auth-killed").exists()
    auth = [e for e in events if e["message"] == MESSAGES[AUTH_UNAVAILABLE]]
    assert len(auth) == 1, events
    (auth,) = auth
    assert (auth["kind"], auth["sqlstate"], auth["actor_id"]) == ("db_error", "57P01", None)
    assert auth["details"]["reason"].startswith("OperationalError (SQLSTATE 57P01)")
    assert auth["request_id"] == "auth-killed" and auth["remote_addr"] == CLIENT
    (resolver,) = [e for e in events if e is not auth]
    assert (resolver["kind"], resolver["path"]) == ("db_error", "publicDocuments")
    # The auth event never carries the server's address: checked on it alone, as
    # the resolver's event keeps the driver's full text by design.
    assert_clean(json.dumps(auth, default=str), tokens=(jwt,), where="the authentication event")
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt,), server_details=False, where="the logs")


@pytest.mark.django_db(transaction=True, databases=["default", "audit"])
@pytest.mark.parametrize("alias", ["audit", None], ids=["audit-alias", "same-connection"])
def test_database_refuses_connections_at_authentication(client, users, caplog, settings, alias):
    """Django must connect for the lookup and the server refuses it: libpq's text
    then names the host and port, which must not reach any event."""
    caplog.set_level(logging.INFO)
    jwt = make_token("alice")
    name = connection.settings_dict["NAME"]
    # From the maintenance database: a session cannot lock out its own database.
    with admin_connection("postgres") as admin, audit_alias(settings, alias):
        connection.close()
        admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS false')
        try:
            response = request(client, "{ serviceStatus { ok } me { username } }", rid="auth-refused", token=jwt)
        finally:
            admin.execute(f'ALTER DATABASE "{name}" WITH ALLOW_CONNECTIONS true')
            connection.close()

    assert response.status_code == 200
    body = response.json()
    assert codes(body) == {("me",): AUTH_UNAVAILABLE}
    assert body["data"] == {"serviceStatus": {"ok": True}, "me": None}
    assert_body_clean(response, tokens=(jwt,))

    if alias is not None:
        (event,) = SecurityEvent.objects.filter(request_id="auth-refused").values()
        assert audit_lines(caplog) == []
    else:
        lines = audit_lines(caplog)
        assert [line["event"] for line in lines] == ["audit_write_failed", "security_event"]
        event = lines[1]
    assert (event["kind"], event["message"]) == ("db_error", MESSAGES[AUTH_UNAVAILABLE])
    # No SQLSTATE: the server answered the connection attempt with a FATAL that
    # libpq only reports as text.
    assert event["sqlstate"] == "" and event["details"]["reason"] == "OperationalError"
    assert_clean(json.dumps(event, default=str), tokens=(jwt,), where="the authentication event")
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    security_lines = [json.dumps(line) for line in audit_lines(caplog) if line["event"] == "security_event"]
    assert_clean("\n".join(security_lines), tokens=(jwt,), where="the logged events")
    assert_clean(caplog.text, tokens=(jwt,), server_details=False, where="the logs")


# --- b. the database refuses the audit write ------------------------------------------


@contextlib.contextmanager
def insert_revoked(*tables):
    """The role loses INSERT on ``tables`` (an owner may revoke its own privileges)."""
    with admin_connection() as admin:
        for table in tables:
            admin.execute(f"REVOKE INSERT ON {table} FROM CURRENT_USER")
        try:
            yield
        finally:
            for table in tables:
                admin.execute(f"GRANT INSERT ON {table} TO CURRENT_USER")


#: What an ACCESS entry in the fallback log holds (docs/events.md).
ACCESS_KEYS = {
    "model",
    "object_pk",
    "object_repr",
    "actor_id",
    "actor_email",
    "cid",
    "remote_addr",
    "timestamp",
    "gql_audit",
}


def check_access_line(line, users, rid):
    """An access entry in the log carries what its LogEntry row would have."""
    assert ACCESS_KEYS <= set(line), sorted(line)
    assert line["model"] == "example_service.Document" and line["cid"] == rid
    document = Document.objects.get(pk=line["object_pk"])
    # Named by its __str__ where the records keep the instance (the auditlog store), else by model and key.
    named = document.title if conf.ACCESS_STORE == "auditlog" else f"example_service.Document {document.pk}"
    assert line["object_repr"] == named
    assert (line["actor_id"], line["actor_email"]) == (users["alice"].pk, "alice@example.org")
    assert line["remote_addr"] == CLIENT and line["timestamp"]
    data = line["gql_audit"]
    assert data["request_id"] == rid and data["fields"] == ["title"] and data["path"]
    assert data["operation"]["type"] == "query" and len(data["operation"]["hash"]) == 64
    assert data["actor"] == {"id": users["alice"].pk, "username": "alice"}
    assert data["db"]["vendor"] == connection.vendor


def check_event_line(line, users, rid):
    """A security event in the log carries every column of its row (but the random id)."""
    columns = {f.attname for f in SecurityEvent._meta.concrete_fields} - {"id"}
    assert columns <= set(line), sorted(columns - set(line))
    assert (line["kind"], line["path"], line["request_id"]) == ("graphql_error", "document", rid)
    assert line["actor_id"] == users["alice"].pk and line["remote_addr"] == CLIENT
    assert line["details"]["count"] == 1 and line["details"]["exception"] and line["message"]
    assert line["created_at"] and line["severity"] == "error"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "refused",
    [("gql_audit_requestreads",), ("gql_audit_securityevent",), ("gql_audit_requestreads", "gql_audit_securityevent")],
    ids=["reads", "securityevent", "both"],
)
@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_insert_privilege_revoked(client, users, caplog, settings, refused, fail_closed):
    caplog.set_level(logging.INFO)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "FAIL_CLOSED": fail_closed}
    jwt = make_token("alice")
    with insert_revoked(*refused):
        response = request(client, READS_AND_ERROR, rid="revoked", token=jwt)

    if fail_closed:
        assert response.status_code == 503
        assert response.json() == {
            "errors": [
                {
                    "message": "The audit trail could not be written; the response was withheld.",
                    "extensions": {"code": "AUDIT_UNAVAILABLE"},
                }
            ]
        }
        assert response["X-Request-ID"] == "revoked"
    else:
        assert response.status_code == 200
        body = response.json()
        assert sorted(d["title"] for d in body["data"]["documents"]) == READ_BY_ALICE
        assert sorted(d["title"] for d in body["data"]["publicDocuments"]) == PUBLIC_TITLES
        assert codes(body) == {("document",): None}
    assert_body_clean(response, tokens=(jwt,))

    lines = audit_lines(caplog)
    head, rest = lines[0], lines[1:]
    assert head["event"] == "audit_write_failed" and "permission denied for table" in head["error"]
    logged_access = [line for line in rest if line["event"] == "access"]
    logged_events = [line for line in rest if line["event"] == "security_event"]
    assert len(logged_access) + len(logged_events) == len(rest)
    assert (head["access_entries"], head["security_events"]) == (len(logged_access), len(logged_events))

    stored_reads = request_trail("revoked").reads
    stored_events = SecurityEvent.objects.filter(request_id="revoked")
    if "gql_audit_requestreads" in refused:
        assert titles(line["object_pk"] for line in logged_access) == READ_BY_ALICE
        for line in logged_access:
            check_access_line(line, users, "revoked")
        assert stored_reads == []
    else:
        assert logged_access == []
        assert titles(read.object_pk for read in stored_reads) == READ_BY_ALICE
        assert {read.actor_id for read in stored_reads} == {users["alice"].pk}
    if "gql_audit_securityevent" in refused:
        (line,) = logged_events
        check_event_line(line, users, "revoked")
        assert not stored_events.exists()
    else:
        assert logged_events == []
        (event,) = stored_events
        assert (event.kind, event.path) == ("graphql_error", "document")
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt,), server_details=False, where="the logs")


@pytest.fixture
def refuse_one_access_entry():
    """A trigger refusing the ACCESS entry of one object: the others must still land."""
    created = []

    def install(object_pk):
        with admin_connection() as admin:
            admin.execute(
                "CREATE FUNCTION gqa_test_refuse_one() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.action = 3 AND NEW.object_pk = '{int(object_pk)}' THEN "
                "RAISE EXCEPTION 'entry refused by the test trigger' USING ERRCODE = '23514'; "
                "END IF; RETURN NEW; END $$"
            )
            admin.execute(
                "CREATE TRIGGER gqa_test_refuse_one BEFORE INSERT ON auditlog_logentry "
                "FOR EACH ROW EXECUTE FUNCTION gqa_test_refuse_one()"
            )
        created.append(object_pk)

    yield install
    if created:
        with admin_connection() as admin:
            admin.execute("DROP TRIGGER IF EXISTS gqa_test_refuse_one ON auditlog_logentry")
            admin.execute("DROP FUNCTION IF EXISTS gqa_test_refuse_one()")


@pytest.mark.django_db(transaction=True)
def test_one_refused_entry_does_not_take_the_others(client, users, caplog, settings, refuse_one_access_entry):
    # One row per object read is the auditlog store's: the default store writes a request's reads as one row.
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "auditlog"}
    caplog.set_level(logging.INFO)
    jwt = make_token("alice")
    secret = Document.objects.get(title="alice secret")
    refuse_one_access_entry(secret.pk)
    response = request(client, READS_AND_ERROR, rid="one-refused", token=jwt)
    assert response.status_code == 200 and len(response.json()["data"]["documents"]) == 4
    assert_body_clean(response, tokens=(jwt,))

    lines = audit_lines(caplog)
    assert [line["event"] for line in lines] == ["audit_write_failed", "access"]
    assert (lines[0]["access_entries"], lines[0]["security_events"]) == (1, 0)
    assert "entry refused by the test trigger" in lines[0]["error"]
    logged = lines[1]
    check_access_line(logged, users, "one-refused")
    assert logged["object_pk"] == str(secret.pk)
    stored = {e.object_repr: e for e in LogEntry.objects.filter(cid="one-refused", action=LogEntry.Action.ACCESS)}
    assert sorted(stored) == PUBLIC_TITLES
    # The logged entry is the row it would have been.
    row = stored["alice public"]
    data = row.additional_data["gql_audit"]
    assert (row.actor_id, row.actor_email, row.remote_addr) == (logged["actor_id"], logged["actor_email"], CLIENT)
    assert data["operation"] == logged["gql_audit"]["operation"]
    assert data["actor"] == logged["gql_audit"]["actor"] and data["request_id"] == logged["gql_audit"]["request_id"]
    assert SecurityEvent.objects.filter(request_id="one-refused", kind="graphql_error").count() == 1
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt,), server_details=False, where="the logs")


# --- c. the backend dies between the view and the audit write ----------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("fail_closed", [False, True], ids=["fail-open", "fail-closed"])
def test_backend_terminated_at_the_audit_write(client, users, caplog, settings, fail_closed):
    caplog.set_level(logging.INFO)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "FAIL_CLOSED": fail_closed}
    jwt = make_token("alice")
    pid = backend_pid()
    inserts = []

    def terminate_at_first_insert(execute, sql, params, many, context):
        if sql.startswith("INSERT INTO"):
            inserts.append(sql.split()[2])
            if len(inserts) == 1:
                terminate(admin, pid)
        return execute(sql, params, many, context)

    try:
        with admin_connection() as admin, connection.execute_wrapper(terminate_at_first_insert):
            response = request(client, READS_AND_ERROR, rid="killed-at-write", token=jwt)
    finally:
        connection.close()

    # One attempt: a dead connection is not tried again record by record.
    assert inserts == ['"gql_audit_requestreads"']
    if fail_closed:
        assert response.status_code == 503
        assert codes(response.json()) == {(): "AUDIT_UNAVAILABLE"}
        assert b"public" not in response.content
    else:
        assert response.status_code == 200
        body = response.json()
        assert sorted(d["title"] for d in body["data"]["documents"]) == READ_BY_ALICE
    text = response.content.decode()
    for driver_text in ("terminating connection", "administrator", "closed", "OperationalError"):
        assert driver_text not in text
    assert_body_clean(response, tokens=(jwt,))

    lines = audit_lines(caplog)
    head = lines[0]
    assert head["event"] == "audit_write_failed" and "terminating connection" in head["error"]
    assert (head["access_entries"], head["security_events"]) == (4, 1)
    access = [line for line in lines if line["event"] == "access"]
    (event,) = [line for line in lines if line["event"] == "security_event"]
    assert len(lines) == 6
    assert titles(line["object_pk"] for line in access) == READ_BY_ALICE
    for line in access:
        check_access_line(line, users, "killed-at-write")
    check_event_line(event, users, "killed-at-write")
    assert request_trail("killed-at-write").reads == []
    assert not SecurityEvent.objects.filter(request_id="killed-at-write").exists()
    assert_clean(stored_text(), tokens=(jwt,), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt,), server_details=False, where="the logs")


# --- d. the change entry of a mutation is refused ---------------------------------------


@pytest.fixture
def refuse_change_entries():
    """A trigger on auditlog's table raising for CREATE (0) and UPDATE (1) entries."""
    with admin_connection() as admin:
        admin.execute(
            "CREATE FUNCTION gqa_test_refuse_changes() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.action IN (0, 1) THEN RAISE EXCEPTION 'change entry refused by the test trigger'; END IF; "
            "RETURN NEW; END $$"
        )
        admin.execute(
            "CREATE TRIGGER gqa_test_refuse_changes BEFORE INSERT ON auditlog_logentry "
            "FOR EACH ROW EXECUTE FUNCTION gqa_test_refuse_changes()"
        )
    yield
    with admin_connection() as admin:
        admin.execute("DROP TRIGGER IF EXISTS gqa_test_refuse_changes ON auditlog_logentry")
        admin.execute("DROP FUNCTION IF EXISTS gqa_test_refuse_changes()")


LOGIN_THEN_CREATE = (
    "mutation Create($pw: String!, $title: String!) { "
    'tokenAuth(username: "alice", password: $pw) { token } '
    "createDocument(title: $title) { document { title } } }"
)
UPDATE_PROFILE = 'mutation Phone { updateProfile(phone: "555-0100") { profile { phone } } }'


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("atomic", [False, True], ids=["not-atomic", "atomic"])
@pytest.mark.parametrize("change", ["create", "update"])
def test_change_entry_refused(client, users, caplog, settings, monkeypatch, refuse_change_entries, atomic, change):
    caplog.set_level(logging.INFO)
    settings.GRAPHENE = {**settings.GRAPHENE, "ATOMIC_MUTATIONS": atomic}
    # graphene-django's view keeps the settings object it imported: overriding
    # GRAPHENE rebinds another one, so the view's own is patched too.
    monkeypatch.setattr(graphene_django.views.graphene_settings, "ATOMIC_MUTATIONS", atomic)
    jwt = make_token("alice")
    alice = users["alice"]
    rid = f"change-{change}"
    if change == "create":
        response = request(
            client, LOGIN_THEN_CREATE, rid=rid, token=jwt, variables={"pw": "alice-password", "title": "unlogged"}
        )
        field, model, action = "createDocument", "example_service.Document", 0
    else:
        response = request(client, UPDATE_PROFILE, rid=rid, token=jwt)
        field, model, action = "updateProfile", "example_service.Profile", 1

    assert response.status_code == 200
    body = response.json()
    assert codes(body) == {(field,): INTERNAL_ERROR}
    (error,) = body["errors"]
    assert error["extensions"] == {"code": INTERNAL_ERROR, "request_id": rid}
    assert error["message"] == f"{MESSAGES[INTERNAL_ERROR]} Request id: {rid}"
    assert body["data"][field] is None
    issued = body["data"]["tokenAuth"]["token"] if change == "create" else ""
    assert change == "update" or issued
    text = response.content.decode()
    for driver_text in ("refused by the test trigger", "PL/pgSQL", "CONTEXT", "P0001"):
        assert driver_text not in text
    assert_body_clean(response, tokens=(jwt,))  # the token tokenAuth issued is the client's to see

    if change == "create":
        kept = Document.objects.filter(title="unlogged")
        assert kept.exists() is not atomic  # without a transaction the change stays, unaudited
        object_pk = None if atomic else str(kept.get().pk)
    else:
        # auditlog writes an UPDATE entry in pre_save, before the UPDATE: the
        # refused entry stops the change itself, with or without a transaction.
        profile = Profile.objects.get(user=alice)
        assert profile.phone == ""
        object_pk = str(profile.pk)
    assert not LogEntry.objects.filter(cid=rid, action__in=[0, 1]).exists()

    (line,) = [line for line in audit_lines(caplog) if line["event"] == "change_entry_unwritten"]
    assert (line["model"], line["action"]) == (model, action)
    if object_pk is not None:
        assert line["object_pk"] == object_pk
    assert (line["actor_id"], line["actor_email"], line["cid"]) == (alice.pk, "alice@example.org", rid)
    assert line["remote_addr"] == CLIENT and line["timestamp"]
    assert "change entry refused by the test trigger" in line["error"]
    data = line["additional_data"]["gql_audit"]
    assert data["request_id"] == rid and data["operation"]["type"] == "mutation"
    assert data["actor"] == {"id": alice.pk, "username": "alice"} and data["path"] == [field]
    if change == "create":
        assert json.loads(json.dumps(line["changes"]))["title"][1] == "unlogged"
        assert line["object_repr"] == "unlogged"
    else:
        assert line["changes"]["phone"] == ["", "555-0100"]

    (event,) = SecurityEvent.objects.filter(request_id=rid, kind="db_error")
    assert (event.sqlstate, event.path, event.actor_id) == ("P0001", field, alice.pk)
    # RAISE EXCEPTION (P0001): a DatabaseError subclass, so masked.
    assert issubclass(getattr(django.db.utils, event.details["exception"]), DatabaseError)
    if change == "create":
        assert event.details["variables"] == {"pw": "[redacted]", "title": "unlogged"}
    assert_clean(stored_text(), tokens=(jwt, issued), where="the stored records")
    assert_clean(caplog.text, tokens=(jwt, issued), server_details=False, where="the logs")
