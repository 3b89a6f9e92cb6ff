"""Security events, rollback safety, redaction and failure of the audit write."""

from __future__ import annotations

import json
import logging

import pytest
from auditlog.models import LogEntry
from django.db import connection
from django.test import override_settings

from example_service.models import Document, Profile
from gql_audit import events
from gql_audit.history import request_trail
from gql_audit.models import RequestReads, SecurityEvent
from tests.conftest import codes, make_token, post_graphql, stored_text, table_away

MIXED = "{ serviceStatus { ok } publicDocuments { title } me { username } documents { title } }"


def kinds(request_id):
    return sorted(SecurityEvent.objects.filter(request_id=request_id).values_list("kind", flat=True))


@pytest.mark.django_db
def test_denied_private_fields_make_one_unauthenticated_event(gql, users):
    body = gql(MIXED, headers={"X-Request-ID": "anon-1"})
    assert body["data"]["serviceStatus"] == {"ok": True} and len(body["data"]["publicDocuments"]) == 3
    assert codes(body) == {("me",): "UNAUTHENTICATED", ("documents",): "UNAUTHENTICATED"}
    event = SecurityEvent.objects.get(request_id="anon-1")
    assert (event.kind, event.severity, event.actor_id) == ("unauthenticated", "info", None)
    assert event.details["paths"] == ["me", "documents"] and event.details["count"] == 2
    assert event.operation["type"] == "query"
    assert event.remote_addr == "127.0.0.1"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("token", "kind"),
    [
        ("garbage-token-value", "token_invalid"),
        (make_token("alice", expires_in=-__import__("datetime").timedelta(1)), "token_expired"),
    ],
)
def test_bad_token_is_one_event_even_with_public_fields_only(gql, users, token, kind):
    gql("{ serviceStatus { ok } }", token=token, headers={"X-Request-ID": "tok-1"})
    assert kinds("tok-1") == [kind]
    gql(MIXED, token=token, headers={"X-Request-ID": "tok-2"})
    event = SecurityEvent.objects.get(request_id="tok-2")
    assert event.kind == kind and event.details["paths"] == ["me", "documents"]
    assert token not in json.dumps(event.details) and token not in event.message


@pytest.mark.django_db
def test_forbidden_resolver_error(gql, users):
    from graphql_relay import to_global_id

    doc = users["bob"].documents.first()
    query = 'mutation { updateDocument(id: "%s", title: "x") { document { id } } }' % to_global_id(
        "DocumentNode", doc.pk
    )
    gql(query, token=make_token("alice"), headers={"X-Request-ID": "forbid"})
    event = SecurityEvent.objects.get(request_id="forbid")
    assert (event.kind, event.severity, event.path, event.actor_id) == (
        "forbidden",
        "warning",
        "updateDocument",
        users["alice"].pk,
    )
    assert event.message == "Only the owner may change a document."


@pytest.mark.graphql_core
@pytest.mark.django_db
def test_graphql_syntax_and_validation_errors(client, users):
    post_graphql(client, "{ serviceStatus { ok ", headers={"X-Request-ID": "syntax"})
    post_graphql(client, "{ nope }", headers={"X-Request-ID": "invalid"})
    assert kinds("syntax") == ["graphql_error"] and kinds("invalid") == ["graphql_error"]
    # The client's own malformed query: a warning, not an error of the service.
    assert set(SecurityEvent.objects.values_list("severity", flat=True)) == {"warning"}
    assert "Cannot query field 'nope'" in SecurityEvent.objects.get(request_id="invalid").message


@pytest.mark.django_db
def test_token_auth_password_never_stored(gql, users, caplog):
    caplog.set_level(logging.DEBUG)
    secret = "Wrong-Secret-Pw-123"
    query = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"
    body = gql(query, variables={"u": "alice", "p": secret}, headers={"X-Request-ID": "login"})
    assert body["data"]["tokenAuth"] is None
    event = SecurityEvent.objects.get(request_id="login")
    # A failed login is its own kind, naming the username tried and never the password.
    assert (event.kind, event.severity, event.details["username"]) == ("login_failed", "warning", "alice")
    assert secret not in stored_text()
    assert secret not in caplog.text


