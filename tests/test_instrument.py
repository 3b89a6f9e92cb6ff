"""The instrumented schema (``INSTRUMENT_SCHEMA``): the same rules and records as the
middleware on every field, with graphql-core calling no middleware per field."""

from __future__ import annotations

import json

import pytest
from django.db import OperationalError
from django.test import RequestFactory
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView
from graphql import GraphQLError

from example_service.models import Document
from example_service.schema import schema
from gql_audit import resolving
from gql_audit.graphene import AuditMiddleware
from gql_audit.history import request_trail
from gql_audit.middleware import view_schema
from gql_audit.models import SecurityEvent
from tests.conftest import make_token, post_graphql

pytestmark = pytest.mark.django_db

#: Every shape of read, every kind of refusal and failure the Graphene middleware handles.
CASES = {
    "list": ("{ documents { id title body } }", "alice"),
    "connection": ("{ documentsConnection(first: 3) { edges { node { title classification } } } }", "alice"),
    "node": ("query($id: ID!) { node(id: $id) { ... on DocumentNode { title } } }", "alice"),
    "nested and aliases": ("{ documents { t: title owner { username profile { phone } } } }", "alice"),
    "fragment": ("{ documents { ...D } } fragment D on DocumentNode { title owner { username } }", "alice"),
    "dict values": ("{ documentSummaries { id title } }", "alice"),
    "me": ("{ me { username } }", "alice"),
    "public root, private nested": ("{ publicDocuments { title owner { username } } }", None),
    "private root, anonymous": ("{ serviceStatus { ok } documents { title } }", None),
    "bad token": ("{ serviceStatus { ok } documents { title } }", "not-a-token"),
    "introspection": ('{ __schema { queryType { name } } __type(name: "Query") { name } }', None),
    "typename": ("{ __typename documents { __typename } }", "alice"),
    "failing resolver": ("{ documents { title } }", "alice:fail"),
    "failing scalar": ("{ documents { title body } }", "alice:fail-scalar"),
    "mutation": ('mutation { createDocument(title: "t", body: "b") { document { title } } }', "alice"),
    "login": ('mutation { tokenAuth(username: "alice", password: "wrong") { token } }', None),
}


class Exploding:
    """A model attribute that is stored but cannot be read: a scalar whose default resolver raises."""

    def __set__(self, obj, value):
        obj.__dict__["_exploding"] = value

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        raise ValueError("no body today")


def run_case(client, users, monkeypatch, name, instrumented):
    query, who = CASES[name]
    slug = "".join(c if c.isalnum() else "-" for c in name)
    request_id = f"{slug}-{'on' if instrumented else 'off'}"
    token = None
    if who == "not-a-token":
        token = who
    elif who is not None:
        token = make_token(who.split(":")[0])
    if who == "alice:fail":

        def broken(root, info):
            raise OperationalError("connection to server lost: secret-host:5432")

        monkeypatch.setattr(schema.graphql_schema.query_type.fields["documents"], "resolve", broken)
    if who == "alice:fail-scalar":
        monkeypatch.setattr(Document, "body", Exploding())
    variables = None
    if "$id" in query:
        from graphql_relay import to_global_id

        variables = {"id": to_global_id("DocumentNode", users["alice"].documents.first().pk)}
    response = post_graphql(client, query, variables=variables, token=token, headers={"X-Request-ID": request_id})
    monkeypatch.undo()
    body = json.loads(response.content)
    body = json.loads(json.dumps(body).replace(request_id, "<request id>"))
    trail = request_trail(request_id)
    # A created object's key differs between the two runs; everything else must not.
    reads = sorted(
        (r.model, r.object_pk if name != "mutation" else "new", tuple(r.fields), tuple(sorted(r.paths)))
        for r in trail.reads
    )
    events = sorted((e.kind, e.path, e.message.replace(request_id, "")) for e in trail.events)
    return response.status_code, body, reads, events


def counted_middleware():
    """``AuditMiddleware.resolve_field`` counting the fields graphql-core calls it on."""
    calls = []
    real = AuditMiddleware.resolve_field

    def counting(self, next, root, info, **args):
        calls.append(info.field_name)
        return real(self, next, root, info, **args)

    return calls, counting


#: The cases whose values graphene-django can serve on graphql-core 3.3 too (its lists of
#: querysets cannot: a ``QuerySet`` is an async iterable to graphql-core 3.3).
GRAPHQL_CORE_33 = {
    *("connection", "node", "dict values", "me", "private root, anonymous", "bad token"),
    *("introspection", "failing resolver", "mutation", "login"),
}


