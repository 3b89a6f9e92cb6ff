"""The visibility rules, on small schemas executed directly."""

from __future__ import annotations

import functools
from types import SimpleNamespace

import graphene
import pytest
from django.contrib.auth.models import AnonymousUser

import gql_audit
from gql_audit.graphene import AuditMiddleware
from gql_audit.visibility import PRIVATE, PUBLIC, build_rules, marking
from tests.schemas import non_null_schema

pytestmark = pytest.mark.graphql_core

AUTHENTICATED = SimpleNamespace(is_authenticated=True)


def execute(schema, query, user):
    result = schema.execute(query, context_value=SimpleNamespace(user=user), middleware=[AuditMiddleware()])
    return result.data, {tuple(e.path): e.extensions.get("code") for e in result.errors or []}


def test_marks_are_found_through_partials_and_wrappers():
    @gql_audit.public
    def resolver(root, info):
        return None

    @functools.wraps(resolver)
    def wrapper(*args):
        return resolver(*args)

    assert marking(functools.partial(functools.partial(lambda *a: None, resolver), 1)) == PUBLIC
    assert marking(wrapper) == PUBLIC
    assert marking(lambda root, info: None) is None
    assert marking(None) is None


def test_private_wins_over_public():
    def resolver(root, info):
        return None

    gql_audit.public(resolver)
    assert marking(functools.partial(gql_audit.private(lambda *a: None), resolver)) == PRIVATE


def test_public_on_a_mutation_class():
    class Ping(graphene.Mutation):
        ok = graphene.Boolean()

        def mutate(root, info):
            return Ping(ok=True)

    gql_audit.public(Ping)

    class Query(graphene.ObjectType):
        x = graphene.String()

    class Mutation(graphene.ObjectType):
        ping = Ping.Field()

    schema = graphene.Schema(query=Query, mutation=Mutation)
    assert build_rules(schema.graphql_schema, ()).public_roots == {("Mutation", "ping")}
    assert execute(schema, "mutation { ping { ok } }", AnonymousUser()) == ({"ping": {"ok": True}}, {})


def test_decorators_reject_what_is_not_a_resolver():
    with pytest.raises(TypeError, match="decorates a resolver"):
        gql_audit.public("Query.x")

    class NoMutate:
        pass

    with pytest.raises(TypeError, match="defines no mutate"):
        gql_audit.public(NoMutate)


def test_rules_of_the_test_schema():
    rules = build_rules(non_null_schema.graphql_schema, ["Query.open", "Query.nope"])
    assert rules.public_roots == {("Query", "open"), ("Query", "marked")}
    assert rules.unknown_public == ("Query.nope",)
    (thing,) = rules.private_nested
    assert thing.name == "Thing" and rules.private_nested[thing] == {"secret", "note"}


@pytest.mark.django_db
def test_execution_without_the_django_middleware(settings):
    """Executed outside a request (no audit context): decided by ``context.user`` alone."""
    settings.GQL_AUDIT = {"PUBLIC_FIELDS": ["Query.open"]}
    data, errors = execute(non_null_schema, "{ open { name note } marked }", AnonymousUser())
    assert data == {"open": {"name": "thing", "note": None}, "marked": "marked"}
    assert errors == {("open", "note"): "UNAUTHENTICATED"}
    data, errors = execute(non_null_schema, "{ open { name note } marked }", AUTHENTICATED)
    assert data == {"open": {"name": "thing", "note": "note"}, "marked": "marked"}
    assert errors == {}
    data, errors = execute(non_null_schema, "{ required }", None)
    assert data is None and errors == {("required",): "UNAUTHENTICATED"}
