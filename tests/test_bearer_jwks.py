"""``bearer_authenticator`` with a JWKS from a real HTTP server on 127.0.0.1.

The server (tests/oidc.py) counts its hits: the key set is fetched once for a
burst of requests, again for a key it does not hold (rotation) at most once per
interval, never once per request, and a server that is down, hangs, trickles or
answers garbage costs a bounded wait and gives AUTH_UNAVAILABLE on private
fields, never a bad-token answer, while public fields resolve.
"""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from gql_audit.auth import jwks
from gql_audit.auth.base import AuthUnavailable
from gql_audit.auth.jwks import KeySet
from gql_audit.models import SecurityEvent
from tests.conftest import codes, post_graphql
from tests.oidc import AUDIENCE, ISSUER, JWKSServer, claims, make_key

QUERY = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
MUTATION = 'mutation { updateProfile(phone: "555") { profile { phone } } }'
#: The timeout the tests use, so that a hanging server costs half a second.
TIMEOUT = 0.5

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def old_key():
    return make_key("RS256", kid="2026-11")


@pytest.fixture(scope="module")
def new_key():
    return make_key("ES256", kid="2026-12")


@pytest.fixture
def server(old_key):
    found = JWKSServer(keys=[old_key.jwk()])
    yield found
    found.stop()


@pytest.fixture
def service(settings, server, monkeypatch):
    """A service trusting the server's keys for RS256 and ES256 tokens."""
    monkeypatch.setattr(jwks, "TIMEOUT", TIMEOUT)
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["RS256", "ES256"], "jwks": server.url, "issuer": ISSUER, "audience": AUDIENCE},
    }
    return server


def ask(client, token=None, query=QUERY):
    extra = {"HTTP_AUTHORIZATION": f"Bearer {token}"} if token else {}
    response = post_graphql(client, query, **extra)
    assert response.status_code == 200, response.content
    assert b"Traceback" not in response.content
    return response.json()


def me(body):
    return (body["data"] or {}).get("me")


def assert_public_fields_resolved(body):
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert [d["title"] for d in body["data"]["publicDocuments"]] == ["alice public", "bob public", "carol public"]


def assert_unavailable(body):
    assert_public_fields_resolved(body)
    assert body["data"]["me"] is None
    assert codes(body) == {("me",): "AUTH_UNAVAILABLE"}


def stored_and_logged(caplog) -> str:
    return json.dumps(list(SecurityEvent.objects.values()), default=str) + caplog.text


# --- the acceptance cases ------------------------------------------------------------------


@pytest.mark.django_db
def test_valid_token_and_one_fetch_for_a_burst(client, users, service, old_key, caplog):
    caplog.set_level(logging.DEBUG)
    tokens = [old_key.sign(claims(name)) for name in ("alice", "bob") * 15]
    for token, name in zip(tokens, ("alice", "bob") * 15, strict=True):
        assert me(ask(client, token)) == {"username": name}
    assert service.hits == 1
    assert service.paths == ["/jwks.json"]
    text = stored_and_logged(caplog)
    assert not any(token in text for token in tokens)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("case", "code"),
    [
        ("expired", "TOKEN_EXPIRED"),
        ("wrong issuer", "TOKEN_INVALID"),
        ("wrong audience", "TOKEN_INVALID"),
        ("wrong signature", "TOKEN_INVALID"),
        ("another key's kid", "TOKEN_INVALID"),
        ("algorithm not allowed", "TOKEN_INVALID"),
    ],
)
def test_refused_tokens(client, users, service, old_key, new_key, case, code, caplog):
    caplog.set_level(logging.DEBUG)
    from datetime import timedelta

    impostor = make_key("RS256", kid=old_key.kid)
    token = {
        "expired": lambda: old_key.sign(claims(expires_in=timedelta(minutes=-5))),
        "wrong issuer": lambda: old_key.sign(claims(iss="https://idp.example.org/realms/other")),
        "wrong audience": lambda: old_key.sign(claims(aud="billing-api")),
        "wrong signature": lambda: impostor.sign(claims()),
        # The kid of the server's RSA key, on an ES256 token: the key is not built for ES256.
        "another key's kid": lambda: new_key.sign(claims(), kid=old_key.kid),
        "algorithm not allowed": lambda: make_key("PS256", kid=old_key.kid).sign(claims()),
    }[case]()
    body = ask(client, token)
    assert_public_fields_resolved(body)
    assert codes(body) == {("me",): code}
    assert codes(ask(client, token, MUTATION)) == {("updateProfile",): code}
    # One fetch, kept; none for an algorithm refused before any key is looked up.
    assert service.hits == (0 if case == "algorithm not allowed" else 1)
    assert token not in stored_and_logged(caplog)


