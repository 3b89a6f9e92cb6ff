"""The trail holds under hostile input, faults and misuse.

One test (or a few) per way the trail could be made to lie, leak or go quiet:
secrets echoed by error messages, values the database refuses, a database
outage while authenticating, chosen request ids, driver text reaching clients,
request ids in SQL comments, malformed bodies, cookie tokens without CSRF,
schema suggestions, failed logins, personal data in the request line, change
entries parted from their data, killed requests, graphql_jwt's argument tokens,
and identity mappers under ASGI. They run on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import re

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.db import DatabaseError, OperationalError, connection
from django.test import Client

from example_service.models import Document
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.history import request_trail
from gql_audit.models import RequestReads, SecurityEvent
from gql_audit.store import events as event_rows
from tests.conftest import SQLRecorder, codes, make_token, post_graphql, stored_text, table_away

pytestmark = pytest.mark.django_db

LOGIN = "mutation L($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"


def all_log_text(caplog) -> str:
    return "\n".join(f"{r.name} {r.getMessage()} {r.__dict__}" for r in caplog.records)


def events(request_id: str) -> list[SecurityEvent]:
    return list(SecurityEvent.objects.filter(request_id=request_id).order_by("created_at"))


def replace_resolver(monkeypatch, field: str, resolver) -> None:
    """Make the example schema's ``Query.<field>`` resolve with ``resolver`` for this test."""
    from example_service.schema import schema

    monkeypatch.setattr(schema.graphql_schema.query_type.fields[field], "resolve", resolver)


# --- 1. Secrets never stored or logged, wherever they come from ----------------------


@pytest.mark.graphql_core
def test_secrets_reach_no_row_and_no_log_line_through_any_path(client, users, caplog, settings):
    caplog.set_level(logging.DEBUG)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "LOG_VARIABLE_VALUES": True}
    valid_jwt = make_token("alice")
    long_secret = "Long-Secret-" + "x7" * 150  # echoed cut short by graphql-core: 'Long-Sec...x7x7'
    secrets = {
        "variable": "Wrong-Secret-Pw-123",
        "wrong type": "Coerce-Secret-Pw-9",
        "inline": "Inline-Secret-Pw-7",
        "inline wrong type": "987654321987",
        "escaped": 'Esc"ape\\d-Pw\t-5',
        "long": long_secret,
        "jwt as variable": valid_jwt,
        "cookie": "Cookie-Token-Value-42",
        "header": "Header-Bearer-Value-77",
    }
    post_graphql(client, LOGIN, variables={"u": "alice", "p": secrets["variable"]})
    post_graphql(
        client,
        LOGIN,  # a value of the wrong type is echoed by graphql-core's coercion error
        variables={"u": "alice", "p": [secrets["wrong type"]]},
    )
    post_graphql(client, 'mutation { tokenAuth(username: "alice", password: "%s") { token } }' % secrets["inline"])
    post_graphql(
        client,
        'mutation { tokenAuth(username: "alice", password: %s) { token } }' % secrets["inline wrong type"],
    )
    post_graphql(
        client,
        LOGIN,
        variables={"u": "alice", "p": {"nested": secrets["escaped"]}},
    )
    post_graphql(
        client,
        LOGIN,
        variables={"u": "alice", "p": [secrets["long"]]},
    )
    post_graphql(
        client, "mutation V($t: String!) { verifyToken(token: $t) { payload } }", variables={"t": {"t": valid_jwt}}
    )
    client.cookies["JWT"] = secrets["cookie"]
    post_graphql(client, "{ serviceStatus { ok } me { username } }")
    del client.cookies["JWT"]
    post_graphql(client, "{ me { username } }", HTTP_AUTHORIZATION=f"JWT {secrets['header']}")
    post_graphql(client, "{ me { username } }", token=secrets["header"] + "\x00\ud800")

    rows, logs = stored_text(), all_log_text(caplog)
    assert SecurityEvent.objects.count() >= 8
    for where, secret in secrets.items():
        for form in {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1]}:
            assert form not in rows, f"{where} secret stored"
            assert form not in logs, f"{where} secret logged"
    for fragment in (long_secret[:20], long_secret[-20:]):
        assert fragment not in rows and fragment not in logs
    # What stays is useful: the coercion error is there, with the value scrubbed
    # (graphql-core 3.2 words it "got invalid value", 3.3 "has invalid value").
    messages = list(SecurityEvent.objects.values_list("message", flat=True))
    assert any(re.search("(got|has) invalid value", m) and "[redacted]" in m for m in messages), messages


# --- 2. No client value can fail the write of a request's records --------------------