@pytest.mark.postgres  # SQLite does not enforce VARCHAR lengths
@pytest.mark.django_db(transaction=True)  # as in production: the failed statement ends no outer transaction
@pytest.mark.parametrize("atomic_requests", [False, True])
def test_database_error_carries_sqlstate(gql, users, monkeypatch, atomic_requests):
    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", atomic_requests)
    gql(
        'mutation { updateProfile(phone: "%s") { profile { phone } } }' % ("9" * 60),
        token=make_token("alice"),
        headers={"X-Request-ID": "dberr"},
    )
    event = SecurityEvent.objects.get(request_id="dberr")
    assert (event.kind, event.sqlstate, event.severity) == ("db_error", "22001", "error")
    assert event.details["exception"] == "DataError"


WRITE_THEN_FAIL = (
    'mutation { updateProfile(phone: "rolled-back") { profile { phone fullName } } '
    'importDocuments(titles: ["first", " "]) { count } }'
)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("mode", ["ATOMIC_REQUESTS", "ATOMIC_MUTATIONS"])
def test_rolled_back_request_keeps_access_entries_and_events(client, users, monkeypatch, mode):
    monkeypatch.setitem(connection.settings_dict, mode, True)
    before = Document.objects.count()
    response = post_graphql(client, WRITE_THEN_FAIL, token=make_token("alice"), headers={"X-Request-ID": "rb"})
    body = response.json()
    assert response.status_code == 200
    assert codes(body) == {("importDocuments",): "BAD_USER_INPUT"}
    # The data changes are gone...
    assert Document.objects.count() == before
    assert Profile.objects.get(user=users["alice"]).phone == ""
    assert not LogEntry.objects.filter(cid="rb", action=LogEntry.Action.UPDATE).exists()
    # ...the record of what was read, and of the failure, is not.
    (read,) = request_trail("rb").reads
    assert read.model == "example_service.Profile" and read.actor_id == users["alice"].pk
    assert read.fields == ["fullName", "phone"]
    event = SecurityEvent.objects.get(request_id="rb")
    assert (event.kind, event.path, event.message) == ("graphql_error", "importDocuments", "Title 2 is empty.")


@pytest.fixture
def reads_table_gone():
    """Rename the access store's table away for the test, as if it had been dropped."""
    with table_away(RequestReads._meta.db_table):
        yield


def logged_records(caplog):
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.audit"]


@pytest.mark.django_db(transaction=True)
def test_audit_table_gone_request_succeeds_and_logs_everything(client, users, reads_table_gone, caplog):
    caplog.set_level(logging.INFO, logger="gql_audit.audit")
    response = post_graphql(client, MIXED, token="bad-token-xyz", headers={"X-Request-ID": "gone"})
    assert response.status_code == 200
    assert response.json()["data"]["publicDocuments"] is not None
    records = logged_records(caplog)
    assert records[0]["event"] == "audit_write_failed" and records[0]["access_entries"] == 3
    access = [r for r in records if r["event"] == "access"]
    public = Document.objects.filter(classification="public").values_list("pk", flat=True)
    assert {r["model"] for r in access} == {"example_service.Document"}
    assert sorted(r["object_pk"] for r in access) == sorted(str(pk) for pk in public)
    assert all(r["cid"] == "gone" and r["gql_audit"]["fields"] == ["title"] for r in access)
    # The table that failed took nothing else with it: the security event is in its own table.
    assert not [r for r in records if r["event"] == "security_event"]
    security = SecurityEvent.objects.get(request_id="gone")
    assert security.kind == "token_invalid" and security.details["paths"] == ["me", "documents"]
    assert "bad-token-xyz" not in caplog.text


@pytest.mark.django_db(transaction=True)
def test_audit_table_gone_with_fail_closed_is_503(client, users, reads_table_gone, settings, caplog):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "FAIL_CLOSED": True}
    response = post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": "closed"})
    assert response.status_code == 503
    assert response["X-Request-ID"] == "closed"
    assert response.json()["errors"][0]["extensions"]["code"] == "AUDIT_UNAVAILABLE"
    assert b"public" not in response.content
    assert any(r["event"] == "access" for r in logged_records(caplog))


