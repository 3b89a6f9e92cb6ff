"""Deferred authentication errors: private fields fail with a code, public ones resolve."""

from __future__ import annotations

from datetime import timedelta

import pytest

from tests.conftest import codes, make_token, post_graphql

pytestmark = pytest.mark.django_db

QUERY = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
MUTATION = 'mutation { updateProfile(phone: "555") { profile { phone } } }'
TOKEN_AUTH = 'mutation { tokenAuth(username: "alice", password: "alice-password") { token } }'


def bad_tokens():
    return {
        "expired": (make_token("alice", expires_in=timedelta(minutes=-1)), "TOKEN_EXPIRED"),
        "malformed": ("not-a-jwt", "TOKEN_INVALID"),
        "three segments of garbage": ("eyJ.eyJ.xyz", "TOKEN_INVALID"),
        "wrong signature": (make_token("alice", key="another-key-entirely-0123456789abcdef"), "TOKEN_INVALID"),
        "deleted user": (make_token("nobody-by-that-name"), "TOKEN_INVALID"),
        "inactive user": (make_token("carol"), "TOKEN_INVALID"),
        "oversized": ("a" * 20000, "TOKEN_INVALID"),
    }


@pytest.mark.parametrize("case", list(bad_tokens()))
def test_bad_token_fails_private_fields_only(gql, users, case):
    token, code = bad_tokens()[case]
    body = gql(QUERY, token=token)
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert {d["title"] for d in body["data"]["publicDocuments"]} == {"alice public", "bob public", "carol public"}
    assert body["data"]["me"] is None
    assert codes(body) == {("me",): code}
    assert token not in str(body)


@pytest.mark.parametrize("case", list(bad_tokens()))
def test_bad_token_fails_mutation_and_changes_nothing(gql, users, case):
    token, code = bad_tokens()[case]
    body = gql(MUTATION, token=token)
    assert body["data"] == {"updateProfile": None}
    assert codes(body) == {("updateProfile",): code}
    users["alice"].profile.refresh_from_db()
    assert users["alice"].profile.phone == ""


@pytest.mark.parametrize("case", list(bad_tokens()))
def test_bad_token_does_not_block_public_mutation(gql, users, case):
    token, _ = bad_tokens()[case]
    body = gql(TOKEN_AUTH, token=token)
    assert "errors" not in body
    assert body["data"]["tokenAuth"]["token"]


def test_missing_token_is_unauthenticated(gql, users):
    body = gql(QUERY)
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "UNAUTHENTICATED"}
    body = gql(MUTATION)
    assert codes(body) == {("updateProfile",): "UNAUTHENTICATED"}


def test_valid_token_resolves_everything(gql, users):
    body = gql(QUERY, token=make_token("alice"))
    assert "errors" not in body
    assert body["data"]["me"] == {"username": "alice"}
    body = gql(MUTATION, token=make_token("alice"))
    assert body["data"]["updateProfile"]["profile"]["phone"] == "555"


@pytest.mark.parametrize(
    "header",
    ["JWT", "JWT a b", "jwt   ", "JWT " + "x" * 9000],
)
def test_malformed_authorization_header_is_invalid(client, users, header):
    response = post_graphql(client, QUERY, HTTP_AUTHORIZATION=header)
    body = response.json()
    assert response.status_code == 200
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "TOKEN_INVALID"}


