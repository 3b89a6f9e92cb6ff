"""Reads: one per object per request, with the fields read on it, in either access store.

Every test runs once per ``ACCESS_STORE`` and reads the trail back through
``gql_audit.history``, so both stores are held to the same behaviour.
"""

from __future__ import annotations

import contextlib

import pytest
from auditlog.models import LogEntry
from auditlog.signals import accessed
from django.db import connection
from django.test import RequestFactory
from django.test.utils import CaptureQueriesContext
from graphql_relay import to_global_id

from example_service.models import Document
from gql_audit import context
from gql_audit import store as audit_store
from gql_audit.history import reads_of, request_trail
from tests.conftest import make_token

pytestmark = pytest.mark.django_db

STORE_TABLES = {
    "gql_audit": ('"gql_audit_requestreads"', '"gql_audit_readobject"'),
    "auditlog": ('"auditlog_logentry"',),
}


@pytest.fixture(autouse=True, params=list(STORE_TABLES))
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


def access_entries(cid):
    """``{(model name, object pk): Read}`` of one request, whichever store holds them."""
    return {(read.model.split(".")[1].lower(), read.object_pk): read for read in request_trail(cid).reads}


def fields_of(cid):
    return {key: read.fields for key, read in access_entries(cid).items()}


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
    for read in entries.values():
        assert read.actor_id == users["alice"].pk
        assert read.actor == {"id": users["alice"].pk, "username": "alice"}
        assert read.fields == fields
        assert read.operation["type"] == "query"
        assert read.remote_addr == "127.0.0.1"


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
    paths = {k: read.paths for k, read in access_entries("nested").items()}
    assert paths[("user", str(users["bob"].pk))] == ["node.owner"]
    assert paths[("profile", str(users["alice"].profile.pk))] == ["me.profile"]


def test_same_object_reached_twice_is_one_entry(gql, users):
    alice = users["alice"]
    query = "{ me { email } again: me { username documents { edges { node { title } } } } documents { id } }"
    gql(query, token=make_token("alice"), headers={"X-Request-ID": "twice"})
    entries = access_entries("twice")
    assert entries[("user", str(alice.pk))].fields == ["documents", "email", "username"]
    assert entries[("user", str(alice.pk))].paths == ["again", "me"]
    own = alice.documents.get(classification="confidential")
    assert entries[("document", str(own.pk))].fields == ["id", "title"]


def test_denied_nested_field_is_not_counted_as_read(gql, users):
    gql("{ publicDocuments { title owner { username } } }", headers={"X-Request-ID": "anon"})
    entries = access_entries("anon")
    assert {k[0] for k in entries} == {"document"}
    assert all(read.fields == ["title"] for read in entries.values())
    assert all(read.actor_id is None and read.actor is None for read in entries.values())


def test_dict_values_through_audit_access(gql, users, store):
    body = gql("{ documentSummaries { title } }", token=make_token("alice"), headers={"X-Request-ID": "dicts"})
    assert len(body["data"]["documentSummaries"]) == visible_to_alice(users).count()
    fields = fields_of("dicts")
    assert fields == {("document", str(d.pk)): ["title"] for d in visible_to_alice(users)}
    read = next(iter(access_entries("dicts").values()))
    assert read.paths == ["documentSummaries"]
    if store == "auditlog":
        entry = LogEntry.objects.filter(cid="dicts").first()
        assert entry.object_repr.startswith("example_service.Document ")