@pytest.mark.django_db(transaction=True)
def test_nul_surrogates_and_control_characters_are_stored_as_safe_data(client, users, caplog):
    hostile = "a\x00b\ud800c\x1b[31m\r\nd"
    body = (
        '{"query": "mutation C($t: String!, $c: String) { createDocument(title: $t, classification: $c) '
        '{ document { id } } } ", "variables": {"t": "ok", "c": "x\\u0000y\\ud800z\\u001b[31m"}}'
    )
    response = client.post(
        "/graphql/",
        body,
        content_type="application/json",
        HTTP_AUTHORIZATION=f"JWT {make_token('alice')}",
        HTTP_X_REQUEST_ID="hostile-1",
    )
    assert response.status_code == 200
    (event,) = events("hostile-1")
    assert event.kind == "graphql_error"
    stored = json.dumps(event.details["variables"])
    assert "\\\\x00" in stored and "\\\\ud800" in stored  # visible escapes, not the raw characters
    # The same request's reads were written beside it.
    post_graphql(
        client,
        "query Q($x: ID!) { documents { title } node(id: $x) { id } }",
        variables={"x": hostile},
        token=make_token("alice"),
        headers={"X-Request-ID": "hostile-2"},
    )
    assert len(request_trail("hostile-2").reads) == 4
    assert [e.kind for e in events("hostile-2")] == ["graphql_error"]
    # Huge and deeply nested values: the event is written, bounded.
    post_graphql(
        client,
        "query Q($x: ID!) { node(id: $x) { id } }",
        variables={"x": [[[[[[[[{"k": hostile * 100_000}]]]]]]]]},
        headers={"X-Request-ID": "hostile-3"},
    )
    (deep,) = events("hostile-3")
    assert len(json.dumps(deep.details)) < 20_000 and len(deep.message) <= 2000
    assert not [r for r in caplog.records if r.name == "gql_audit.audit" and r.levelno >= logging.ERROR]


def test_one_record_the_database_refuses_does_not_take_the_others(client, users, monkeypatch, caplog):
    real_insert = event_rows.insert_events

    def refuse_poison(events, alias):
        if any("poison" in e["message"] for e in events):
            raise DatabaseError("value refused")
        real_insert(events, alias)

    monkeypatch.setattr(event_rows, "insert_events", refuse_poison)
    query = "{ documents { title } me { username } }"
    from gql_audit.events import record_event

    def resolve_poison(root, info):
        record_event("forbidden", message="poison pill")
        return info.context.user

    replace_resolver(monkeypatch, "me", resolve_poison)
    post_graphql(client, query, token="not-a-token", headers={"X-Request-ID": "poison"})
    post_graphql(client, query, token=make_token("alice"), headers={"X-Request-ID": "poison-2"})
    # The token event of the first request and the reads of the second landed...
    assert [e.kind for e in events("poison")] == ["token_invalid"]
    assert len(request_trail("poison-2").reads) == 5  # 4 documents, alice
    # ...and the refused event is, complete, in the fallback log.
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.audit"]
    refused = [r for r in logged if r.get("event") == "security_event"]
    assert [r["message"] for r in refused] == ["poison pill"] and refused[0]["request_id"] == "poison-2"


# --- 3. AUTH_UNAVAILABLE ---------------------------------------------------------------


def test_database_failure_while_authenticating_is_not_a_bad_token(client, users, monkeypatch):
    from graphql_jwt.settings import jwt_settings

    def outage(username):
        raise OperationalError(
            'connection to server at "10.9.8.7", port 6543 failed: FATAL: password authentication failed for user "svc"'
        )

    monkeypatch.setattr(jwt_settings, "JWT_GET_USER_BY_NATURAL_KEY_HANDLER", outage)
    response = post_graphql(
        client, "{ serviceStatus { ok } me { username } }", token=make_token("alice"), headers={"X-Request-ID": "down"}
    )
    body = response.json()
    assert response.status_code == 200 and body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "AUTH_UNAVAILABLE"}
    (event,) = events("down")
    assert event.kind == "db_error" and event.details["code"] == "AUTH_UNAVAILABLE"
    assert event.details["paths"] == ["me"]
    text = stored_text() + response.content.decode()
    # The port as a number of its own: a timestamp's microseconds may hold the same digits.
    assert "10.9.8.7" not in text and not re.search(r"(?<![\d.])6543(?!\d)", text) and "svc" not in text
    assert not SecurityEvent.objects.filter(kind__in=["token_invalid", "token_expired"]).exists()


# --- 4. Request ids ----------------------------------------------------------------------


def test_request_id_is_believed_only_from_trusted_proxies(client, users):
    untrusted = {"REMOTE_ADDR": "203.0.113.9"}
    first = post_graphql(
        client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "mine"}, **untrusted
    )
    second = post_graphql(
        client, "{ documents { title } }", token=make_token("bob"), headers={"X-Request-ID": "mine"}, **untrusted
    )
    ids = {first["X-Request-ID"], second["X-Request-ID"]}
    assert len(ids) == 2 and "mine" not in ids
    rows = RequestReads.objects.filter(request_id__in=ids)
    assert sum(len(row.keys) for row in rows) == 8
    assert {row.context["client_request_id"] for row in rows} == {"mine"}
    actors = {row.request_id: row.actor["username"] for row in rows}
    assert actors == {first["X-Request-ID"]: "alice", second["X-Request-ID"]: "bob"}
    trusted = post_graphql(client, "{ serviceStatus { ok } }", headers={"X-Request-ID": "from-proxy"})
    assert trusted["X-Request-ID"] == "from-proxy"