@pytest.mark.django_db
def test_key_rotation_refetches_once_then_accepts(client, users, service, old_key, new_key):
    assert me(ask(client, old_key.sign(claims()))) == {"username": "alice"}
    assert service.hits == 1
    # The provider rotates: it publishes the new key and retires the old one.
    service.keys = [new_key.jwk()]
    fresh = new_key.sign(claims("bob"))
    assert me(ask(client, fresh)) == {"username": "bob"}
    assert service.hits == 2
    for _ in range(5):
        assert me(ask(client, fresh)) == {"username": "bob"}
    assert service.hits == 2
    # The retired key's tokens: its kid is gone from the set just read, and a
    # refetch for it waits its interval.
    body = ask(client, old_key.sign(claims()))
    assert codes(body) == {("me",): "TOKEN_INVALID"}
    assert service.hits == 2
    reason = SecurityEvent.objects.get(kind="token_invalid").details["reason"]
    assert reason == f"InvalidTokenError: no key '2026-11' in the JWKS at {service.url}"


@pytest.mark.django_db
def test_unknown_kids_cannot_make_it_fetch_per_request(client, users, service, old_key):
    assert me(ask(client, old_key.sign(claims()))) == {"username": "alice"}
    for n in range(20):
        body = ask(client, make_key("ES256", kid=f"made-up-{n}").sign(claims()))
        assert codes(body) == {("me",): "TOKEN_INVALID"}
    assert service.hits == 2  # the first read, then one refetch for an unknown kid


@pytest.mark.django_db
def test_server_down_is_auth_unavailable_not_a_bad_token(client, users, service, old_key, caplog):
    caplog.set_level(logging.DEBUG)
    url = service.url
    service.stop()
    token = old_key.sign(claims())
    started = time.monotonic()
    body = ask(client, token)
    assert time.monotonic() - started < 5
    assert_unavailable(body)
    assert codes(ask(client, token, MUTATION)) == {("updateProfile",): "AUTH_UNAVAILABLE"}
    users["alice"].profile.refresh_from_db()
    assert users["alice"].profile.phone == ""
    # Requests without a token are anonymous as ever; those with one are not judged.
    assert codes(ask(client)) == {("me",): "UNAUTHENTICATED"}
    events = list(SecurityEvent.objects.filter(kind="db_error"))
    assert len(events) == 2
    assert events[0].severity == "error"
    assert events[0].details["code"] == "AUTH_UNAVAILABLE"
    assert events[0].details["reason"].startswith(f"AuthUnavailable: the JWKS at {url} could not be read: ")
    assert "ConnectionRefusedError" in events[0].details["reason"]
    assert not SecurityEvent.objects.filter(kind__in=["token_invalid", "token_expired"]).exists()
    assert token not in stored_and_logged(caplog)
    assert "could not be read" in caplog.text  # the operator's log says so too


@pytest.mark.django_db
def test_server_down_after_a_fetch_keeps_the_keys_it_gave(client, users, service, old_key):
    assert me(ask(client, old_key.sign(claims()))) == {"username": "alice"}
    service.stop()
    for _ in range(5):
        assert me(ask(client, old_key.sign(claims()))) == {"username": "alice"}
    # A key the set read lacks may be new: the server cannot be asked, so it is not judged.
    assert codes(ask(client, make_key("ES256", kid="2027-01").sign(claims()))) == {("me",): "AUTH_UNAVAILABLE"}


@pytest.mark.django_db
def test_a_jwks_file(client, users, settings, tmp_path, old_key, new_key):
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [old_key.jwk()]}))
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["RS256", "ES256"], "jwks": str(path), "issuer": ISSUER, "audience": AUDIENCE},
    }
    assert me(ask(client, old_key.sign(claims()))) == {"username": "alice"}
    path.write_text(json.dumps({"keys": [old_key.jwk(), new_key.jwk()]}))
    assert me(ask(client, new_key.sign(claims("bob")))) == {"username": "bob"}
    path.unlink()
    assert me(ask(client, new_key.sign(claims("bob")))) == {"username": "bob"}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "JWT": {**settings.GQL_AUDIT["JWT"], "jwks": str(tmp_path / "no")}}
    assert_unavailable(ask(client, new_key.sign(claims("bob"))))
    assert "FileNotFoundError" in SecurityEvent.objects.get(kind="db_error").details["reason"]


