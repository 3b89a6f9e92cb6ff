"""Every denial and refusal event names the rule that refused (details.rule)."""

from __future__ import annotations

import pytest
from graphql_relay import to_global_id

from gql_audit.models import SecurityEvent
from tests.conftest import make_token

pytestmark = pytest.mark.django_db


def rule_of(request_id, kind):
    return SecurityEvent.objects.get(request_id=request_id, kind=kind).details["rule"]


@pytest.mark.graphql_core
def test_a_private_root_field_names_public_fields(gql, users):
    gql("{ me { username } }", headers={"X-Request-ID": "r-root"})
    assert rule_of("r-root", "unauthenticated") == "PUBLIC_FIELDS"


def test_a_private_nested_field_names_the_marker(gql, users):
    gql("{ publicDocuments { owner { username } } }", headers={"X-Request-ID": "r-nested"})
    assert rule_of("r-nested", "unauthenticated") == "@private"


@pytest.mark.graphql_core
@pytest.mark.parametrize(("mode", "kind"), [("authenticated", "unauthenticated"), ("disabled", "forbidden")])
def test_introspection_names_its_setting(gql, users, settings, mode, kind):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INTROSPECTION": mode}
    gql('{ __type(name: "Query") { name } }', headers={"X-Request-ID": f"r-intro-{mode}"})
    assert rule_of(f"r-intro-{mode}", kind) == "INTROSPECTION"


def test_a_bad_token_names_the_authenticator(gql, users):
    gql("{ serviceStatus { ok } }", token="garbage", headers={"X-Request-ID": "r-token"})
    assert rule_of("r-token", "token_invalid") == "AUTHENTICATOR"


def test_the_services_own_permission_error_names_the_resolver(gql, users):
    document = users["bob"].documents.first()
    query = 'mutation { updateDocument(id: "%s", title: "x") { document { id } } }' % to_global_id(
        "DocumentNode", document.pk
    )
    gql(query, token=make_token("alice"), headers={"X-Request-ID": "r-resolver"})
    assert rule_of("r-resolver", "forbidden") == "resolver"


def test_a_missing_client_certificate_names_require_client_cert(gql, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "REQUIRE_CLIENT_CERT": True}
    gql("{ me { username } }", token=make_token("alice"), headers={"X-Request-ID": "r-cert"})
    assert rule_of("r-cert", "forbidden") == "REQUIRE_CLIENT_CERT"