def test_every_record_names_its_actor_after_the_user_is_gone(client, django_user_model):
    from example_service.models import Profile

    user = django_user_model.objects.create_user("noemail", email="", password="pw")
    Profile.objects.create(user=user, full_name="No Email")
    token = make_token("noemail")
    post_graphql(client, "{ me { username profile { phone } } }", token=token, headers={"X-Request-ID": "ne-1"})
    post_graphql(client, "mutation { deleteAccount { ok } }", token=token, headers={"X-Request-ID": "ne-2"})
    entries = LogEntry.objects.filter(cid__in=["ne-1", "ne-2"])
    assert entries.filter(action=LogEntry.Action.DELETE).exists()
    for entry in entries:
        assert entry.actor_id is None  # the row is gone...
        assert entry.additional_data["gql_audit"]["actor"] == {"id": user.pk, "username": "noemail"}  # ...not its name
    # The reads (the user and the profile) name the reader too.
    assert [read.actor for read in request_trail("ne-1").reads] == [{"id": user.pk, "username": "noemail"}] * 2


# --- 5. MASK_ERRORS ----------------------------------------------------------------------


@pytest.fixture
def documents_table_gone():
    with table_away("example_service_document"):
        yield


@pytest.mark.django_db(transaction=True)
def test_database_errors_reach_clients_masked(client, users, documents_table_gone):
    response = post_graphql(
        client,
        "{ serviceStatus { ok } documents { title } }",
        token=make_token("alice"),
        headers={"X-Request-ID": "mask"},
    )
    body = response.json()
    assert response.status_code == 200 and body["data"]["serviceStatus"] == {"ok": True}
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "INTERNAL_ERROR", "request_id": "mask"} and "mask" in error["message"]
    assert "example_service_document" not in response.content.decode()
    (event,) = events("mask")
    assert event.kind == "db_error" and "example_service_document" in event.message


def test_interface_errors_are_database_errors_too(client, users, monkeypatch):
    from django.db import InterfaceError

    def closed(root, info):
        raise InterfaceError('connection to server at "10.1.2.3", port 5432 failed: connection already closed')

    replace_resolver(monkeypatch, "me", closed)
    response = post_graphql(client, "{ me { username } }", token=make_token("alice"), headers={"X-Request-ID": "ie"})
    assert codes(response.json()) == {("me",): "INTERNAL_ERROR"} and "10.1.2.3" not in response.content.decode()
    (event,) = events("ie")
    assert event.kind == "db_error" and event.message == "InterfaceError" and "10.1.2.3" not in str(event.details)


@pytest.mark.django_db(transaction=True)
def test_a_database_error_event_keeps_no_value_of_the_row(client, users, monkeypatch):
    """PostgreSQL's DETAIL quotes the values of the row it refused: the event keeps the
    class, SQLSTATE and primary message (which names the constraint), not the values."""
    from django.db import connection

    def duplicate(root, info):
        with connection.cursor() as cursor:
            cursor.execute(
                "INSERT INTO auth_user (password, is_superuser, username, first_name, last_name, email, is_staff,"
                " is_active, date_joined) SELECT password, false, username, '', '', 'secret-row@example.org',"
                " false, true, date_joined FROM auth_user WHERE username = 'alice'"
            )

    replace_resolver(monkeypatch, "me", duplicate)
    response = post_graphql(client, "{ me { username } }", token=make_token("alice"), headers={"X-Request-ID": "dup"})
    assert codes(response.json()) == {("me",): "INTERNAL_ERROR"}
    (event,) = events("dup")
    assert event.kind == "db_error" and "IntegrityError" in event.message
    if connection.vendor in POSTGRES_VENDORS:
        assert event.sqlstate == "23505" and "unique constraint" in event.message
        assert "alice" not in event.message and "(username)" not in event.message
    else:
        assert "UNIQUE constraint failed: auth_user.username" in event.message
    assert "secret-row" not in event.message + str(event.details)