@pytest.mark.django_db
def test_fail_closed_passes_when_the_write_succeeds(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "FAIL_CLOSED": True}
    assert post_graphql(client, "{ publicDocuments { title } }").status_code == 200


@pytest.mark.django_db
def test_event_outside_a_request_is_written_at_once():
    events.record_event("db_retry", message="restart transaction", sqlstate="40001", details={"attempt": 1})
    event = SecurityEvent.objects.get()
    assert (event.kind, event.sqlstate, event.request_id, event.details) == ("db_retry", "40001", "", {"attempt": 1})
    with pytest.raises(ValueError, match="unknown security event kind"):
        events.record_event("nonsense")


@pytest.mark.graphql_core
def test_redaction_bounds_hostile_values(settings):
    from gql_audit.redaction import redact

    deep: dict = {}
    node = deep
    for _ in range(20):
        node["x"] = {}
        node = node["x"]
    value = {
        "password": "p",
        "newPassword": "p",
        "Authorization": "JWT x",
        "refreshToken": "t",
        "sessionid": "s",
        "apiKey": "k",
        "name": "n" * 5000,
        "list": list(range(500)),
        "deep": deep,
        "obj": object(),
    }
    out = redact(value)
    assert {k for k, v in out.items() if v == "[redacted]"} == {
        "password",
        "newPassword",
        "Authorization",
        "refreshToken",
        "sessionid",
        "apiKey",
    }
    assert len(out["name"]) < 1100 and out["name"].endswith("[3976 more]")
    assert len(out["list"]) == 51
    assert "[too deep]" in json.dumps(out)
    json.dumps(out)  # always JSON-serializable
    with override_settings(GQL_AUDIT={"REDACT_KEYS": ["^name$"]}):
        assert redact({"name": "x", "password": "y"}) == {"name": "[redacted]", "password": "y"}


@pytest.mark.django_db
def test_admin_is_read_only_with_filters(client, users, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.org", "pw")
    events.record_event("forbidden", message="m")
    client.force_login(admin)
    base = "/admin/gql_audit/securityevent/"
    assert client.get(base + "?kind=forbidden&severity=warning").status_code == 200
    assert client.get(base + "?q=some-request-id").status_code == 200
    assert client.get(base + "add/").status_code == 403
    event = SecurityEvent.objects.get(kind="forbidden")
    detail = client.get(f"{base}{event.pk}/change/")
    assert detail.status_code == 200 and b'name="_save"' not in detail.content


@pytest.mark.graphql_core
def test_secret_variables_found_through_arguments_and_input_fields():
    from graphql import parse

    from gql_audit.redaction import operation_secrets, redact_variables

    operation = parse(
        "mutation M($a: String, $b: String, $c: String, $d: Creds) {"
        ' x(password: $a, input: {newPassword: $c, name: $b, token: "inline-tok"}, credentials: $d) }'
    ).definitions[0]
    names, literals = operation_secrets(operation)
    assert names == {"a", "c", "d"} and literals == ["inline-tok"]
    out = redact_variables({"a": "1", "b": "visible", "c": "3", "d": {"user": "u"}}, names)
    assert out == {"a": "[redacted]", "b": "visible", "c": "[redacted]", "d": "[redacted]"}


@pytest.mark.postgres  # on SQLite a second connection cannot write while the first holds a transaction
@pytest.mark.django_db(transaction=True, databases=["default", "audit"])
def test_audit_database_alias_commits_independently(settings, users):
    """Events recorded outside a request inside a transaction that rolls back."""
    from django.db import transaction

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUDIT_DATABASE": "audit"}
    with transaction.atomic():
        Document.objects.create(owner=users["alice"], title="undone")
        events.record_event("db_error", message="failed inside", sqlstate="23505")
        transaction.set_rollback(True)
    assert not Document.objects.filter(title="undone").exists()
    assert SecurityEvent.objects.using("default").filter(message="failed inside").exists()

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUDIT_DATABASE": None}
    with transaction.atomic():
        events.record_event("db_error", message="same connection")
        transaction.set_rollback(True)
    assert not SecurityEvent.objects.filter(message="same connection").exists()
