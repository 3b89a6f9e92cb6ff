"""Request id, client address and the async middleware path."""

from __future__ import annotations

import uuid

import pytest
from auditlog.models import LogEntry
from django.test import RequestFactory

from gql_audit import context
from gql_audit.history import request_trail
from gql_audit.middleware import AuditContextMiddleware
from gql_audit.models import RequestReads
from gql_audit.net import client_address, parse_ip
from tests.conftest import codes, make_token, post_graphql

PROFILE = 'mutation { updateProfile(phone: "1") { profile { phone } } }'


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("incoming", "kept"),
    [
        ("abc-123", True),
        ("0af7651916cd43dd8448eb211c80319c", True),
        ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", True),
        ("a" * 128, True),
        ("a" * 129, False),
        ("", False),
        ("has space", False),
        ("new\nline", False),
        ('quote"inject', False),
        ("-leading-dash", False),
        ("ünïcode", False),
    ],
)
def test_request_id_kept_only_when_well_formed(client, users, incoming, kept):
    response = post_graphql(client, PROFILE, token=make_token("alice"), headers={"X-Request-ID": incoming})
    echoed = response["X-Request-ID"]
    if kept:
        assert echoed == incoming
    else:
        assert echoed != incoming
        assert uuid.UUID(echoed).version == 4
    assert set(LogEntry.objects.exclude(cid=None).values_list("cid", flat=True)) == {echoed}
    assert set(RequestReads.objects.values_list("request_id", flat=True)) == {echoed}


@pytest.mark.django_db
def test_request_id_header_is_configurable(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "REQUEST_ID_HEADER": "X-Correlation-ID"}
    response = post_graphql(client, "{ serviceStatus { ok } }", headers={"X-Correlation-ID": "corr-1"})
    assert response["X-Correlation-ID"] == "corr-1"
    assert "X-Request-ID" not in response


def test_request_id_differs_per_request(client, db):
    ids = {post_graphql(client, "{ serviceStatus { ok } }")["X-Request-ID"] for _ in range(5)}
    assert len(ids) == 5


def _request(remote_addr, forwarded=None):
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded
    return RequestFactory().get("/", **meta)


@pytest.mark.parametrize(
    ("trusted", "peer", "forwarded", "expected"),
    [
        # An untrusted peer's X-Forwarded-For is ignored: it could say anything.
        ([], "203.0.113.9", "198.51.100.1", "203.0.113.9"),
        (["10.0.0.0/8"], "203.0.113.9", "198.51.100.1", "203.0.113.9"),
        # A trusted proxy vouches for the address it appended.
        (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1", "198.51.100.1"),
        # A client-forged prefix is skipped: the right-most untrusted hop wins.
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 198.51.100.1", "198.51.100.1"),
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1, 198.51.100.1, 10.0.0.7", "198.51.100.1"),
        # All hops trusted: the left-most one is the client.
        (["10.0.0.0/8"], "10.0.0.2", "10.1.1.1, 10.0.0.7", "10.1.1.1"),
        # Garbage stops the walk at the last vouched-for address.
        (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1, not-an-ip", "10.0.0.2"),
        (["10.0.0.0/8"], "10.0.0.2", "", "10.0.0.2"),
        (["10.0.0.0/8"], "10.0.0.2", "1.1.1.1," * 400, "10.0.0.2"),
        # Ports and IPv6 forms.
        (["10.0.0.0/8"], "10.0.0.2", "198.51.100.1:4711", "198.51.100.1"),
        (["::1/128"], "::1", "[2001:db8::1]:443", "2001:db8::1"),
        (["127.0.0.1/32"], "::ffff:127.0.0.1", "198.51.100.1", "198.51.100.1"),
    ],
)
def test_client_address(settings, trusted, peer, forwarded, expected):
    settings.GQL_AUDIT = {"TRUSTED_PROXIES": trusted}
    assert client_address(_request(peer, forwarded)) == expected


def test_client_address_with_garbage_peer(settings):
    assert client_address(_request("")) is None
    assert client_address(_request("nonsense")) is None
    assert parse_ip("::ffff:10.0.0.1") == parse_ip("10.0.0.1")


@pytest.mark.django_db
def test_forged_forwarded_for_from_untrusted_peer_is_not_remote_addr(client, users, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TRUSTED_PROXIES": ["10.0.0.0/8"]}
    post_graphql(client, PROFILE, token=make_token("alice"), HTTP_X_FORWARDED_FOR="6.6.6.6")
    assert set(LogEntry.objects.exclude(cid=None).values_list("remote_addr", flat=True)) == {"127.0.0.1"}
    assert set(RequestReads.objects.values_list("remote_addr", flat=True)) == {"127.0.0.1"}
    LogEntry.objects.all().delete()
    RequestReads.objects.all().delete()
    second = PROFILE.replace('"1"', '"2"')
    post_graphql(client, second, token=make_token("alice"), HTTP_X_FORWARDED_FOR="6.6.6.6", REMOTE_ADDR="10.0.0.3")
    assert set(LogEntry.objects.exclude(cid=None).values_list("remote_addr", flat=True)) == {"6.6.6.6"}
    assert set(RequestReads.objects.values_list("remote_addr", flat=True)) == {"6.6.6.6"}
    entry = LogEntry.objects.exclude(cid=None).get(action=LogEntry.Action.UPDATE)
    assert entry.additional_data["gql_audit"]["remote_addr"] == "6.6.6.6"


def test_context_is_reset_after_the_request(client, db):
    assert context.current() is None
    post_graphql(client, "{ serviceStatus { ok } }")
    assert context.current() is None


def test_middleware_picks_sync_or_async():
    async def async_view(request):
        return None

    assert AuditContextMiddleware(lambda r: None).async_mode is False
    middleware = AuditContextMiddleware(async_view)
    assert middleware.async_mode is True
    from asgiref.sync import iscoroutinefunction

    assert iscoroutinefunction(middleware)


@pytest.mark.django_db(transaction=True)
async def test_async_client_gets_same_behaviour(async_client, settings, async_connections_closed):
    from asgiref.sync import sync_to_async
    from django.contrib.auth import get_user_model

    await sync_to_async(get_user_model().objects.create_user)("dora", "dora@example.org", "pw")
    query = "{ serviceStatus { ok } me { username } }"
    response = await async_client.post(
        "/graphql/",
        {"query": query},
        content_type="application/json",
        headers={"Authorization": f"JWT {make_token('dora')}", "X-Request-ID": "async-1"},
    )
    assert response.status_code == 200
    assert response["X-Request-ID"] == "async-1"
    assert response.json() == {"data": {"serviceStatus": {"ok": True}, "me": {"username": "dora"}}}
    response = await async_client.post(
        "/graphql/", {"query": query}, content_type="application/json", headers={"Authorization": "JWT bad"}
    )
    body = response.json()
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert codes(body) == {("me",): "TOKEN_INVALID"}
    response = await async_client.post(
        "/graphql/",
        {"query": PROFILE},
        content_type="application/json",
        headers={"Authorization": f"JWT {make_token('dora')}", "X-Request-ID": "async-2"},
    )
    assert response.json() == {"data": {"updateProfile": {"profile": {"phone": "1"}}}}
    entries = await sync_to_async(list)(
        LogEntry.objects.filter(cid="async-2").values_list("actor__username", flat=True)
    )
    assert entries and set(entries) == {"dora"}
    reads = await sync_to_async(lambda: request_trail("async-2").reads)()
    assert [read.actor["username"] for read in reads] == ["dora"]