def test_mask_all_and_none(client, users, settings, monkeypatch):
    def broken(root, info):
        raise ValueError("internal detail /srv/app/secrets.py line 3")

    replace_resolver(monkeypatch, "me", broken)
    query = "{ me { username } }"
    token = make_token("alice")
    default = post_graphql(client, query, token=token).json()
    assert "internal detail" in default["errors"][0]["message"]  # "database" masks database errors only
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "MASK_ERRORS": "all"}
    masked = post_graphql(client, query, token=token).json()
    assert masked["errors"][0]["extensions"]["code"] == "INTERNAL_ERROR"
    assert "internal detail" not in json.dumps(masked)
    deliberate = post_graphql(
        client, 'mutation { createDocument(title: "t", classification: "x") { document { id } } }', token=token
    ).json()
    assert deliberate["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"  # a GraphQLError on purpose
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "MASK_ERRORS": "none"}
    assert "internal detail" in post_graphql(client, query, token=token).json()["errors"][0]["message"]


# --- 6. SQL_COMMENT for every request id the rules allow --------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "request_id",
    ["a", "A-Z.a_z:0-9", "req:1:%41", "0" * 128, "x::::", "a.b-c_d:e" * 14],
    ids=["one", "all-kinds", "colons", "longest", "many-colons", "long-mixed"],
)
def test_sql_comment_for_every_allowed_request_id(client, users, settings, request_id):
    from gql_audit.net import REQUEST_ID_PATTERN

    if not REQUEST_ID_PATTERN.fullmatch(request_id):
        request_id = request_id[:128].replace("%", "p")
    assert REQUEST_ID_PATTERN.fullmatch(request_id)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SQL_COMMENT": True}
    connection.close()
    seen = SQLRecorder()
    connection.ensure_connection()
    with connection.execute_wrapper(seen):
        read = post_graphql(
            client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": request_id}
        )
        write = post_graphql(
            client,
            'mutation { updateProfile(phone: "1") { profile { phone } } }',
            token=make_token("alice"),
            headers={"X-Request-ID": request_id},
        )
    for response in (read, write):
        assert response.status_code == 200 and "errors" not in response.json(), response.content
    assert any("request_id=" in sql for sql in seen)
    reads = request_trail(request_id).reads
    assert [read.model for read in reads].count("example_service.Document") == 4
    assert LogEntry.objects.filter(cid=request_id, action=LogEntry.Action.UPDATE).exists()


# --- 7. Malformed bodies -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "application/json"),
        (b'{"query": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json"),
        (b"{not json", "application/json"),
        (b"\xff\xfe{}", "application/json"),
        (b"\xff\xfe query", "application/graphql"),
        (b"[1, 2]", "application/json"),
        (b'"just a string"', "application/json"),
        (b'{"query": 5}', "application/json"),
        (b'{"query": "{ serviceStatus { ok } }", "variables": "{bad"}', "application/json"),
        (b'{"query": "{ serviceStatus { ok } }", "variables": [1]}', "application/json"),
        (
            b'{"query": "query Q($a: Int) { serviceStatus { ok } }", "variables": {"a": '
            + b"[" * 5000
            + b"]" * 5000
            + b"}}",
            "application/json",
        ),
        (b'{"query": "{ serviceStatus { ok } }", "operationName": 7}', "application/json"),
        (b'{"query": "' + b"{ a " * 20_000 + b'"}', "application/json"),
    ],
    ids=[
        "deep-json",
        "deep-query-value",
        "invalid-json",
        "not-utf8-json",
        "not-utf8-graphql",
        "list",
        "string",
        "query-not-string",
        "variables-invalid",
        "variables-list",
        "deep-variable",
        "operation-name-int",
        "deep-document",
    ],
)
def test_malformed_body_is_a_400_with_an_event(client, body, content_type):
    response = client.post("/graphql/", body, content_type=content_type, HTTP_X_REQUEST_ID="bad-body")
    assert response.status_code == 400, response.content[:300]
    errors = response.json()["errors"]
    assert errors and b"Traceback" not in response.content
    (event,) = events("bad-body")
    assert (event.kind, event.severity) == ("graphql_error", "warning")


# --- 8. Cookie tokens only with a passing CSRF check -------------------------------------


def test_cookie_token_needs_the_csrf_check_header_token_does_not(users, settings):
    csrf_client = Client(enforce_csrf_checks=True)
    csrf_client.cookies[settings.GRAPHQL_JWT.get("JWT_COOKIE_NAME", "JWT")] = make_token("alice")
    query = "{ serviceStatus { ok } me { username } }"
    forged = post_graphql(csrf_client, query, headers={"X-Request-ID": "csrf-1", "Origin": "https://evil.example"})
    assert codes(forged.json()) == {("me",): "UNAUTHENTICATED"}
    (event,) = [e for e in events("csrf-1") if e.kind == "forbidden"]
    assert event.details["rule"] == "csrf"
    # With the CSRF cookie and header a page of the same site sends, the cookie counts.
    csrf_client.get("/graphql/", HTTP_ACCEPT="text/html")
    csrf_token = csrf_client.cookies[settings.CSRF_COOKIE_NAME].value
    same_site = post_graphql(csrf_client, query, headers={"X-CSRFToken": csrf_token})
    assert same_site.json()["data"]["me"] == {"username": "alice"}
    header = post_graphql(Client(enforce_csrf_checks=True), query, token=make_token("bob"))
    assert header.json()["data"]["me"] == {"username": "bob"}


