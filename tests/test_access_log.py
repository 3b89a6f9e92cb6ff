"""ACCESS entries: one per object per request, with the fields read on it."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from auditlog.signals import accessed
from django.db import connection
from django.http import HttpResponse
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from graphql_relay import to_global_id

from example_service.models import Document
from gql_audit import context, storage
from tests.conftest import make_token

pytestmark = pytest.mark.django_db


def access_entries(cid):
    return {
        (e.content_type.model, e.object_pk): e
        for e in LogEntry.objects.filter(cid=cid, action=LogEntry.Action.ACCESS).select_related("content_type")
    }


def fields_of(cid):
    return {key: e.additional_data["gql_audit"]["fields"] for key, e in access_entries(cid).items()}


def visible_to_alice(users):
    return Document.objects.filter(classification__in=["public", "internal"]) | Document.objects.filter(
        owner=users["alice"]
    )


SHAPES = {
    "list": ("{ documents { title body } }", ["body", "title"]),
    "connection": ("{ documentsConnection { edges { node { title classification } } } }", ["classification", "title"]),
    "alias": ("{ documents { t: title b: body again: title } }", ["body", "title"]),
    "fragment": ("{ documents { ...D } } fragment D on DocumentNode { title body }", ["body", "title"]),
    "include": ("{ documents { title body @include(if: false) id @skip(if: true) } }", ["title"]),
    "typename only": ("{ documents { __typename } }", []),
}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_each_object_once_with_its_fields(gql, users, shape):
    query, fields = SHAPES[shape]
    body = gql(query, token=make_token("alice"), headers={"X-Request-ID": f"shape-{shape.replace(' ', '-')}"})
    assert "errors" not in body
    entries = access_entries(f"shape-{shape.replace(' ', '-')}")
    expected = {("document", str(d.pk)) for d in visible_to_alice(users)}
    assert set(entries) == expected
    for entry in entries.values():
        assert entry.actor_id == users["alice"].pk
        assert entry.actor_email == "alice@example.org"
        assert entry.additional_data["gql_audit"]["fields"] == fields
        assert entry.additional_data["gql_audit"]["operation"]["type"] == "query"
        assert entry.remote_addr == "127.0.0.1"


def test_node_and_nested_objects(gql, users):
    doc = users["bob"].documents.get(classification="public")
    query = """
      query Mine($id: ID!) {
        me { username profile { fullName } }
        node(id: $id) { ... on DocumentNode { title owner { username email } } }
      }"""
    body = gql(
        query,
        variables={"id": to_global_id("DocumentNode", doc.pk)},
        token=make_token("alice"),
        headers={"X-Request-ID": "nested"},
    )
    assert "errors" not in body
    fields = fields_of("nested")
    assert fields == {
        ("user", str(users["alice"].pk)): ["profile", "username"],
        ("profile", str(users["alice"].profile.pk)): ["fullName"],
        ("document", str(doc.pk)): ["owner", "title"],
        ("user", str(users["bob"].pk)): ["email", "username"],
    }
    paths = {k: e.additional_data["gql_audit"]["path"] for k, e in access_entries("nested").items()}
    assert paths[("user", str(users["bob"].pk))] == ["node.owner"]
    assert paths[("profile", str(users["alice"].profile.pk))] == ["me.profile"]


def test_same_object_reached_twice_is_one_entry(gql, users):
    alice = users["alice"]
    query = "{ me { email } again: me { username documents { edges { node { title } } } } documents { id } }"
    gql(query, token=make_token("alice"), headers={"X-Request-ID": "twice"})
    entries = access_entries("twice")
    assert entries[("user", str(alice.pk))].additional_data["gql_audit"]["fields"] == ["documents", "email", "username"]
    assert entries[("user", str(alice.pk))].additional_data["gql_audit"]["path"] == ["again", "me"]
    own = alice.documents.get(classification="confidential")
    assert entries[("document", str(own.pk))].additional_data["gql_audit"]["fields"] == ["id", "title"]


def test_denied_nested_field_is_not_counted_as_read(gql, users):
    gql("{ publicDocuments { title owner { username } } }", headers={"X-Request-ID": "anon"})
    entries = access_entries("anon")
    assert {k[0] for k in entries} == {"document"}
    assert all(e.additional_data["gql_audit"]["fields"] == ["title"] for e in entries.values())
    assert all(e.actor_id is None for e in entries.values())


def test_dict_values_through_audit_access(gql, users):
    body = gql("{ documentSummaries { title } }", token=make_token("alice"), headers={"X-Request-ID": "dicts"})
    assert len(body["data"]["documentSummaries"]) == visible_to_alice(users).count()
    fields = fields_of("dicts")
    assert fields == {("document", str(d.pk)): ["title"] for d in visible_to_alice(users)}
    entry = next(iter(access_entries("dicts").values()))
    assert entry.additional_data["gql_audit"]["path"] == ["documentSummaries"]
    assert entry.object_repr.startswith("example_service.Document ")


def test_access_log_can_be_turned_off(gql, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_LOG": False}
    gql("{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "off"})
    assert access_entries("off") == {}


@pytest.mark.parametrize("count", [3, 120])
def test_insert_statements_do_not_grow_with_objects(client, users, count):
    from tests.conftest import post_graphql

    Document.objects.bulk_create(
        [Document(owner=users["alice"], title=f"bulk {i}", classification="public") for i in range(count)]
    )
    with CaptureQueriesContext(connection) as queries:
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": f"n-{count}"})
    inserts = [q["sql"] for q in queries.captured_queries if q["sql"].startswith('INSERT INTO "auditlog_logentry"')]
    assert len(inserts) == 1
    assert len(access_entries(f"n-{count}")) == count + 3


def test_service_code_accessed_signal_gets_actor_and_context(users):
    """auditlog's own ``accessed`` signal, sent by service code during a request."""
    doc = users["bob"].documents.first()
    request = RequestFactory().get("/")
    request.user = users["alice"]
    ctx = context.RequestContext(request_id="signal", request=request, remote_addr="192.0.2.1", accessed={})
    token = context.bind(ctx)
    try:
        accessed.send(sender=Document, instance=doc)
        assert not LogEntry.objects.filter(action=LogEntry.Action.ACCESS).exists()  # deferred
        storage.flush(ctx, HttpResponse())
    finally:
        context.reset(token)
    entry = LogEntry.objects.get(action=LogEntry.Action.ACCESS)
    assert (entry.object_pk, entry.actor_id, entry.cid, entry.remote_addr) == (
        str(doc.pk),
        users["alice"].pk,
        "signal",
        "192.0.2.1",
    )
    assert entry.additional_data["gql_audit"]["fields"] == []


def test_accessed_signal_outside_a_request_is_auditlogs_own(users):
    doc = users["bob"].documents.first()
    accessed.send(sender=Document, instance=doc)
    entry = LogEntry.objects.get(action=LogEntry.Action.ACCESS)
    assert entry.object_pk == str(doc.pk) and entry.cid is None