def test_access_log_can_be_turned_off(gql, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_LOG": False}
    gql("{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "off"})
    assert access_entries("off") == {}


@pytest.mark.parametrize("count", [3, 120])
def test_insert_statements_do_not_grow_with_objects(client, users, count, store):
    from tests.conftest import post_graphql

    Document.objects.bulk_create(
        [Document(owner=users["alice"], title=f"bulk {i}", classification="public") for i in range(count)]
    )
    with CaptureQueriesContext(connection) as queries:
        post_graphql(client, "{ publicDocuments { title } }", headers={"X-Request-ID": f"n-{count}"})
    tables = STORE_TABLES[store]
    inserts = [
        q["sql"] for q in queries.captured_queries if q["sql"].startswith(tuple(f"INSERT INTO {t}" for t in tables))
    ]
    # One statement (and, on a database with no array index, one more for the object index).
    assert 1 <= len(inserts) <= len(tables)
    assert len(access_entries(f"n-{count}")) == count + 3


@contextlib.contextmanager
def service_code(request_id, user):
    """A request's context bound around service code, its records written at the end (as the middleware does)."""
    request = RequestFactory().get("/")
    request.user = user
    ctx = context.RequestContext(request_id=request_id, request=request, remote_addr="192.0.2.1", accessed={})
    token = context.bind(ctx)
    try:
        yield ctx
        audit_store.flush(ctx)
    finally:
        context.reset(token)


def test_service_code_accessed_signal_gets_actor_and_context(users):
    """auditlog's own ``accessed`` signal, sent by service code during a request."""
    doc = users["bob"].documents.first()
    with service_code("signal", users["alice"]):
        accessed.send(sender=Document, instance=doc)
        assert reads_of(doc) == []  # deferred
    (read,) = reads_of(doc)
    assert (read.object_pk, read.actor_id, read.request_id, read.remote_addr, read.fields) == (
        str(doc.pk),
        users["alice"].pk,
        "signal",
        "192.0.2.1",
        [],
    )


def test_accessed_signal_outside_a_request_is_auditlogs_own(users):
    doc = users["bob"].documents.first()
    accessed.send(sender=Document, instance=doc)
    entry = LogEntry.objects.get(action=LogEntry.Action.ACCESS)
    assert entry.object_pk == str(doc.pk) and entry.cid is None


def test_reads_of_an_object_newest_first(gql, users):
    doc = users["alice"].documents.get(classification="public")
    gql("{ publicDocuments { title } }", headers={"X-Request-ID": "first"})
    gql("{ documents { title body } }", token=make_token("bob"), headers={"X-Request-ID": "second"})
    reads = reads_of(Document, doc.pk)
    assert [r.request_id for r in reads] == ["second", "first"]
    assert [r.fields for r in reads] == [["body", "title"], ["title"]]
    assert reads[0].model == "example_service.Document" and reads[0].actor["username"] == "bob"
    assert reads_of(doc) == reads
    other = users["bob"].documents.get(classification="public")
    assert {r.request_id for r in reads_of(other)} == {"first", "second"}
    with pytest.raises(ValueError):
        reads_of(Document)


def test_reads_of_with_a_limit_loads_only_the_newest(gql, users, settings, monkeypatch):
    from gql_audit import history

    doc = users["alice"].documents.get(classification="public")
    for n, store in enumerate(["gql_audit", "auditlog", "gql_audit", "auditlog", "gql_audit"]):
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": store}
        gql("{ publicDocuments { title } }", headers={"X-Request-ID": f"read-{n}"})
    everything = reads_of(doc)
    assert [r.request_id for r in everything] == [f"read-{n}" for n in range(4, -1, -1)]
    rows_loaded = []
    whole_rows = history.reads_in_row
    monkeypatch.setattr(history, "reads_in_row", lambda row, **kw: rows_loaded.append(row) or whole_rows(row, **kw))
    for limit in (0, 1, 2, 3, 10):
        rows_loaded.clear()
        assert reads_of(doc, limit=limit) == everything[:limit]
        assert len(rows_loaded) <= limit  # the other stored rows were never loaded whole
    with pytest.raises(ValueError):
        reads_of(doc, limit=-1)


@pytest.mark.django_db(transaction=True)
def test_reads_survive_the_rollback_of_the_request(client, users, monkeypatch):
    from tests.conftest import post_graphql

    monkeypatch.setitem(connection.settings_dict, "ATOMIC_REQUESTS", True)
    query = "{ documents { title } } "
    mutation = 'mutation { importDocuments(titles: ["a", " "]) { count } }'
    post_graphql(client, query, token=make_token("alice"), headers={"X-Request-ID": "rb-read"})
    post_graphql(client, mutation, token=make_token("alice"), headers={"X-Request-ID": "rb-write"})
    assert not Document.objects.filter(title="a").exists()
    assert len(request_trail("rb-read").reads) == 4
    trail = request_trail("rb-write")
    assert [e.kind for e in trail.events] == ["graphql_error"] and not trail.changes.exists()


def test_disable_remote_addr_is_honoured_for_reads_and_changes(client, users, settings):
    from gql_audit.models import SecurityEvent
    from tests.conftest import post_graphql

    settings.AUDITLOG_DISABLE_REMOTE_ADDR = True
    token = make_token("alice")
    post_graphql(client, "{ documents { title } me { username } }", token=token, headers={"X-Request-ID": "noaddr"})
    post_graphql(
        client,
        'mutation { updateProfile(phone: "1") { profile { phone } } }',
        token=token,
        headers={"X-Request-ID": "noaddr"},
    )
    post_graphql(client, "{ me { username } }", token="bad", headers={"X-Request-ID": "noaddr"})
    trail = request_trail("noaddr")
    assert trail.reads and all(read.remote_addr is None for read in trail.reads)
    change = trail.changes.get()
    assert change.remote_addr is None and change.additional_data["gql_audit"]["remote_addr"] is None
    # Security events keep the address: they are about the client, not about the data.
    assert SecurityEvent.objects.get(request_id="noaddr").remote_addr == "127.0.0.1"


# --- auditlog's contracts -------------------------------------------------------------


def test_set_actor_and_set_extra_data_blocks_win_for_reads(users):
    from auditlog.context import set_actor, set_extra_data

    doc = users["carol"].documents.first()
    with service_code("block", users["alice"]):
        with set_actor(users["bob"], remote_addr="198.51.100.9"):
            accessed.send(sender=Document, instance=doc)
        with set_extra_data({"remote_port": 4444}):
            accessed.send(sender=Document, instance=users["alice"].documents.first())
    reads = {read.object_pk: read for read in request_trail("block").reads}
    blocked = reads[str(doc.pk)]
    assert (blocked.actor_id, blocked.actor["username"], blocked.remote_addr) == (
        users["bob"].pk,
        "bob",
        "198.51.100.9",
    )
    other = reads[str(users["alice"].documents.first().pk)]
    assert (other.actor_id, other.remote_addr) == (users["alice"].pk, "192.0.2.1")


def test_one_correlation_id_with_a_cid_getter(client, users, settings, store):
    from tests.conftest import post_graphql

    settings.AUDITLOG_CID_GETTER = "tests.test_access_log.fixed_cid"
    token = make_token("alice")
    post_graphql(
        client,
        'mutation { updateProfile(phone: "2") { profile { phone } } }',
        token=token,
        headers={"X-Request-ID": "with-getter"},
    )
    post_graphql(client, "{ documents { title } }", token=token, headers={"X-Request-ID": "with-getter-2"})
    assert LogEntry.objects.get(action=LogEntry.Action.UPDATE).cid == "cid-from-getter"
    # The trail of a request is still found by its request id.
    assert request_trail("with-getter").changes.count() == 1
    assert len(request_trail("with-getter-2").reads) == 4
    if store == "auditlog":
        assert set(LogEntry.objects.filter(action=LogEntry.Action.ACCESS).values_list("cid", flat=True)) == {
            "cid-from-getter"
        }
    else:
        from gql_audit.models import RequestReads

        assert {r.context["cid"] for r in RequestReads.objects.all()} == {"cid-from-getter"}


def fixed_cid():
    return "cid-from-getter"


def test_remote_port_is_recorded(client, users, store):
    from tests.conftest import post_graphql

    token = make_token("alice")
    post_graphql(client, "{ documents { title } }", token=token, headers={"X-Request-ID": "port"}, REMOTE_PORT="51515")
    post_graphql(client, "{ me { id } }", token=token, headers={"X-Request-ID": "port-2", "X-Forwarded-Port": "8443"})
    if store == "auditlog":
        assert set(LogEntry.objects.filter(cid="port").values_list("remote_port", flat=True)) == {51515}
        assert set(LogEntry.objects.filter(cid="port-2").values_list("remote_port", flat=True)) == {8443}
    else:
        from gql_audit.models import RequestReads

        assert RequestReads.objects.get(request_id="port").context["remote_port"] == 51515


@pytest.mark.django_db(transaction=True)
def test_auditlog_store_honours_pre_log_veto_post_log_and_get_additional_data(client, users, settings, monkeypatch):
    from auditlog.signals import post_log, pre_log

    from tests.conftest import post_graphql

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "auditlog"}
    secret = users["alice"].documents.get(classification="confidential")
    announced = []

    def veto(sender, instance, action, **kwargs):
        return False if instance.pk == secret.pk else None

    def announce(sender, instance, action, log_entry, **kwargs):
        announced.append((instance.pk, log_entry.pk, log_entry.action))

    monkeypatch.setattr(
        Document, "get_additional_data", lambda self: {"classification": self.classification}, raising=False
    )
    pre_log.connect(veto, sender=Document, dispatch_uid="test.veto")
    post_log.connect(announce, sender=Document, dispatch_uid="test.announce")
    try:
        post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "sig"})
    finally:
        pre_log.disconnect(sender=Document, dispatch_uid="test.veto")
        post_log.disconnect(sender=Document, dispatch_uid="test.announce")
    entries = {e.object_pk: e for e in LogEntry.objects.filter(cid="sig", action=LogEntry.Action.ACCESS)}
    assert str(secret.pk) not in entries and len(entries) == 3
    assert all(e.additional_data["classification"] in ("public", "internal") for e in entries.values())
    assert all(e.additional_data["gql_audit"]["fields"] == ["title"] for e in entries.values())
    assert sorted(pk for pk, _, _ in announced) == sorted(int(pk) for pk in entries)
    assert {entry_pk for _, entry_pk, _ in announced} == {e.pk for e in entries.values()}