# --- 9. No field suggestions unless introspection is public -------------------------------


@pytest.mark.parametrize(("mode", "suggests"), [("public", True), ("authenticated", False), ("disabled", False)])
def test_field_suggestions_follow_introspection(client, settings, mode, suggests):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INTROSPECTION": mode}
    response = post_graphql(client, "{ documets { titel } }")
    assert response.status_code == 400
    message = response.json()["errors"][0]["message"]
    assert message.startswith("Cannot query field 'documets' on type 'Query'.")
    assert ("Did you mean" in message) is suggests and ("documents" in message) is suggests


# --- 10. Failed logins --------------------------------------------------------------------


@pytest.mark.parametrize("style", ["inline", "variables"])
def test_failed_login_names_the_username_tried(client, users, style):
    if style == "inline":
        post_graphql(
            client,
            'mutation { tokenAuth(username: "alice", password: "nope-nope") { token } }',
            headers={"X-Request-ID": "lf"},
        )
    else:
        post_graphql(client, LOGIN, variables={"u": "alice", "p": "nope-nope"}, headers={"X-Request-ID": "lf"})
    (event,) = events("lf")
    assert (event.kind, event.severity, event.details["username"], event.path) == (
        "login_failed",
        "warning",
        "alice",
        "tokenAuth",
    )
    assert "nope-nope" not in stored_text()


# --- 12. Change entries and their data never part ways silently ---------------------------


def test_atomicity_check(settings):
    from gql_audit.checks import check_dependencies

    assert "gql_audit.W004" not in [m.id for m in check_dependencies()]  # the example is atomic
    settings.GRAPHENE = {**settings.GRAPHENE, "ATOMIC_MUTATIONS": False}
    assert "gql_audit.W004" in [m.id for m in check_dependencies()]
    settings.DATABASES["default"]["ATOMIC_REQUESTS"] = True
    try:
        assert "gql_audit.W004" not in [m.id for m in check_dependencies()]
    finally:
        settings.DATABASES["default"]["ATOMIC_REQUESTS"] = False


@pytest.mark.django_db(transaction=True)
def test_failed_change_entry_goes_complete_to_the_log(client, users, caplog, settings):
    settings.GRAPHENE = {**settings.GRAPHENE, "ATOMIC_MUTATIONS": False}

    def refuse_logentry(execute, sql, params, many, context):
        if sql.startswith('INSERT INTO "auditlog_logentry"') and "ACCESS" not in sql and params and 1 in params[:8]:
            raise DatabaseError("auditlog table not writable")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse_logentry):
        response = post_graphql(
            client,
            'mutation { updateProfile(phone: "555-0100") { profile { phone } } }',
            token=make_token("alice"),
            headers={"X-Request-ID": "cl-1"},
        )
    assert codes(response.json()) == {("updateProfile",): "INTERNAL_ERROR"}
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if "change_entry_unwritten" in r.getMessage()]
    assert line["model"] == "example_service.Profile" and line["cid"] == "cl-1"
    assert line["actor_id"] == users["alice"].pk and line["changes"]["phone"] == ["", "555-0100"]
    assert line["additional_data"]["gql_audit"]["actor"]["username"] == "alice"


# --- 13. A request the server kills still leaves a trace ----------------------------------


def test_request_dying_mid_way_logs_its_trace(client, users, caplog, monkeypatch):
    def dies(root, info):
        raise SystemExit(1)  # what gunicorn's SIGABRT handler raises in a worker past its timeout

    replace_resolver(monkeypatch, "me", dies)
    response = post_graphql(
        client, "query Slow { me { username } }", token=make_token("alice"), headers={"X-Request-ID": "killed"}
    )
    # The 500 the client gets names the request; the worker still exits once it is sent.
    assert response.status_code == 500 and response["X-Request-ID"] == "killed"
    assert response.json()["errors"][0]["extensions"] == {"code": "INTERNAL_ERROR", "request_id": "killed"}
    with pytest.raises(SystemExit):
        list(response)
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if "request_aborted" in r.getMessage()]
    assert line["request_id"] == "killed" and line["actor_id"] == users["alice"].pk
    assert line["operation"]["name"] == "Slow" and len(line["operation"]["hash"]) == 64
    from gql_audit.context import in_flight

    assert in_flight() == []


# --- 14. graphql_jwt's middleware kept, with JWT_ALLOW_ARGUMENT -----------------------------


@pytest.fixture
def allow_argument(settings):
    settings.GRAPHQL_JWT = {**settings.GRAPHQL_JWT, "JWT_ALLOW_ARGUMENT": True}
    settings.AUTHENTICATION_BACKENDS = [
        "graphql_jwt.backends.JSONWebTokenBackend",
        "django.contrib.auth.backends.ModelBackend",
    ]


