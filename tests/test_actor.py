"""The actor and context on django-auditlog entries."""

from __future__ import annotations

import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.db.models.signals import pre_save
from django.test import RequestFactory
from graphql_relay import to_global_id

from example_service.models import Document, Profile
from gql_audit import context
from tests.conftest import codes, make_token

CREATE = 'mutation Create { createDocument(title: "t", body: "b") { document { id } } }'
PROFILE = 'mutation { updateProfile(fullName: "Alice A.", phone: "555") { profile { phone } } }'

JWT_MIDDLEWARE_MODE = {
    "path": "/graphql-jwt/",
    "settings": {"AUTHENTICATOR": None},
}


def run_mutations(gql, user, *, path="/graphql/"):
    """Create, update and delete audited rows as ``user``; returns the new document id."""
    token = make_token(user.username)
    body = gql(CREATE, token=token, path=path, headers={"X-Request-ID": "req-create"})
    assert "errors" not in body, body
    doc_id = body["data"]["createDocument"]["document"]["id"]
    update = 'mutation { updateDocument(id: "%s", title: "t2") { document { title } } }' % doc_id
    assert "errors" not in gql(update, token=token, path=path, headers={"X-Request-ID": "req-update"})
    assert "errors" not in gql(PROFILE, token=token, path=path, headers={"X-Request-ID": "req-profile"})
    return doc_id


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["gql_audit authenticator", "graphql_jwt middleware"])
def test_every_entry_of_a_mutation_has_the_jwt_user_as_actor(gql, users, settings, mode):
    path = "/graphql/"
    if mode == "graphql_jwt middleware":
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": None}
        settings.AUTHENTICATION_BACKENDS = [
            "graphql_jwt.backends.JSONWebTokenBackend",
            "django.contrib.auth.backends.ModelBackend",
        ]
        path = "/graphql-jwt/"
    alice = users["alice"]
    before = set(LogEntry.objects.values_list("pk", flat=True))
    run_mutations(gql, alice, path=path)
    # By what is new, not by key order: keys are not ordered on CockroachDB.
    entries = list(LogEntry.objects.exclude(pk__in=before))
    assert {e.action for e in entries} >= {LogEntry.Action.CREATE, LogEntry.Action.UPDATE}
    assert {e.cid for e in entries} == {"req-create", "req-update", "req-profile"}
    for entry in entries:
        assert entry.actor_id == alice.pk, (mode, entry.cid, entry.actor_id)
        assert entry.actor_email == "alice@example.org"
        assert entry.remote_addr == "127.0.0.1"
        data = entry.additional_data["gql_audit"]
        assert data["request_id"] == entry.cid
        assert data["operation"]["type"] == "mutation"
        assert len(data["operation"]["hash"]) == 64
        assert data["db"]["alias"] == "default"
    create = next(e for e in entries if e.cid == "req-create" and e.action == LogEntry.Action.CREATE)
    assert create.additional_data["gql_audit"]["operation"]["name"] == "Create"
    assert create.additional_data["gql_audit"]["path"] == ["createDocument"]


@pytest.mark.django_db
def test_graphql_jwt_middleware_does_not_re_raise_a_handled_bad_token(gql, users):
    """With our authenticator on, a bad token stays deferred even under JSONWebTokenMiddleware."""
    body = gql("{ serviceStatus { ok } me { username } }", token="garbage", path="/graphql-jwt/")
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "TOKEN_INVALID"}


@pytest.mark.django_db
@pytest.mark.parametrize("authenticator", ["default", None])
@pytest.mark.parametrize(
    "query", ["{ serviceStatus { ok } me { username } }", "{ me { username } serviceStatus { ok } }"]
)
def test_public_then_private_root_fields_with_graphql_jwt_middleware(gql, users, settings, query, authenticator):
    """graphql_jwt 0.4 caches allow-any on ``info.path[0]`` (None for every root field
    in graphql-core 3); the private field must still see the token's user, in
    either order, whether our authenticator or graphql_jwt authenticates."""
    if authenticator is None:
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": None}
        settings.AUTHENTICATION_BACKENDS = [
            "graphql_jwt.backends.JSONWebTokenBackend",
            "django.contrib.auth.backends.ModelBackend",
        ]
    body = gql(query, token=make_token("alice"), path="/graphql-jwt/")
    assert "errors" not in body
    assert body["data"] == {"serviceStatus": {"ok": True}, "me": {"username": "alice"}}


