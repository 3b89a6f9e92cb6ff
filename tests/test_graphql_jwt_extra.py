"""django-graphql-jwt is an optional extra: gql_audit works without it, and says
so clearly when a setting still names it.

Here the package is hidden from the running process (``sys.modules["graphql_jwt"] =
None``, which ``importlib`` reads as "not installed"); ``test_without_the_extra_in_a_fresh_venv``
proves the same with a virtual environment that never had it.
"""

from __future__ import annotations

import sys

import pytest
from django.core import checks

from gql_audit.auth import django_graphql_jwt
from gql_audit.models import SecurityEvent
from tests.conftest import codes, make_token, post_graphql

QUERY = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
E054 = "gql_audit.E054"


@pytest.fixture
def without_graphql_jwt(monkeypatch, settings):
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    # The test URLs and the example's schema use graphql_jwt's views and mutations:
    # loaded first, as a service without the package would have no such imports.
    assert get_resolver().url_patterns
    assert import_string(settings.GRAPHENE["SCHEMA"])
    monkeypatch.setitem(sys.modules, "graphql_jwt", None)
    django_graphql_jwt.names.cache_clear()
    assert not django_graphql_jwt.installed()
    yield
    monkeypatch.undo()
    django_graphql_jwt.names.cache_clear()


def messages(tags=None):
    return [m for m in checks.run_checks(tags=tags) if m.id.startswith("gql_audit.")]


def test_installed_here():
    """The dev extra installs it: the rest of the suite runs graphql_jwt's side."""
    assert django_graphql_jwt.installed()
    assert E054 not in [m.id for m in messages()]


def test_default_authenticator_without_the_package_is_a_check_error(without_graphql_jwt):
    found = [m for m in messages() if m.id == E054]
    assert len(found) == 1
    assert "django-graphql-jwt is not installed" in found[0].msg
    assert "gql_audit.auth.jwt_authenticator" in found[0].msg
    assert "pip install 'gql-audit[graphql-jwt]'" in found[0].hint
    # W001 is about graphql_jwt's own setting: not said of a package that is not there.
    assert "gql_audit.W001" not in [m.id for m in messages()]


def test_every_setting_naming_the_package_is_reported(without_graphql_jwt, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": None}
    assert E054 not in [m.id for m in messages()]
    settings.AUTHENTICATION_BACKENDS = ["graphql_jwt.backends.JSONWebTokenBackend"]
    settings.GRAPHENE = {
        **settings.GRAPHENE,
        "MIDDLEWARE": ["gql_audit.graphene.AuditMiddleware", "graphql_jwt.middleware.JSONWebTokenMiddleware"],
    }
    found = sorted(m.msg for m in messages() if m.id == E054)
    assert len(found) == 2
    assert "AUTHENTICATION_BACKENDS lists 'graphql_jwt.backends.JSONWebTokenBackend'" in found[0]
    assert "GRAPHENE['MIDDLEWARE'] lists 'graphql_jwt.middleware.JSONWebTokenMiddleware'" in found[1]


def test_bearer_authenticator_without_the_package_has_no_check_error(without_graphql_jwt, settings):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["HS256"], "key": settings.SECRET_KEY, "user_claim": "username"},
    }
    assert [m.id for m in messages()] == []


@pytest.mark.django_db
def test_default_authenticator_without_the_package_cannot_decide(without_graphql_jwt, client, users):
    """Not a bad token: the service is missing a package, so AUTH_UNAVAILABLE on
    private fields, public ones resolve, and the event names the package."""
    response = post_graphql(client, QUERY, token=make_token("alice"))
    body = response.json()
    assert response.status_code == 200
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert len(body["data"]["publicDocuments"]) == 3
    assert codes(body) == {("me",): "AUTH_UNAVAILABLE"}
    event = SecurityEvent.objects.get()
    assert event.kind == "db_error"
    assert "django-graphql-jwt is not installed" in event.details["reason"]


@pytest.mark.django_db
def test_resolver_errors_are_classified_without_the_package(without_graphql_jwt, gql, users, settings):
    from django.contrib.auth import get_user_model

    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["HS256"], "key": settings.SECRET_KEY, "user_claim": "username"},
        "MASK_ERRORS": "all",
    }
    assert get_user_model().objects.filter(username="alice").exists()
    body = gql('{ me { username } document(id: "bm9wZQ==") { title } }', headers={"Authorization": "Bearer x.y.z"})
    assert codes(body) == {("me",): "TOKEN_INVALID", ("document",): "TOKEN_INVALID"}
    assert not SecurityEvent.objects.filter(kind="graphql_error").exists()
    token = make_token("alice")
    body = gql('{ me { username } document(id: "bm9wZQ==") { title } }', headers={"Authorization": f"Bearer {token}"})
    assert body["data"]["me"] == {"username": "alice"}
    # Masked (it is no GraphQLError raised on purpose, nor graphql_jwt's), and on record.
    assert codes(body) == {("document",): "INTERNAL_ERROR"}
    assert SecurityEvent.objects.filter(kind="graphql_error", path="document").exists()