def test_graphql_jwt_allow_argument_header_argument_and_cookie(client, users, allow_argument):
    path = "/graphql-jwt-argument/"
    header = post_graphql(client, "{ status viewer { username } }", token=make_token("alice"), path=path).json()
    assert header == {"data": {"status": "ok", "viewer": {"username": "alice"}}}
    argument = post_graphql(client, '{ viewer(token: "%s") { username } }' % make_token("bob"), path=path).json()
    assert argument == {"data": {"viewer": {"username": "bob"}}}
    client.cookies["JWT"] = make_token("alice")
    cookie = post_graphql(client, "{ viewer { username } }", path=path).json()
    assert cookie == {"data": {"viewer": {"username": "alice"}}}
    del client.cookies["JWT"]
    bad = post_graphql(client, "{ status viewer { username } }", token="garbage", path=path).json()
    assert bad["data"]["status"] == "ok" and codes(bad) == {("viewer",): "TOKEN_INVALID"}
    example = post_graphql(client, "{ me { username } }", token=make_token("alice"), path="/graphql-jwt/").json()
    assert example == {"data": {"me": {"username": "alice"}}}


# --- 15. Identity mappers run where the ORM is allowed, their failures logged ---------------


def identity_from_database(cert):
    return "svc-" + str(get_user_model().objects.filter(username="alice").values_list("pk", flat=True).first())


def identity_broken(cert):
    raise RuntimeError("mapper bug")


@pytest.mark.django_db(transaction=True)
async def test_identity_mapper_may_use_the_orm_under_asgi(async_client, settings, async_connections_closed, caplog):
    from asgiref.sync import sync_to_async

    from tests.test_mtls import cert_headers

    user = await sync_to_async(get_user_model().objects.create_user)("alice", "alice@example.org", "pw")
    await sync_to_async(Document.objects.create)(owner=user, title="t", classification="public")
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "CLIENT_CERT_SOURCE": "nginx",
        "CLIENT_CERT_IDENTITY": "tests.test_trust.identity_from_database",
    }
    response = await async_client.post(
        "/graphql/",
        {"query": "{ publicDocuments { title } }"},
        content_type="application/json",
        headers={**cert_headers(), "X-Request-ID": "asgi-id"},
    )
    assert response.status_code == 200
    row = await sync_to_async(RequestReads.objects.get)(request_id="asgi-id")
    assert row.context["client_cert"]["identity"] == f"svc-{user.pk}"
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "CLIENT_CERT_IDENTITY": "tests.test_trust.identity_broken"}
    await async_client.post(
        "/graphql/",
        {"query": "{ publicDocuments { title } }"},
        content_type="application/json",
        headers=cert_headers(),
    )
    (record,) = [r for r in caplog.records if r.name == "gql_audit.mtls"]
    assert record.levelno == logging.ERROR and "mapper bug" in str(record.exc_info[1])


@pytest.mark.django_db(transaction=True)
async def test_malformed_body_under_asgi(async_client, async_connections_closed):
    from asgiref.sync import sync_to_async

    response = await async_client.post(
        "/graphql/",
        b"[" * 100_000 + b"]" * 100_000,
        content_type="application/json",
        headers={"X-Request-ID": "a-deep"},
    )
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
    kinds = await sync_to_async(list)(SecurityEvent.objects.filter(request_id="a-deep").values_list("kind", "severity"))
    assert kinds == [("graphql_error", "warning")]


def test_scrubber_removes_secrets_however_they_are_rendered():
    from gql_audit.redaction import MAX_VISITED, REDACTED, Scrubber, secret_leaves

    long_secret = "S3cret-" + "abcdefghij" * 30
    scrubber = Scrubber(["hunter22", 'q"uo\\te\n', long_secret, "ab"])
    assert scrubber.text("pw hunter22!") == f"pw {REDACTED}!"
    assert "uo" not in scrubber.text("value 'q\"uo\\\\te\\n'") and "uo" not in scrubber.text('"q\\"uo\\\\te\\n"')
    cut = f"'{long_secret[:117]}...{long_secret[-118:]}'"  # graphql-core's inspect() of a long value
    assert "abcdefghij" not in scrubber.text(cut)
    assert scrubber.text("tab 'ab' and ab") == f"tab {REDACTED} and ab"  # short: only where quoted
    assert scrubber.data({"k": ["x hunter22"], "hunter22": 1}) == {"k": [f"x {REDACTED}"], REDACTED: 1}
    # Secret by key, at any depth; bounded on hostile sizes.
    assert secret_leaves({"a": 1, "creds": {"password": "p", "list": ["q", 3]}}) == ["p"]
    assert sorted(secret_leaves({"input": {"x": [1, "y"]}}, secret=True)) == ["1", "y"]
    huge = {"password": [[str(i)] * 1000 for i in range(1000)]}
    assert len(secret_leaves(huge)) < MAX_VISITED


