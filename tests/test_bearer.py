"""``bearer_authenticator`` with a configured key: HS, RS, PS, ES and EdDSA tokens,
every claim checked, the token's own header never choosing how it is verified,
hostile headers and claims, and the system checks of ``GQL_AUDIT["JWT"]``.

The JWKS side (a real key server, rotation, outages) is in test_bearer_jwks.py.
"""

from __future__ import annotations

import json
import logging
from datetime import timedelta

import pytest
from django.core import checks

from gql_audit.auth import bearer
from gql_audit.models import SecurityEvent
from tests.conftest import codes, post_graphql
from tests.oidc import AUDIENCE, ISSUER, SECRET, b64, claims, hs_token, make_key, raw_token

pytestmark = pytest.mark.django_db

QUERY = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
MUTATION = 'mutation { updateProfile(phone: "555") { profile { phone } } }'
BEARER = "gql_audit.auth.bearer_authenticator"


#: Made once: the test cases below are named from what they build with them.
KEYS = {alg: make_key(alg) for alg in ("RS256", "PS256", "ES256", "EdDSA")}


@pytest.fixture
def keys():
    return KEYS


def configure(settings, **jwt_settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": BEARER, "JWT": jwt_settings}


def change(settings, **changes):
    """Change ``GQL_AUDIT["JWT"]`` as a deployment would: a new value, seen by ``setting_changed``."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "JWT": {**settings.GQL_AUDIT["JWT"], **changes}}


@pytest.fixture
def rs256(settings, keys):
    """A service verifying RS256 tokens of one issuer for one audience."""
    key = keys["RS256"]
    configure(settings, algorithms=["RS256"], key=key.public_pem, issuer=ISSUER, audience=AUDIENCE)
    return key


def ask(client, *, token=None, header=None, query=QUERY):
    extra = {}
    if token is not None:
        extra["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    if header is not None:
        extra["HTTP_AUTHORIZATION"] = header
    response = post_graphql(client, query, **extra)
    assert response.status_code == 200, response.content
    assert b"Traceback" not in response.content
    return response.json()


def assert_denied(body, code):
    """Public fields resolved; the private one got ``code``."""
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert [d["title"] for d in body["data"]["publicDocuments"]] == ["alice public", "bob public", "carol public"]
    assert body["data"]["me"] is None
    assert codes(body) == {("me",): code}


def assert_nothing_leaked(caplog, *secrets):
    stored = json.dumps(list(SecurityEvent.objects.values()), default=str)
    for secret in secrets:
        assert secret not in stored
        assert secret not in caplog.text


# --- every key type ------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["HS256", "RS256", "PS256", "ES256", "EdDSA"])
def test_a_valid_token_authenticates(client, users, settings, keys, algorithm):
    if algorithm == "HS256":
        configure(settings, algorithms=["HS256"], key=SECRET, issuer=ISSUER, audience=AUDIENCE)
        token = hs_token(claims("alice"))
    else:
        configure(settings, algorithms=[algorithm], key=keys[algorithm].public_pem, issuer=ISSUER, audience=AUDIENCE)
        token = keys[algorithm].sign(claims("alice"))
    body = ask(client, token=token)
    assert "errors" not in body
    assert body["data"]["me"] == {"username": "alice"}


def test_mutation_runs_as_the_tokens_user(client, users, rs256):
    post_graphql(client, MUTATION, HTTP_AUTHORIZATION=f"Bearer {rs256.sign(claims('bob'))}")
    users["bob"].profile.refresh_from_db()
    assert users["bob"].profile.phone == "555"


def test_a_certificate_is_taken_as_its_public_key(client, users, settings, keys):
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = keys["RS256"]
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "staff")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.private.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key.private, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    configure(settings, algorithms=["RS256"], key=pem, issuer=ISSUER, audience=AUDIENCE)
    assert ask(client, token=key.sign(claims("alice")))["data"]["me"] == {"username": "alice"}


def test_claims_map_to_any_unique_user_field(client, users, settings, keys):
    """Keycloak's ``preferred_username`` to Django's ``username``; numbers to the primary key."""
    key = keys["ES256"]
    configure(
        settings,
        algorithms=["ES256"],
        key=key.public_pem,
        issuer=ISSUER,
        audience=AUDIENCE,
        user_claim="preferred_username",
    )
    token = key.sign(claims("f3b0c1d2-not-a-username", preferred_username="carol"))
    assert_denied(ask(client, token=token), "TOKEN_INVALID")  # carol is inactive
    token = key.sign(claims("f3b0c1d2-not-a-username", preferred_username="bob"))
    assert ask(client, token=token)["data"]["me"] == {"username": "bob"}
    configure(settings, algorithms=["ES256"], key=key.public_pem, user_claim="uid", user_field="pk", audience=AUDIENCE)
    token = key.sign(claims("x", iss=None, uid=users["alice"].pk))
    assert ask(client, token=token)["data"]["me"] == {"username": "alice"}


# --- what is refused ------------------------------------------------------------------


def refused_tokens(keys):
    """Tokens an RS256 service for ISSUER and AUDIENCE refuses, with the code the client gets."""
    rs, other = keys["RS256"], make_key("RS256", kid=keys["RS256"].kid)
    pem = rs.public_pem.encode()
    return {
        "expired": (rs.sign(claims(expires_in=timedelta(minutes=-2))), "TOKEN_EXPIRED"),
        "wrong issuer": (rs.sign(claims(iss="https://idp.example.org/realms/other")), "TOKEN_INVALID"),
        "issuer prefix": (rs.sign(claims(iss=ISSUER[:-2])), "TOKEN_INVALID"),
        "no issuer": (rs.sign(claims(iss=None)), "TOKEN_INVALID"),
        "wrong audience": (rs.sign(claims(aud="another-api")), "TOKEN_INVALID"),
        "no audience": (rs.sign(claims(aud=None)), "TOKEN_INVALID"),
        "wrong signature": (other.sign(claims()), "TOKEN_INVALID"),
        "never expires": (rs.sign(claims(exp=None)), "TOKEN_INVALID"),
        "not yet valid": (rs.sign(claims(nbf=9_999_999_999)), "TOKEN_INVALID"),
        "issued in the future": (rs.sign(claims(iat=9_999_999_999)), "TOKEN_INVALID"),
        "alg none": (raw_token({"alg": "none", "typ": "JWT"}, claims()), "TOKEN_INVALID"),
        "alg None": (raw_token({"alg": "None"}, claims()), "TOKEN_INVALID"),
        "alg missing": (raw_token({"typ": "JWT"}, claims()), "TOKEN_INVALID"),
        # Algorithm confusion: HMAC "keyed" with the service's public key, which anyone has.
        "HS256 keyed with the public key": (raw_token({"alg": "HS256"}, claims(), secret=pem), "TOKEN_INVALID"),
        "another algorithm of the same key": (keys["PS256"].sign(claims()), "TOKEN_INVALID"),
        "unknown user": (rs.sign(claims("mallory")), "TOKEN_INVALID"),
        "inactive user": (rs.sign(claims("carol")), "TOKEN_INVALID"),
        "critical header": (rs.sign(claims(), crit=["exp"]), "TOKEN_INVALID"),
    }


@pytest.mark.parametrize("case", list(refused_tokens(KEYS)))
def test_refused_tokens(client, users, rs256, keys, caplog, case):
    caplog.set_level(logging.DEBUG)
    token, code = refused_tokens(keys)[case]
    body = ask(client, token=token)
    assert_denied(body, code)
    body = ask(client, token=token, query=MUTATION)
    assert body["data"] == {"updateProfile": None}
    assert codes(body) == {("updateProfile",): code}
    users["alice"].profile.refresh_from_db()
    assert users["alice"].profile.phone == ""
    kinds = set(SecurityEvent.objects.values_list("kind", flat=True))
    assert kinds == {"token_expired" if code == "TOKEN_EXPIRED" else "token_invalid"}
    assert_nothing_leaked(caplog, token)


def test_the_reason_is_for_operators_only(client, users, rs256):
    body = ask(client, token=rs256.sign(claims(aud="another-api")))
    assert body["errors"][0]["message"] == "The authentication token is invalid."
    event = SecurityEvent.objects.get()
    assert event.details["reason"] == "InvalidAudienceError: Audience doesn't match"
    body = ask(client, token=rs256.sign(claims("mallory")))
    assert "does not exist" in SecurityEvent.objects.latest("created_at").details["reason"]


def test_leeway_allows_a_little_clock_difference(client, users, settings, rs256):
    just_expired = rs256.sign(claims(expires_in=timedelta(seconds=-10)))
    assert ask(client, token=just_expired)["data"]["me"] == {"username": "alice"}
    change(settings, leeway=0)
    assert_denied(ask(client, token=just_expired), "TOKEN_EXPIRED")
    change(settings, leeway="2m")
    assert ask(client, token=rs256.sign(claims(expires_in=timedelta(seconds=-100))))["data"]["me"]


def test_several_issuers_and_audiences(client, users, settings, rs256):
    change(settings, issuer=[ISSUER, "https://other.example.org"], audience=["a", AUDIENCE])
    assert ask(client, token=rs256.sign(claims(aud=["x", AUDIENCE])))["data"]["me"]
    assert ask(client, token=rs256.sign(claims(iss="https://other.example.org")))["data"]["me"]
    assert_denied(ask(client, token=rs256.sign(claims(aud=["x", "y"]))), "TOKEN_INVALID")


def test_no_header_and_other_schemes_are_no_credentials(client, users, rs256):
    assert_denied(ask(client), "UNAUTHENTICATED")
    assert_denied(ask(client, header="Basic YWxpY2U6c2VjcmV0"), "UNAUTHENTICATED")
    assert_denied(ask(client, header=f"JWT {rs256.sign(claims())}"), "UNAUTHENTICATED")
    assert ask(client, header=f"bearer {rs256.sign(claims())}")["data"]["me"] == {"username": "alice"}
    assert ask(client, header=f"  BEARER   {rs256.sign(claims())}  ")["data"]["me"] == {"username": "alice"}
    assert set(SecurityEvent.objects.values_list("kind", flat=True)) == {"unauthenticated"}


def test_cookies_are_not_read(client, users, rs256):
    client.cookies["JWT"] = rs256.sign(claims())
    assert_denied(ask(client), "UNAUTHENTICATED")


# --- hostile input ----------------------------------------------------------------------


def deep(levels: int) -> str:
    return "[" * levels + "]" * levels


def hostile_headers(keys):
    token = keys["RS256"].sign(claims())
    return {
        "Bearer alone": "Bearer",
        "two tokens": f"Bearer {token} {token}",
        "over 8,192 characters": "Bearer " + "a.b." + "c" * 9000,
        "a megabyte": "Bearer " + "x" * (1 << 20),
        "a megabyte of tokens": "Bearer " + " ".join([token] * 2000),
        "NUL inside": f"Bearer {token[:20]}\x00{token[20:]}",
        "NUL at the end": f"Bearer {token}\x00",
        "lone surrogate": f"Bearer {token[:20]}\ud800{token[20:]}",
        "control characters": f"Bearer {token[:20]}\x1b[2J{token[20:]}",
        "not base64": "Bearer !!!.$$$.%%%",
        "two segments": "Bearer " + ".".join(token.split(".")[:2]),
        "header nested deep": "Bearer " + b64(deep(3000).encode()) + ".e30.c2ln",
        "payload nested deep": "Bearer " + raw_token({"alg": "RS256", "kid": "k"}, deep(3000)),
        "header is a list": "Bearer " + raw_token("[1, 2]", claims()),
        "header is not JSON": "Bearer " + raw_token("{'alg': 'RS256'", claims()),
        "header is not UTF-8": "Bearer " + b64(b'{"alg": "\xff"}') + ".e30.c2ln",
        "kid of a path": "Bearer " + raw_token({"alg": "RS256", "kid": "../../../etc/passwd"}, claims()),
    }


@pytest.mark.parametrize("case", list(hostile_headers(KEYS)))
def test_hostile_authorization_headers_are_invalid_tokens(client, users, rs256, keys, caplog, case):
    caplog.set_level(logging.DEBUG)
    header = hostile_headers(keys)[case]
    assert_denied(ask(client, header=header), "TOKEN_INVALID")
    event = SecurityEvent.objects.get()
    assert event.kind == "token_invalid"
    assert len(json.dumps(event.details)) < 2000
    credential = header[len("Bearer ") :][:200]
    if len(credential) > 8:
        assert_nothing_leaked(caplog, credential)


def test_a_signed_token_with_deeply_nested_claims(client, users, rs256):
    """Signed by the provider, so past the signature: still no 500, still refused."""
    token = rs256.sign(claims(groups=json.loads(deep(500))))
    assert ask(client, token=token)["data"]["me"] == {"username": "alice"}
    token = rs256.sign({**claims(), "sub": json.loads(deep(50))})
    assert_denied(ask(client, token=token), "TOKEN_INVALID")


@pytest.mark.parametrize(
    "sub",
    ["", "alice\x00", "\ud800alice", "a" * 256, 10**30, True, 1.5, ["alice"], {"u": "alice"}, None],
    ids=["empty", "NUL", "surrogate", "too long", "huge number", "bool", "float", "list", "object", "null"],
)
def test_a_signed_token_whose_user_claim_no_column_can_hold(client, users, rs256, sub):
    """Never a database error (which would read as AUTH_UNAVAILABLE): the token names no user."""
    payload = claims()
    payload["sub"] = sub
    if sub is None:
        del payload["sub"]
    assert_denied(ask(client, token=rs256.sign(payload)), "TOKEN_INVALID")
    assert SecurityEvent.objects.get().kind == "token_invalid"


def test_a_claim_of_the_wrong_type_for_the_field(client, users, settings, rs256):
    change(settings, user_field="pk")
    assert_denied(ask(client, token=rs256.sign(claims("not-a-number"))), "TOKEN_INVALID")


# --- a setting that cannot be used ---------------------------------------------------------


def test_an_unusable_setting_is_not_a_bad_token(client, users, settings, rs256):
    """Misconfigured: tokens are not judged (AUTH_UNAVAILABLE, a db_error event),
    requests without one are anonymous as ever."""
    change(settings, algorithms=["none"])
    body = ask(client, token=rs256.sign(claims()))
    assert_denied(body, "AUTH_UNAVAILABLE")
    event = SecurityEvent.objects.get()
    assert event.kind == "db_error"
    assert "'none'" in event.details["reason"]
    assert_denied(ask(client), "UNAUTHENTICATED")


# --- system checks ---------------------------------------------------------------------------


def jwt_check_ids(settings, value, **extra):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "JWT": value, **extra}
    return sorted(m.id for m in checks.run_checks(tags=[checks.Tags.security]) if m.id.startswith("gql_audit."))


def check_cases(keys):
    rs, es = keys["RS256"].public_pem, keys["ES256"].public_pem
    return {
        "good HS": ({"algorithms": ["HS256"], "key": SECRET}, []),
        "good RS": ({"algorithms": ["RS256", "PS256"], "key": rs, "issuer": ISSUER, "audience": AUDIENCE}, []),
        "good JWKS": ({"algorithms": ["RS256", "ES256"], "jwks": "https://idp.example.org/certs"}, []),
        "not a dict": ("RS256", ["gql_audit.E050"]),
        "unknown key": ({"algorithms": ["HS256"], "key": SECRET, "algorithm": "HS256"}, ["gql_audit.E050"]),
        "no algorithms": ({"key": SECRET}, ["gql_audit.E051"]),
        "algorithms a string": ({"algorithms": "HS256", "key": SECRET}, ["gql_audit.E051"]),
        "none": ({"algorithms": ["HS256", "none"], "key": SECRET}, ["gql_audit.E051"]),
        "unknown algorithm": ({"algorithms": ["HS257"], "key": SECRET}, ["gql_audit.E051"]),
        "HS and RS mixed": ({"algorithms": ["HS256", "RS256"], "key": rs}, ["gql_audit.E051", "gql_audit.E052"]),
        "HS with a public key": ({"algorithms": ["HS256"], "key": rs}, ["gql_audit.E052"]),
        "HS with a JWKS": ({"algorithms": ["HS256"], "jwks": "https://idp.example.org/certs"}, ["gql_audit.E051"]),
        "RS with a secret": ({"algorithms": ["RS256"], "key": SECRET}, ["gql_audit.E052"]),
        "RS with an EC key": ({"algorithms": ["RS256"], "key": es}, ["gql_audit.E052"]),
        "a private key": ({"algorithms": ["RS256"], "key": keys["RS256"].private_pem}, ["gql_audit.E052"]),
        "key and JWKS": ({"algorithms": ["RS256"], "key": rs, "jwks": "https://x.example/k"}, ["gql_audit.E052"]),
        "neither": ({"algorithms": ["RS256"]}, ["gql_audit.E052"]),
        "JWKS URL with credentials": ({"algorithms": ["RS256"], "jwks": "https://u:p@x.example/k"}, ["gql_audit.E052"]),
        "JWKS file URL": ({"algorithms": ["RS256"], "jwks": "file:///etc/jwks.json"}, ["gql_audit.E052"]),
        "JWKS file missing": ({"algorithms": ["RS256"], "jwks": "/nonexistent/jwks.json"}, ["gql_audit.E052"]),
        "JWKS over HTTP": ({"algorithms": ["RS256"], "jwks": "http://idp.example.org/certs"}, ["gql_audit.W051"]),
        "JWKS over HTTP on loopback": ({"algorithms": ["RS256"], "jwks": "http://127.0.0.1:8080/certs"}, []),
        "short secret": ({"algorithms": ["HS256"], "key": "short"}, ["gql_audit.W050"]),
        "short for HS512": ({"algorithms": ["HS512"], "key": SECRET}, ["gql_audit.W050"]),
        "bad leeway": ({"algorithms": ["HS256"], "key": SECRET, "leeway": "a while"}, ["gql_audit.E050"]),
        "negative leeway": ({"algorithms": ["HS256"], "key": SECRET, "leeway": -1}, ["gql_audit.E050"]),
        "issuer not a string": ({"algorithms": ["HS256"], "key": SECRET, "issuer": 5}, ["gql_audit.E050"]),
        "empty claim name": ({"algorithms": ["HS256"], "key": SECRET, "user_claim": ""}, ["gql_audit.E050"]),
        "no such field": ({"algorithms": ["HS256"], "key": SECRET, "user_field": "uuid"}, ["gql_audit.E050"]),
        "field not unique": ({"algorithms": ["HS256"], "key": SECRET, "user_field": "email"}, ["gql_audit.W052"]),
    }


@pytest.mark.parametrize("case", list(check_cases(KEYS)))
def test_jwt_setting_checks(settings, keys, case):
    value, expected = check_cases(keys)[case]
    assert jwt_check_ids(settings, value) == expected


def test_jwt_checks_are_security_checks_and_name_the_problem(settings, keys):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "JWT": {"algorithms": ["none"], "key": SECRET}}
    (found,) = [m for m in checks.run_checks(tags=[checks.Tags.security]) if m.id.startswith("gql_audit.")]
    assert "an unsigned token proves nothing" in found.msg
    assert found.hint == "See docs/oidc.md."
    assert not [m for m in checks.run_checks(tags=[checks.Tags.compatibility]) if m.id.startswith("gql_audit.E05")]


def test_bearer_authenticator_without_a_setting(settings):
    assert jwt_check_ids(settings, None, AUTHENTICATOR=BEARER) == ["gql_audit.E053"]
    assert jwt_check_ids(settings, None, AUTHENTICATOR="gql_audit.auth.jwt_authenticator") == []


def test_settings_are_read_once_per_generation(settings, rs256):
    first = bearer.configured()
    assert bearer.configured() is first
    change(settings, leeway="5s")
    assert bearer.configured() is not first
    assert bearer.configured().leeway == 5


@pytest.mark.django_db(transaction=True)
def test_the_database_gone_at_the_user_lookup_is_not_a_bad_token(client, users, rs256):
    from tests.conftest import table_away

    with table_away("auth_user"):
        body = ask(client, token=rs256.sign(claims()))
    assert_denied(body, "AUTH_UNAVAILABLE")
    event = SecurityEvent.objects.get(kind="db_error")
    assert event.details["code"] == "AUTH_UNAVAILABLE"
    assert not SecurityEvent.objects.filter(kind="token_invalid").exists()
