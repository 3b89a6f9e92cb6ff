"""PERSISTED_OPERATIONS: the allow-list, by full document and by hash, observe and enforce."""

from __future__ import annotations

import json
from urllib.parse import urlencode

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.test import override_settings

from gql_audit.history import request_trail
from gql_audit.models import SecurityEvent
from gql_audit.protect.document import document_hash
from tests.conftest import make_token, post_graphql

pytestmark = pytest.mark.django_db

STATUS = "query Status { serviceStatus { ok } }"
DOCUMENTS = "query Documents { documents { title } }"
LOGIN = (
    "mutation Login($username: String!, $password: String!) "
    "{ tokenAuth(username: $username, password: $password) { token } }"
)
UNLISTED = "{ serviceStatus { name ok } }"


@pytest.fixture
def manifest(tmp_path):
    """A manifest built by ``gql_audit_manifest`` from a directory of .graphql files."""
    source = tmp_path / "operations"
    (source / "nested").mkdir(parents=True)
    (source / "status.graphql").write_text(STATUS + "\n")
    (source / "nested" / "documents.graphql").write_text("\n" + DOCUMENTS + "\n\n")
    (source / "login.graphql").write_text(LOGIN)
    (source / "README.md").write_text("not a document")
    path = tmp_path / "manifest.json"
    call_command("gql_audit_manifest", str(source), "--output", str(path))
    return path


def configured(manifest, mode, **values):
    return override_settings(
        GQL_AUDIT={**settings.GQL_AUDIT, "PERSISTED_OPERATIONS": {"manifest": str(manifest), "mode": mode}, **values}
    )


def events(request_id, kind="operation_unknown"):
    return list(SecurityEvent.objects.filter(request_id=request_id, kind=kind))


@pytest.mark.graphql_core
def test_the_command_writes_sha256_to_document(manifest):
    data = json.loads(manifest.read_text())
    assert data == {document_hash(d): d for d in (STATUS, DOCUMENTS, LOGIN)}


@pytest.mark.graphql_core
def test_the_command_refuses_a_directory_with_a_broken_document(tmp_path):
    (tmp_path / "bad.graphql").write_text("query { oops ")
    with pytest.raises(CommandError, match="bad.graphql: not a GraphQL document"):
        call_command("gql_audit_manifest", str(tmp_path))
    (tmp_path / "bad.graphql").write_text("fragment F on T { a }")
    with pytest.raises(CommandError, match="holds no operation"):
        call_command("gql_audit_manifest", str(tmp_path))
    with pytest.raises(CommandError, match="not a directory"):
        call_command("gql_audit_manifest", str(tmp_path / "missing"))


@pytest.mark.parametrize("mode", ["observe", "enforce"])
def test_a_listed_document_runs_without_an_event(client, users, manifest, mode):
    with configured(manifest, mode):
        response = post_graphql(client, DOCUMENTS, token=make_token("alice"), headers={"X-Request-ID": f"pq-ok-{mode}"})
    assert response.status_code == 200 and response.json()["data"]["documents"]
    assert not events(f"pq-ok-{mode}")


def test_observe_runs_an_unlisted_document_and_records_it(client, users, manifest):
    with configured(manifest, "observe"):
        response = post_graphql(client, UNLISTED, headers={"X-Request-ID": "pq-observe"})
    assert response.status_code == 200 and response.json()["data"]["serviceStatus"]["ok"] is True
    (event,) = events("pq-observe")
    assert event.details["rule"] == "PERSISTED_OPERATIONS" and event.details["enforced"] is False
    assert event.details["sha256"] == document_hash(UNLISTED) and event.operation["hash"] == document_hash(UNLISTED)


def test_enforce_refuses_an_unlisted_document_before_it_runs(client, users, manifest):
    query = "{ documents { title } }"  # the listed operation's fields, in another text
    with configured(manifest, "enforce"):
        response = post_graphql(client, query, token=make_token("alice"), headers={"X-Request-ID": "pq-enforce"})
    assert response.status_code == 400
    assert response.json() == {
        "errors": [
            {
                "message": "The operation is not allowed.",
                "extensions": {"code": "OPERATION_NOT_ALLOWED", "rule": "PERSISTED_OPERATIONS"},
            }
        ]
    }
    trail = request_trail("pq-enforce")
    assert trail.reads == [] and [e.kind for e in trail.events] == ["operation_unknown"]
    assert trail.events[0].details["enforced"] is True


def apollo(sha256):
    return {"extensions": {"persistedQuery": {"version": 1, "sha256Hash": sha256}}}