# --- Found by trying to break the above ------------------------------------------------


def test_secret_arguments_inside_named_fragments(client, users, caplog, settings):
    caplog.set_level(logging.DEBUG)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "LOG_VARIABLE_VALUES": True}
    password, token = "FragPassw0rdSecretA1", make_token("alice")
    post_graphql(
        client,
        'mutation M($x: String!) { ...F verifyToken(token: "bad") { payload } }'
        ' fragment F on Mutation { tokenAuth(username: "alice", password: $x) { token } }',
        variables={"x": password},
    )
    post_graphql(
        client,
        'mutation M($v: String!) { ...F refreshToken(token: "bad") { token } }'
        " fragment F on Mutation { verifyToken(token: $v) { payload } }",
        variables={"v": token},
    )
    # A GET whose body carries the variables.
    body = json.dumps(
        {
            "query": "query Q($password: Int) { documentsConnection(first: $password) { edges { node { id } } } }",
            "variables": {"password": "GetBodySecretB2xyz"},
        }
    )
    client.generic("GET", "/graphql/", body, content_type="application/json")
    rows, logs = stored_text(), all_log_text(caplog)
    for secret in (password, token, "GetBodySecretB2xyz"):
        assert secret not in rows and secret not in logs, secret


@pytest.mark.django_db(transaction=True)
def test_forwarded_ipv6_zone_is_dropped_not_fatal(client, users, caplog):
    post_graphql(
        client,
        "{ publicDocuments { title } me { id } }",
        headers={"X-Request-ID": "zone", "X-Forwarded-For": "fe80::1%" + "A" * 300},
    )
    assert not [r for r in caplog.records if "audit_write_failed" in r.getMessage()]
    reads = request_trail("zone").reads
    assert len(reads) == 3 and {read.remote_addr for read in reads} == {"fe80::1"}
    assert events("zone")[0].remote_addr == "fe80::1"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "username,password", [("alice\x00", "pw-pw-pw"), ("alice\ud800", "pw"), ("alice", "Sur\udc80pw")]
)
def test_credentials_no_database_can_hold_are_a_failed_login(client, users, username, password):
    body = json.dumps({"query": LOGIN, "variables": {"u": username, "p": password}})
    response = client.post("/graphql/", body, content_type="application/json", HTTP_X_REQUEST_ID="odd-login")
    error = response.json()["errors"][0]
    assert error["message"] == "Please enter valid credentials" and "codec" not in response.content.decode()
    (event,) = events("odd-login")
    assert event.kind == "login_failed" and event.details["username"].startswith("alice")


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        ("&".join(f"a{i}=1" for i in range(1200)), "application/x-www-form-urlencoded"),
        ("--x\r\nbroken", "multipart/form-data"),
    ],
    ids=["too-many-fields", "multipart-without-boundary"],
)
def test_forms_django_refuses_are_a_400_with_an_event(client, body, content_type):
    response = client.post("/graphql/", body, content_type=content_type, HTTP_X_REQUEST_ID="bad-form")
    assert response.status_code == 400 and b"Traceback" not in response.content
    (event,) = events("bad-form")
    assert (event.kind, event.severity) == ("graphql_error", "warning")


def test_cookie_token_ignored_on_a_cross_site_get(users, settings):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies["JWT"] = make_token("alice")
    response = browser.get(
        "/graphql/",
        {"query": "{ me { username } }"},
        HTTP_SEC_FETCH_SITE="cross-site",
        HTTP_X_REQUEST_ID="xsite",
        HTTP_ACCEPT="application/json",
    )
    assert codes(response.json()) == {("me",): "UNAUTHENTICATED"}
    assert [e.details["rule"] for e in events("xsite") if e.kind == "forbidden"] == ["csrf"]
    same_site = browser.get(
        "/graphql/", {"query": "{ me { username } }"}, HTTP_SEC_FETCH_SITE="same-origin", HTTP_ACCEPT="application/json"
    )
    assert same_site.json()["data"]["me"] == {"username": "alice"}


def test_an_event_flood_is_counted_not_written_row_by_row(client):
    from gql_audit.events import MAX_EVENTS_PER_REQUEST

    aliases = " ".join(f'a{i}: verifyToken(token: "bad{i}") {{ payload }}' for i in range(MAX_EVENTS_PER_REQUEST + 50))
    post_graphql(client, "mutation { %s }" % aliases, headers={"X-Request-ID": "flood"})
    rows = events("flood")
    assert len(rows) == MAX_EVENTS_PER_REQUEST + 1
    (overflow,) = [e for e in rows if "distinct security events" in e.message]
    assert overflow.details["count"] == 50