# --- WRITE_AFTER_RESPONSE -------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_write_after_response_writes_when_the_server_closes_it(users, settings):
    import io
    import json

    from django.core.handlers.wsgi import WSGIHandler

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "WRITE_AFTER_RESPONSE": True}
    body = json.dumps({"query": "{ documents { title } me { id } }"}).encode()
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/graphql/",
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "80",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_AUTHORIZATION": f"JWT {make_token('alice')}",
        "HTTP_X_REQUEST_ID": "after",
        "wsgi.input": io.BytesIO(body),
        "wsgi.url_scheme": "http",
    }
    statuses = []
    response = WSGIHandler()(environ, lambda status, headers: statuses.append((status, dict(headers))))
    content = b"".join(response)
    assert statuses[0][0].startswith("200") and statuses[0][1]["X-Request-ID"] == "after"
    assert b"alice secret" in content
    assert request_trail("after").reads == []  # the client has the response; nothing written yet
    # Until written, the request is among those in flight (a worker killed now still logs it).
    assert [ctx.request_id for ctx in context.in_flight()] == ["after"]
    response.close()  # what the WSGI server does once the body is sent
    assert len(request_trail("after").reads) == 5
    assert context.in_flight() == []


@pytest.mark.django_db(transaction=True)
async def test_write_after_response_under_asgi(async_client, settings, async_connections_closed):
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "WRITE_AFTER_RESPONSE": True}
    await sync_to_async(get_user_model().objects.create_user)("dora", "dora@example.org", "pw")
    response = await async_client.post(
        "/graphql/",
        {"query": "{ me { username } }"},
        content_type="application/json",
        headers={"Authorization": f"JWT {make_token('dora')}", "X-Request-ID": "after-asgi"},
    )
    assert response.json() == {"data": {"me": {"username": "dora"}}}
    reads = await sync_to_async(lambda: request_trail("after-asgi").reads)()
    assert [(r.model, r.actor["username"]) for r in reads] == [("auth.User", "dora")]


def test_write_after_response_excludes_fail_closed(settings):
    from gql_audit.checks import check_settings

    settings.GQL_AUDIT = {"WRITE_AFTER_RESPONSE": True, "FAIL_CLOSED": True}
    assert [m.id for m in check_settings()] == ["gql_audit.E009"]