def test_other_authorization_scheme_is_no_token(gql, users):
    """``Basic`` credentials are not ours: the request is anonymous, not invalid."""
    body = gql(QUERY, headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
    assert codes(body) == {("me",): "UNAUTHENTICATED"}


@pytest.mark.parametrize("path", ["/graphql/", "/graphql-jwt/"])
def test_a_valid_token_sent_as_bearer_authenticates(gql, users, path):
    """What most HTTP clients send (RFC 6750) is read while GRAPHQL_JWT sets no
    prefix: a valid token sent so was once taken for no token at all."""
    body = gql(QUERY, headers={"Authorization": f"Bearer {make_token('alice')}"}, path=path)
    assert "errors" not in body
    assert body["data"]["me"] == {"username": "alice"}
    body = gql(MUTATION, headers={"Authorization": f"bearer {make_token('alice')}"}, path=path)
    assert body["data"]["updateProfile"]["profile"]["phone"] == "555"


@pytest.mark.parametrize(
    ("header", "code"),
    [
        ("Bearer " + make_token("alice", expires_in=timedelta(minutes=-1)), "TOKEN_EXPIRED"),
        ("Bearer not-a-jwt", "TOKEN_INVALID"),
        ("Bearer a b", "TOKEN_INVALID"),
        ("Bearer", "TOKEN_INVALID"),
        ("Bearer " + "x" * 9000, "TOKEN_INVALID"),
    ],
    ids=["expired", "malformed", "two words", "no token", "oversized"],
)
def test_a_bad_token_sent_as_bearer_says_so(gql, users, header, code):
    assert codes(gql(QUERY, headers={"Authorization": header})) == {("me",): code}


def test_a_bearer_header_that_is_no_token_is_not_a_session(client, users):
    """Read as a token, it is refused as one; a bad token never falls back to the session."""
    client.force_login(users["bob"])
    assert post_graphql(client, "{ me { username } }").json() == {"data": {"me": {"username": "bob"}}}
    body = post_graphql(client, "{ me { username } }", HTTP_AUTHORIZATION="Bearer undefined").json()
    assert codes(body) == {("me",): "TOKEN_INVALID"}


@pytest.mark.parametrize("prefix", ["JWT", "Token"])
def test_a_prefix_set_on_purpose_is_followed_exactly(gql, users, settings, prefix):
    settings.GRAPHQL_JWT = {**settings.GRAPHQL_JWT, "JWT_AUTH_HEADER_PREFIX": prefix}
    token = make_token("alice")
    assert gql(QUERY, headers={"Authorization": f"{prefix} {token}"})["data"]["me"] == {"username": "alice"}
    assert codes(gql(QUERY, headers={"Authorization": f"Bearer {token}"})) == {("me",): "UNAUTHENTICATED"}


def test_token_in_cookie(client, users):
    client.cookies["JWT"] = make_token("bob")
    response = post_graphql(client, "{ me { username } }")
    assert response.json() == {"data": {"me": {"username": "bob"}}}
    client.cookies["JWT"] = "garbage"
    assert codes(post_graphql(client, "{ me { username } }").json()) == {("me",): "TOKEN_INVALID"}


def test_nested_private_field_under_public_root(gql, users):
    query = "{ publicDocuments { title owner { username } } }"
    body = gql(query)
    documents = body["data"]["publicDocuments"]
    assert [d["title"] for d in documents] == ["alice public", "bob public", "carol public"]
    assert all(d["owner"] is None for d in documents)
    assert set(codes(body).values()) == {"UNAUTHENTICATED"}
    assert set(codes(body)) == {("publicDocuments", i, "owner") for i in range(3)}

    body = gql(query, token=make_token("alice"))
    assert "errors" not in body
    assert [d["owner"]["username"] for d in body["data"]["publicDocuments"]] == ["alice", "bob", "carol"]


def test_private_field_named_through_alias_and_fragment(gql, users):
    query = "query { status: serviceStatus { ok } who: me { ...U } } fragment U on UserType { username }"
    body = gql(query)
    assert body["data"] == {"status": {"ok": True}, "who": None}
    assert codes(body) == {("who",): "UNAUTHENTICATED"}


def test_typename_always_public(gql, users):
    assert gql("{ __typename }", token="garbage") == {"data": {"__typename": "Query"}}


def test_relay_node_is_private(gql, users):
    from graphql_relay import to_global_id

    doc = users["alice"].documents.get(classification="public")
    query = '{ node(id: "%s") { ... on DocumentNode { title } } }' % to_global_id("DocumentNode", doc.pk)
    assert codes(gql(query)) == {("node",): "UNAUTHENTICATED"}
    assert gql(query, token=make_token("alice")) == {"data": {"node": {"title": "alice public"}}}


INTROSPECTION = '{ __type(name: "Query") { name } serviceStatus { ok } }'


@pytest.mark.parametrize(
    ("mode", "token", "expected"),
    [
        ("public", None, None),
        ("authenticated", None, "UNAUTHENTICATED"),
        ("authenticated", "garbage", "TOKEN_INVALID"),
        ("authenticated", "alice", None),
        ("disabled", "alice", "INTROSPECTION_DISABLED"),
    ],
)
def test_introspection_modes(gql, users, settings, mode, token, expected):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INTROSPECTION": mode}
    body = gql(INTROSPECTION, token=make_token("alice") if token == "alice" else token)
    assert body["data"]["serviceStatus"] == {"ok": True}
    if expected is None:
        assert body["data"]["__type"] == {"name": "Query"}
        assert "errors" not in body
    else:
        assert body["data"]["__type"] is None
        assert codes(body) == {("__type",): expected}


def test_denied_schema_introspection_nulls_data(gql, users, settings):
    """``__schema`` is Non-Null in the spec, so its error nulls ``data`` as a whole."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "INTROSPECTION": "disabled"}
    body = gql("{ __schema { queryType { name } } }", token=make_token("alice"))
    assert body["data"] is None
    assert codes(body) == {("__schema",): "INTROSPECTION_DISABLED"}


def test_public_fields_setting_is_read_live(gql, users, settings):
    query = "{ documents { title } }"
    assert codes(gql(query)) == {("documents",): "UNAUTHENTICATED"}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "PUBLIC_FIELDS": ["Query.documents"]}
    titles = [d["title"] for d in gql(query)["data"]["documents"]]
    assert titles == ["alice public", "bob public", "carol public"]