def test_djangos_own_lines_keep_the_request_and_lose_the_query_string():
    from django.test import RequestFactory

    from gql_audit import context
    from gql_audit.logging import ContextFilter, JSONFormatter

    request = RequestFactory().get("/graphql/", {"variables": '{"password": "QsSecret77"}'})
    ctx = context.RequestContext(request_id="after-the-middleware", request=request)
    setattr(request, context.REQUEST_ATTRIBUTE, ctx)
    record = logging.LogRecord("django.request", logging.WARNING, "", 0, "Bad Request: %s", (request.path,), None)
    record.request = request
    assert ContextFilter().filter(record) and record.request_id == "after-the-middleware"
    line = JSONFormatter().format(record)
    assert "QsSecret77" not in line and '"request":"GET /graphql/"' in line
    server = logging.LogRecord(
        "django.server",
        logging.INFO,
        "",
        0,
        '"%s" %s %s',
        ("GET /graphql/?variables=QsSecret77 HTTP/1.1", 405, 10),
        None,
    )
    assert "QsSecret77" not in JSONFormatter().format(server)


# --- Found by reviewing the change ------------------------------------------------------


def test_a_query_string_django_refuses_still_leaves_its_event(client):
    query_string = "&".join(f"a{i}=1" for i in range(1200))
    response = client.post(
        f"/graphql/?{query_string}",
        {"query": "{ serviceStatus { ok } }"},
        content_type="application/json",
        HTTP_X_REQUEST_ID="many-get-fields",
    )
    assert response.status_code == 400
    assert [(e.kind, e.severity) for e in events("many-get-fields")] == [("graphql_error", "warning")]


def test_cookie_token_with_a_form_django_refuses_is_refused_not_a_crash(users):
    browser = Client(enforce_csrf_checks=True)
    browser.cookies["JWT"] = make_token("alice")
    response = browser.post(
        "/graphql/", "--x\r\nbroken", content_type="multipart/form-data", HTTP_X_REQUEST_ID="bad-form-cookie"
    )
    assert response.status_code == 400 and b"Traceback" not in response.content
    kinds = sorted(e.kind for e in events("bad-form-cookie"))
    assert kinds == ["forbidden", "graphql_error"]


def test_a_failed_change_entry_is_never_confused_with_an_earlier_one(client, users, caplog):
    from auditlog.signals import post_log, pre_log

    from example_service.models import Profile

    post_graphql(
        client,
        'mutation { updateProfile(phone: "9") { profile { phone } } }',
        token=make_token("alice"),
        headers={"X-Request-ID": "earlier"},
    )
    profile = Profile.objects.get(user=users["alice"])
    # auditlog failing before it built the next entry (its diff raised): nothing earlier may stand in for it.
    pre_log.send(Profile, instance=profile, action=1)
    post_log.send(Profile, instance=profile, action=1, error=ValueError("diff failed"), changes=None)
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if "change_entry_unwritten" in r.getMessage()]
    assert "cid" not in line and "earlier" not in json.dumps(line)


@pytest.mark.django_db(transaction=True)
def test_a_table_that_refuses_everything_is_not_retried_record_by_record(client, users, caplog):
    with table_away("gql_audit_securityevent"):
        with connection.execute_wrapper(seen := SQLRecorder()):
            post_graphql(
                client,
                "{ publicDocuments { title } me { username } }",
                token="bad-token",
                headers={"X-Request-ID": "away"},
            )
    attempts = [sql for sql in seen if sql.startswith('INSERT INTO "gql_audit_securityevent"')]
    assert len(attempts) == 2  # with the reads, then alone: never once per event
    assert len(request_trail("away").reads) == 3
    logged = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.audit"]
    assert [r["kind"] for r in logged if r.get("event") == "security_event"] == ["token_invalid"]


# Each store writes the block's address and port to columns of its own types.
@pytest.mark.parametrize("access_store", ["gql_audit", "auditlog"])
def test_malformed_values_of_an_auditlog_block_do_not_fail_the_write(users, settings, access_store):
    from auditlog.context import set_extra_data
    from auditlog.signals import accessed
    from django.test import RequestFactory

    from gql_audit import context, store

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": access_store}
    doc = users["bob"].documents.first()
    request = RequestFactory().get("/")
    request.user = users["alice"]
    ctx = context.RequestContext(request_id="odd-block", request=request, accessed={})
    token = context.bind(ctx)
    try:
        with set_extra_data({"remote_addr": "10.0.0.1, 10.0.0.2", "remote_port": "http"}):
            accessed.send(sender=Document, instance=doc)
        store.flush(ctx)
    finally:
        context.reset(token)
    (read,) = request_trail("odd-block").reads
    assert read.remote_addr is None
    if access_store == "gql_audit":
        assert "remote_port" not in RequestReads.objects.get(request_id="odd-block").context
    else:
        assert LogEntry.objects.get(cid="odd-block").remote_port is None