# --- a misbehaving server ------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("hang", "no complete answer within 0.5 s"),
        ("trickle", "no complete answer within 0.5 s"),
        ("trickle_headers", "no complete answer within 0.5 s"),
        ("garbage", "the answer is not JSON"),
        ("nested", "the answer is not JSON"),
        ("huge", "the answer is larger than 256 KiB"),
        ("redirect", "the server answered HTTP 302 (redirects are not followed"),
        ("unavailable", "the server answered HTTP 503"),
    ],
)
def test_a_misbehaving_server_costs_a_bounded_wait(client, users, service, old_key, mode, reason):
    service.mode = mode
    token = old_key.sign(claims())
    started = time.monotonic()
    body = ask(client, token)
    elapsed = time.monotonic() - started
    assert_unavailable(body)
    assert elapsed < TIMEOUT + 2.5, elapsed
    assert reason in SecurityEvent.objects.get(kind="db_error").details["reason"]
    # The next requests do not try again at once: no wait, no hit.
    started = time.monotonic()
    assert_unavailable(ask(client, token))
    assert time.monotonic() - started < TIMEOUT
    assert service.hits == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    "keys",
    [
        [],
        [{"kty": "oct", "k": "c2VjcmV0", "kid": "shared", "alg": "HS256"}],
        [{"kty": "RSA", "kid": "no-numbers"}],
        [{"kty": "RSA", "n": 5, "e": [], "kid": "wrong-types"}],
        ["not an object", 5, None],
    ],
    ids=["empty", "a shared secret", "no key material", "wrong types", "not objects"],
)
def test_a_key_set_without_a_usable_key(client, users, service, old_key, keys):
    service.keys = keys
    assert_unavailable(ask(client, old_key.sign(claims())))
    assert "holds no public signing key" in SecurityEvent.objects.get(kind="db_error").details["reason"]


@pytest.mark.django_db
def test_private_keys_and_keys_for_encryption_are_not_used(client, users, service, old_key):
    service.keys = [
        {**old_key.jwk(use="enc")},
        {**old_key.jwk(), "d": "AQAB"},
        {**old_key.jwk(key_ops=["encrypt"])},
    ]
    assert_unavailable(ask(client, old_key.sign(claims())))
    service.keys.append(old_key.jwk(kid="other"))
    assert_unavailable(ask(client, old_key.sign(claims())))  # still in the retry interval: not asked


@pytest.mark.django_db
@pytest.mark.parametrize(
    "kid",
    [
        "../../../../etc/passwd",
        "http://169.254.169.254/latest/meta-data/",
        "%2e%2e%2fjwks.json?x=1#y",
        "k\x00id",
        "\ud800",
        "x" * 5000,
        "",
    ],
    ids=["path", "URL", "escaped", "NUL", "surrogate", "long", "empty"],
)
def test_kids_are_only_looked_up(client, users, service, old_key, kid, caplog):
    """A kid never reaches a URL, a path or a log line: the server is asked for its one path."""
    caplog.set_level(logging.DEBUG)
    token = make_key("RS256", kid="tmp").sign(claims(), kid=kid)
    body = ask(client, token)
    assert codes(body) == {("me",): "TOKEN_INVALID"}
    assert set(service.paths) <= {"/jwks.json"}
    reason = SecurityEvent.objects.get(kind="token_invalid").details["reason"]
    assert len(reason) < 300
    assert "\x00" not in reason and "\ud800" not in reason
    assert kid[:100] not in caplog.text or not kid


# --- the key set on its own, with a clock of the test's --------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