@pytest.mark.parametrize("mode", ["observe", "enforce"])
@pytest.mark.parametrize(
    "body",
    [
        apollo(document_hash(DOCUMENTS)),
        apollo(document_hash(DOCUMENTS).upper()),
        {"documentId": document_hash(DOCUMENTS)},
        {"documentId": "sha256:" + document_hash(DOCUMENTS)},
    ],
)
def test_a_hash_alone_runs_the_listed_document(client, users, manifest, mode, body):
    with configured(manifest, mode):
        response = client.post(
            "/graphql/",
            json.dumps(body),
            content_type="application/json",
            headers={"Authorization": f"JWT {make_token('alice')}", "X-Request-ID": "pq-hash"},
        )
    assert response.status_code == 200, response.content
    assert {d["title"] for d in response.json()["data"]["documents"]} >= {"alice secret"}
    trail = request_trail("pq-hash")
    assert trail.reads and not list(trail.events)
    assert trail.reads[0].operation == {"type": "query", "name": "Documents", "hash": document_hash(DOCUMENTS)}


def test_a_hash_alone_with_variables_runs_a_listed_mutation(client, users, manifest):
    body = {**apollo(document_hash(LOGIN)), "variables": {"username": "alice", "password": "alice-password"}}
    with configured(manifest, "enforce"):
        response = client.post("/graphql/", json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.json()["data"]["tokenAuth"]["token"]


def test_a_hash_alone_by_get(client, users, manifest):
    params = {"extensions": json.dumps(apollo(document_hash(STATUS))["extensions"])}
    with configured(manifest, "enforce"):
        response = client.get("/graphql/?" + urlencode(params), headers={"Accept": "application/json"})
        assert response.status_code == 200 and response.json() == {"data": {"serviceStatus": {"ok": True}}}
        response = client.get(
            "/graphql/?" + urlencode({"documentId": document_hash(STATUS)}), headers={"Accept": "application/json"}
        )
        assert response.status_code == 200 and response.json() == {"data": {"serviceStatus": {"ok": True}}}


@pytest.mark.parametrize("mode", ["observe", "enforce"])
@pytest.mark.parametrize(
    "sha256",
    [
        document_hash(UNLISTED),  # well formed, not listed
        "zz" * 32,  # not hex
        "a" * 100_000,  # huge
        "\x00\ud800" + "a" * 62,  # NUL and a lone surrogate
        ["not", "a", "string"],
        {"nested": [[[[[[[[[[[[1]]]]]]]]]]]]},
    ],
)
def test_an_unknown_hash_is_refused_whatever_the_mode(client, users, manifest, mode, sha256):
    with configured(manifest, mode):
        response = client.post(
            "/graphql/",
            json.dumps(apollo(sha256)),
            content_type="application/json",
            headers={"X-Request-ID": "pq-unknown"},
        )
    # Nothing to run: Apollo clients answer PersistedQueryNotFound by sending the full document.
    assert response.status_code == 400
    (error,) = response.json()["errors"]
    assert error == {
        "message": "PersistedQueryNotFound",
        "extensions": {"code": "PERSISTED_QUERY_NOT_FOUND", "rule": "PERSISTED_OPERATIONS"},
    }
    (event,) = events("pq-unknown")
    assert event.details["rule"] == "PERSISTED_OPERATIONS" and len(event.details["sha256"]) <= 128


def test_huge_extensions_objects_are_harmless(client, users, manifest):
    body = {"query": STATUS, "extensions": {"junk": ["x" * 1000] * 1000, "persistedQuery": {"sha256Hash": None}}}
    with configured(manifest, "enforce"):
        response = client.post("/graphql/", json.dumps(body), content_type="application/json")
    assert response.status_code == 200 and response.json() == {"data": {"serviceStatus": {"ok": True}}}


def test_batches_are_checked_entry_by_entry(client, users, manifest):
    with configured(manifest, "enforce"):
        listed = [apollo(document_hash(STATUS)), {"query": STATUS}]
        response = client.post("/graphql-batch/", json.dumps(listed), content_type="application/json")
        assert response.status_code == 200, response.content
        assert [r["data"] for r in response.json()] == [{"serviceStatus": {"ok": True}}] * 2
        mixed = [{"query": STATUS}, {"query": UNLISTED}]
        response = client.post(
            "/graphql-batch/", json.dumps(mixed), content_type="application/json", headers={"X-Request-ID": "pq-batch"}
        )
    assert response.status_code == 400
    assert [r["errors"][0]["extensions"]["code"] for r in response.json()] == ["OPERATION_NOT_ALLOWED"] * 2
    assert len(events("pq-batch")) == 1


def test_an_unreadable_manifest_allows_nothing(client, users, tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    with configured(broken, "enforce"):
        response = post_graphql(client, STATUS)
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