@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=[pytest.mark.graphql_core] if name in GRAPHQL_CORE_33 else []) for name in CASES]
)
def test_same_response_and_trail_with_and_without_instrumentation(client, users, monkeypatch, settings, name):
    calls, counting = counted_middleware()
    monkeypatch.setattr(AuditMiddleware, "resolve_field", counting)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INSTRUMENT_SCHEMA": False}
    through_middleware = run_case(client, users, monkeypatch, name, instrumented=False)
    assert calls, "without instrumentation the middleware runs on every field"
    monkeypatch.setattr(AuditMiddleware, "resolve_field", counting)
    calls.clear()
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INSTRUMENT_SCHEMA": True}
    instrumented = run_case(client, users, monkeypatch, name, instrumented=True)
    assert calls == [], "graphql-core called the middleware on fields of an instrumented schema"
    assert instrumented == through_middleware
    status, body, reads, events = instrumented
    if name in {"list", "connection", "nested and aliases", "fragment", "dict values", "me", "node"}:
        assert reads, "a read was recorded"
    if name in {"private root, anonymous", "bad token", "failing resolver", "failing scalar", "login"}:
        assert events, "the refusal or failure was recorded"
    assert "secret-host" not in json.dumps(body)


def test_a_resolver_set_after_instrumentation_is_guarded_at_the_next_request(client, users, monkeypatch):
    post_graphql(client, "{ serviceStatus { ok } }")  # instruments the schema
    field = schema.graphql_schema.query_type.fields["me"]
    assert getattr(field.resolve, resolving.ORIGINAL, None) is not None
    monkeypatch.setattr(field, "resolve", lambda root, info: users["alice"])
    body = json.loads(post_graphql(client, "{ me { username } }").content)
    assert body["data"] == {"me": None}
    assert body["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


def test_instrumented_fields_do_nothing_outside_an_audited_request(users):
    # A service's own tests often call schema.execute() with no request at all.
    resolving.instrument(schema.graphql_schema)
    request = RequestFactory().get("/")
    request.user = users["alice"]
    result = schema.execute("{ me { username } }", context_value=request)
    assert result.errors is None and result.data == {"me": {"username": "alice"}}
    from django.contrib.auth.models import AnonymousUser

    request.user = AnonymousUser()
    result = schema.execute("{ documents { title } }", context_value=request)
    # No gql_audit rule applies outside a request it handles: the private field resolves.
    assert result.errors is None and result.data["documents"]
    assert not SecurityEvent.objects.exists()


def test_a_failure_outside_a_request_is_raised_as_it_was(monkeypatch):
    resolving.instrument(schema.graphql_schema)

    monkeypatch.setattr(Document, "body", Exploding())
    root = Document(title="t", body="b")
    field = schema.graphql_schema.type_map["DocumentNode"].fields["body"]
    with pytest.raises(ValueError, match="no body today"):
        field.resolve(root, None)


def test_view_schema_is_the_schema_the_view_executes():
    from example_service.schema import schema as example_schema
    from tests.schemas import argument_schema

    assert view_schema(GraphQLView.as_view()) is example_schema.graphql_schema
    assert view_schema(csrf_exempt(GraphQLView.as_view(schema=argument_schema))) is argument_schema.graphql_schema

    class Chooser(GraphQLView):
        def execute_graphql_request(self, *args, **kwargs):  # may pick another schema
            return super().execute_graphql_request(*args, **kwargs)

    assert view_schema(Chooser.as_view()) is None

    def function_view(request):
        return GraphQLView.as_view()(request)

    assert view_schema(function_view) is None

    class Broken(GraphQLView):
        def __init__(self, **kwargs):
            raise RuntimeError("not configured")

    assert view_schema(Broken.as_view()) is None


def test_a_view_the_middleware_cannot_read_gets_the_middleware_on_every_field(users, monkeypatch, settings, rf):
    from gql_audit.middleware import AuditContextMiddleware

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    calls, counting = counted_middleware()
    monkeypatch.setattr(AuditMiddleware, "resolve_field", counting)

    def function_view(request):
        return csrf_exempt(GraphQLView.as_view())(request)

    request = rf.post(
        "/graphql/",
        data=json.dumps({"query": "{ documents { title } }"}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"JWT {make_token('alice')}",
        HTTP_X_REQUEST_ID="function-view",
    )
    middleware = AuditContextMiddleware(lambda r: middleware.process_view(r, function_view, (), {}) or function_view(r))
    response = middleware(request)
    assert response.status_code == 200 and "errors" not in json.loads(response.content)
    assert "title" in calls
    assert request_trail("function-view").reads


def test_denied_is_a_graphql_error():
    assert isinstance(resolving.denied("UNAUTHENTICATED"), GraphQLError)