def test_concurrent_first_requests_wait_for_one_fetch(server, old_key):
    server.mode, server.delay = "slow", 0.3
    key_set = KeySet(server.url, timeout=TIMEOUT)
    found, failed = [], []

    def lookup(kid):
        try:
            found.append(key_set.key(kid, "RS256"))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion below
            failed.append(exc)

    threads = [threading.Thread(target=lookup, args=(old_key.kid,)) for _ in range(16)]
    threads += [threading.Thread(target=lookup, args=("unknown",)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert len(found) == 16 and all(f.key_id == old_key.kid for f in found)
    assert len(failed) == 4
    # One fetch for the burst; at most one more, for the unknown kid, whatever the timing.
    assert server.hits in (1, 2)


def test_lifetime_follows_cache_control(server, old_key, clock):
    for cache_control, lifetime in [
        (None, 300),
        ("max-age=120", 120),
        ("public, max-age=15, stale-if-error=86400", 60),
        ("no-cache, must-revalidate, no-transform, no-store", 60),
        ("max-age=99999999", 86400),
    ]:
        server.cache_control, server.hits = cache_control, 0
        key_set = KeySet(server.url, clock=clock)
        key_set.key(old_key.kid, "RS256")
        clock.now += lifetime - 1
        key_set.key(old_key.kid, "RS256")
        assert server.hits == 1, cache_control
        clock.now += 2
        key_set.key(old_key.kid, "RS256")
        assert server.hits == 2, cache_control


def test_stale_keys_while_the_server_is_down_then_unavailable(server, old_key, clock):
    key_set = KeySet(server.url, timeout=TIMEOUT, clock=clock)
    key_set.key(old_key.kid, "RS256")
    server.mode = "unavailable"
    clock.now += 301
    assert key_set.key(old_key.kid, "RS256").key_id == old_key.kid  # stale, while it fails
    assert server.hits == 2
    clock.now += 5
    key_set.key(old_key.kid, "RS256")
    assert server.hits == 2  # within the retry interval: not asked
    with pytest.raises(AuthUnavailable):
        key_set.key("unknown", "RS256")
    clock.now += jwks.STALE_IF_ERROR
    with pytest.raises(AuthUnavailable, match="HTTP 503"):
        key_set.key(old_key.kid, "RS256")
    server.mode = "ok"
    clock.now += jwks.RETRY_INTERVAL
    assert key_set.key(old_key.kid, "RS256").key_id == old_key.kid
    assert server.hits == 4


def test_retries_after_its_interval_only(server, old_key, clock):
    server.mode = "unavailable"
    key_set = KeySet(server.url, timeout=TIMEOUT, clock=clock)
    for _ in range(10):
        with pytest.raises(AuthUnavailable):
            key_set.key(old_key.kid, "RS256")
        clock.now += 0.5
    assert server.hits == 1
    server.mode = "ok"
    clock.now += jwks.RETRY_INTERVAL
    assert key_set.key(old_key.kid, "RS256").key_id == old_key.kid
    assert server.hits == 2


def test_a_refetch_for_an_unknown_kid_at_most_once_per_interval(server, old_key, new_key, clock):
    key_set = KeySet(server.url, clock=clock)
    key_set.key(old_key.kid, "RS256")
    for _ in range(3):
        with pytest.raises(Exception, match="no key 'next'"):
            key_set.key("next", "ES256")
    assert server.hits == 2
    server.keys = [old_key.jwk(), new_key.jwk(kid="next")]
    clock.now += jwks.REFETCH_INTERVAL - 1
    with pytest.raises(Exception, match="no key 'next'"):
        key_set.key("next", "ES256")
    clock.now += 1
    assert key_set.key("next", "ES256").key_id == "next"
    assert server.hits == 3


def test_a_key_without_alg_is_built_for_the_tokens_algorithm_of_its_type(server, old_key):
    jwk = old_key.jwk()
    del jwk["alg"]
    server.keys = [jwk]
    key_set = KeySet(server.url)
    assert key_set.key(old_key.kid, "PS256").algorithm_name == "PS256"
    assert key_set.key(old_key.kid, "RS256").algorithm_name == "RS256"
    with pytest.raises(Exception, match="not a key for ES256"):
        key_set.key(old_key.kid, "ES256")


def test_the_url_is_described_without_credentials_or_query():
    assert jwks.describe("https://u:secret@idp.example.org:8443/certs?token=abc#x") == (
        "https://idp.example.org:8443/certs"
    )
    assert jwks.describe("/etc/gql_audit/jwks.json") == "/etc/gql_audit/jwks.json"


# --- under ASGI --------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
async def test_under_asgi(async_client, settings, server, old_key, monkeypatch, async_connections_closed):
    """The key set is read in the middleware's sync step: the same answers, the same one fetch."""
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    monkeypatch.setattr(jwks, "TIMEOUT", TIMEOUT)
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["RS256"], "jwks": server.url, "issuer": ISSUER, "audience": AUDIENCE},
    }
    await sync_to_async(get_user_model().objects.create_user)("dora")

    async def ask_async(token):
        response = await async_client.post(
            "/graphql/",
            {"query": "{ serviceStatus { ok } me { username } }"},
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        return response.json()

    for _ in range(3):
        assert await ask_async(old_key.sign(claims("dora"))) == {
            "data": {"serviceStatus": {"ok": True}, "me": {"username": "dora"}}
        }
    assert server.hits == 1
    server.stop()
    # A kid it lacks: the server cannot be asked, so the token is not judged.
    body = await ask_async(make_key("RS256", kid="2027-01").sign(claims("dora")))
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "AUTH_UNAVAILABLE"}
    # The keys it read are still good.
    assert (await ask_async(old_key.sign(claims("dora"))))["data"]["me"] == {"username": "dora"}