@pytest.mark.django_db(transaction=True)
def test_user_deletes_own_account_and_the_entries_keep_the_email(gql, users):
    """django-auditlog #245: the DELETE entries cannot point at the deleted user;
    they keep actor_email. transaction=True so the FK checks really run at commit."""
    alice = users["alice"]
    alice_pk = alice.pk
    run_mutations(gql, alice)
    body = gql("mutation { deleteAccount { ok } }", token=make_token("alice"), headers={"X-Request-ID": "req-delete"})
    assert body == {"data": {"deleteAccount": {"ok": True}}}
    assert not get_user_model().objects.filter(pk=alice_pk).exists()
    deletes = LogEntry.objects.filter(cid="req-delete", action=LogEntry.Action.DELETE)
    models = {e.content_type.model for e in deletes}
    assert models == {"user", "profile", "document"}
    assert [(e.actor_id, e.actor_email) for e in deletes] == [(None, "alice@example.org")] * len(deletes)
    # Her earlier entries were set to NULL by the foreign key, and keep the email too.
    earlier = LogEntry.objects.filter(cid__in=["req-create", "req-update", "req-profile"])
    assert earlier.exists()
    assert [(e.actor_id, e.actor_email) for e in earlier] == [(None, "alice@example.org")] * len(earlier)
    # Bob's entries are untouched by Alice's deletion.
    run_mutations(gql, users["bob"])
    assert LogEntry.objects.filter(actor_id=users["bob"].pk).exists()


@pytest.mark.django_db
def test_actor_is_read_at_each_save_not_cached(users):
    """The user can change during a request (a login mutation, a middleware later
    in the chain): each entry gets the user of the moment it is saved."""
    request = RequestFactory().post("/graphql/")
    request.user = AnonymousUser()
    token = context.bind(context.RequestContext(request_id="lazy-1", request=request))
    try:
        Document.objects.create(owner=users["bob"], title="anonymous write")
        request.user = users["alice"]
        Document.objects.create(owner=users["bob"], title="alice write")
        request.user = users["bob"]
        Document.objects.create(owner=users["bob"], title="bob write")
    finally:
        context.reset(token)
    actors = dict(LogEntry.objects.filter(cid="lazy-1").values_list("object_repr", "actor_id"))
    assert actors == {"anonymous write": None, "alice write": users["alice"].pk, "bob write": users["bob"].pk}


@pytest.mark.django_db
def test_explicit_actor_and_additional_data_are_kept(users):
    request = RequestFactory().post("/graphql/")
    request.user = users["alice"]
    token = context.bind(context.RequestContext(request_id="explicit", request=request))
    try:
        doc = Document.objects.create(owner=users["bob"], title="x")
        entry = LogEntry.objects.log_create(
            doc,
            action=LogEntry.Action.ACCESS,
            force_log=True,
            actor=users["bob"],
            additional_data={"reason": "support"},
        )
        listed = LogEntry.objects.log_create(doc, action=LogEntry.Action.ACCESS, force_log=True, additional_data=[1, 2])
    finally:
        context.reset(token)
    entry.refresh_from_db()
    assert entry.actor_id == users["bob"].pk
    assert entry.additional_data["reason"] == "support"
    assert entry.additional_data["gql_audit"]["request_id"] == "explicit"
    listed.refresh_from_db()
    assert listed.additional_data["value"] == [1, 2]
    assert listed.actor_id == users["alice"].pk


@pytest.mark.django_db
def test_auditlog_set_actor_inside_a_request_wins(users):
    from auditlog.context import set_actor

    request = RequestFactory().post("/graphql/")
    request.user = users["alice"]
    token = context.bind(context.RequestContext(request_id="set-actor", request=request))
    try:
        with set_actor(users["bob"]):
            Document.objects.create(owner=users["bob"], title="on behalf")
        # auditlog leaves its context variable set after the block: it must not stick.
        Document.objects.create(owner=users["bob"], title="after the block")
    finally:
        context.reset(token)
    actors = dict(LogEntry.objects.filter(cid="set-actor").values_list("object_repr", "actor_id"))
    assert actors == {"on behalf": users["bob"].pk, "after the block": users["alice"].pk}


@pytest.mark.django_db
def test_outside_a_request_entries_are_untouched(users):
    document = Document.objects.create(owner=users["bob"], title="from a script")
    entry = LogEntry.objects.get(object_pk=str(document.pk), content_type__model="document")
    assert entry.actor_id is None and entry.cid is None and entry.additional_data is None


@pytest.mark.django_db
def test_no_signal_receiver_is_connected_per_request(gql, users):
    before = len(pre_save.receivers)
    token = make_token("alice")
    for _ in range(20):
        gql(PROFILE, token=token)
    assert len(pre_save.receivers) == before


@pytest.mark.django_db
def test_mutation_on_a_foreign_document_is_forbidden_and_unchanged(gql, users):
    doc = users["bob"].documents.get(classification="public")
    update = 'mutation { updateDocument(id: "%s", title: "pwned") { document { title } } }' % to_global_id(
        "DocumentNode", doc.pk
    )
    body = gql(update, token=make_token("alice"))
    assert codes(body) == {("updateDocument",): "FORBIDDEN"}
    doc.refresh_from_db()
    assert doc.title == "bob public"
    assert not Profile.objects.filter(full_name="pwned").exists()
