"""Access records that do not hold the objects they were made from: freed with the
response's data, and never mistaken for another object that takes a freed one's id."""

from __future__ import annotations

import gc
import importlib

import pytest
from graphql_relay import to_global_id

from example_service.models import Document
from gql_audit import access
from gql_audit.history import request_trail
from tests.conftest import ACCESS_STORES, make_token

pytestmark = pytest.mark.django_db


@pytest.fixture(params=ACCESS_STORES)
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


def test_objects_read_one_after_another_are_each_recorded_with_their_own_fields(gql, users, store):
    """Each alias loads its own instance and lets it go before the next, so an id may come
    round again for another object: every object keeps its own fields and paths."""
    docs = list(Document.objects.filter(owner=users["alice"]).order_by("pk")) + list(
        Document.objects.filter(classification="public").exclude(owner=users["alice"]).order_by("pk")
    )
    fields = ["title", "body", "classification"]
    expected: dict[str, tuple[set[str], set[str]]] = {str(doc.pk): (set(), set()) for doc in docs}
    aliases = []
    for n in range(30):
        doc = docs[n % len(docs)]
        aliases.append(f'a{n}: document(id: "{to_global_id("DocumentNode", doc.pk)}") {{ {fields[n % 3]} }}')
        expected[str(doc.pk)][0].add(fields[n % 3])
        expected[str(doc.pk)][1].add(f"a{n}")
    body = gql("{ %s }" % " ".join(aliases), token=make_token("alice"), headers={"X-Request-ID": "one-by-one"})
    assert "errors" not in body
    reads = {read.object_pk: read for read in request_trail("one-by-one").reads}
    assert {pk: (set(read.fields), set(read.paths)) for pk, read in reads.items()} == expected


def test_an_id_taken_by_another_object_starts_a_record_of_its_own(users):
    """The mechanism itself, with the reuse made certain: a record that no longer holds its
    object is believed to stand for an object met at the same id only if model and
    primary key agree."""
    alice_doc, bob_doc = Document.objects.filter(classification="public").order_by("pk")[:2]
    accessed: dict[int, access.AccessRecord] = {}
    first = accessed[id(bob_doc)] = access.AccessRecord(None, Document, alice_doc.pk, frozenset({"x"}), frozenset())
    assert not access._same(first, bob_doc, "id")
    access.retire(accessed, first)
    assert accessed[-id(first)] is first
    same_row = Document.objects.get(pk=alice_doc.pk)
    assert access._same(first, same_row, "id")


def test_the_gql_audit_store_lets_instances_go_with_the_response_data(client, users, settings, monkeypatch):
    """Under the gql_audit store, by the time the request's reads are written, no record
    holds a model instance; the auditlog store keeps them (it names each object by its
    ``__str__`` and sends it to auditlog's signals)."""
    from tests.conftest import post_graphql

    store_write = importlib.import_module("gql_audit.store.write")

    held = {}
    real = store_write.write

    def spy(ctx, records, events, alias):
        gc.collect()
        held[settings.GQL_AUDIT["ACCESS_STORE"]] = [r.obj for r in records]
        return real(ctx, records, events, alias)

    monkeypatch.setattr(store_write, "write", spy)
    for store in ("gql_audit", "auditlog"):
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": store}
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": f"held-{store}"})
    assert held["gql_audit"] == [None, None, None]
    assert len(held["auditlog"]) == 3 and all(isinstance(obj, Document) for obj in held["auditlog"])
    assert {read.object_pk for read in request_trail("held-gql_audit").reads} == {
        str(pk) for pk in Document.objects.filter(classification="public").values_list("pk", flat=True)
    }
