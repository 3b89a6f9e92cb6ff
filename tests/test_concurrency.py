"""Interleaved requests from many users never mix up actors or request ids.

Both through real HTTP servers on loopback: Django's threaded WSGI live server,
and uvicorn serving the ASGI application (async middleware path, contextvars
per asyncio task).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from auditlog.models import LogEntry
from django.contrib.auth import get_user_model

from example_service.models import Document, Profile
from gql_audit.models import RequestReads, SecurityEvent
from tests.conftest import ACCESS_STORES, close_async_connections, make_token, sized

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

USERS = 10
REQUESTS = sized(500, 40)
MUTATION = (
    "mutation Work($phone: String!, $title: String!) {"
    " updateProfile(phone: $phone) { profile { phone } }"
    " createDocument(title: $title) { document { id } } }"
)


@pytest.fixture
def team():
    User = get_user_model()
    people = []
    for i in range(USERS):
        user = User.objects.create_user(f"user{i}", f"user{i}@example.org", "pw")
        Profile.objects.create(user=user, full_name=f"User {i}")
        people.append(user)
    return people


def plan(team, prefix):
    """``REQUESTS`` requests, users interleaved: (request id, user, json body, headers)."""
    tokens = {u.pk: make_token(u.username) for u in team}
    work = []
    for n in range(REQUESTS):
        user = team[(n * 7) % USERS]
        request_id = f"{prefix}-{n}"
        body = {"query": MUTATION, "variables": {"phone": request_id, "title": request_id}}
        headers = {"Authorization": f"JWT {tokens[user.pk]}", "X-Request-ID": request_id}
        work.append((request_id, user, body, headers))
    return work


@pytest.fixture(params=ACCESS_STORES)
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


def serializable():
    """Whether the tests' database connections run at SERIALIZABLE (CockroachDB's default)."""
    from django.db import connection
    from psycopg import IsolationLevel

    connection.ensure_connection()
    return getattr(connection, "isolation_level", None) == IsolationLevel.SERIALIZABLE


def refused_by_the_database(responses, owner_of):
    """The requests whose mutation the database refused with a serialization failure.

    At SERIALIZABLE a mutation's transaction can be refused (SQLSTATE 40001) without the
    service doing anything wrong: PostgreSQL's serializable isolation also refuses
    transactions of different users that touched the same index pages. Such a request
    must be reported as such, under its own actor: INTERNAL_ERROR to the client, a
    db_error event with SQLSTATE 40001. At READ COMMITTED none may be refused.
    """
    refused = {rid for rid, _, _, body in responses if "errors" in body}
    if not refused:
        return refused
    assert serializable(), sorted(refused)[:3]
    for request_id, _, _, body in responses:
        if request_id in refused:
            assert {error["extensions"]["code"] for error in body["errors"]} == {"INTERNAL_ERROR"}, body
    events = list(
        SecurityEvent.objects.filter(request_id__in=refused, kind="db_error").values_list(
            "request_id", "sqlstate", "actor_id"
        )
    )
    assert {rid for rid, _, _ in events} == refused
    assert all(sqlstate == "40001" and actor == owner_of[rid] for rid, sqlstate, actor in events), events
    return refused


def verify(work, prefix, responses, store):
    owner_of = {request_id: user.pk for request_id, user, _, _ in work}
    assert len(responses) == REQUESTS
    for request_id, status, echoed, body in responses:
        # At SERIALIZABLE a mutation's COMMIT may be refused: graphene-django answers it with 400.
        assert status == 200 or (status == 400 and "errors" in body and serializable()), (request_id, body)
        assert echoed == request_id
    refused = refused_by_the_database(responses, owner_of)
    entries = list(
        LogEntry.objects.filter(cid__startswith=f"{prefix}-").values_list(
            "cid", "actor_id", "additional_data", "action"
        )
    )
    # Per request: the profile's UPDATE and the document's CREATE, and (auditlog
    # store) an ACCESS entry for each of the two objects the response returned. A
    # refused request's changes were rolled back; its reads were written after it.
    per_request = 4 if store == "auditlog" else 2
    done = Counter(cid for cid, _, _, _ in entries if cid not in refused)
    assert done == Counter({rid: per_request for rid in owner_of if rid not in refused})
    assert all(action == LogEntry.Action.ACCESS for cid, _, _, action in entries if cid in refused)
    wrong_actor = [(cid, actor) for cid, actor, _, _ in entries if actor != owner_of[cid]]
    wrong_cid = [cid for cid, _, data, _ in entries if data["gql_audit"]["request_id"] != cid]
    assert wrong_actor == [] and wrong_cid == []
    if store == "gql_audit":  # one row of reads per request, naming its actor
        rows = list(
            RequestReads.objects.filter(request_id__startswith=f"{prefix}-").values_list("request_id", "actor", "keys")
        )
        assert Counter(rid for rid, _, _ in rows if rid not in refused) == Counter(
            {rid: 1 for rid in owner_of if rid not in refused}
        )
        assert [rid for rid, actor, _ in rows if actor["id"] != owner_of[rid]] == []
        assert all(len(keys) == 2 for rid, _, keys in rows if rid not in refused)
    # The data itself went to the right owner too.
    documents = dict(Document.objects.filter(title__startswith=f"{prefix}-").values_list("title", "owner_id"))
    assert documents == {rid: owner for rid, owner in owner_of.items() if rid not in refused}


def by_user(work):
    """``work`` as one list per user, in order. Each user's requests go one after another, as
    one client's would: two requests of one user updating the same profile at once conflict
    at SERIALIZABLE (CockroachDB's default isolation) in any service, which is not what
    these tests look at; the users' requests still interleave."""
    lists = {}
    for item in work:
        lists.setdefault(item[1].pk, []).append(item)
    return list(lists.values())


def outcome(request_id, response):
    """(request id, status, echoed id, body) of one response."""
    return request_id, response.status_code, response.headers.get("X-Request-ID"), response.json()


def send_from_threads(url, work):
    """``work`` posted to ``url`` from one thread per user: (request id, status, echoed id, body) each."""

    def send_all(items):
        done = []
        for request_id, _, body, headers in items:
            done.append(outcome(request_id, httpx.post(url, json=body, headers=headers, timeout=60)))
        return done

    streams = by_user(work)
    with ThreadPoolExecutor(max_workers=len(streams)) as pool:
        return [response for done in pool.map(send_all, streams) for response in done]


def test_threads_through_a_wsgi_server(live_server, team, store):
    work = plan(team, "wsgi")
    verify(work, "wsgi", send_from_threads(f"{live_server.url}/graphql/", work), store)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def asgi_server():
    import uvicorn
    from django.core.asgi import get_asgi_application

    port = _free_port()
    config = uvicorn.Config(get_asgi_application(), host="127.0.0.1", port=port, lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            pytest.fail("uvicorn did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=20)
    close_async_connections()


def test_asyncio_tasks_through_an_asgi_server(asgi_server, team, store):
    work = plan(team, "asgi")

    async def run():
        async with httpx.AsyncClient(base_url=asgi_server, timeout=60) as client:

            async def send_all(items):
                done = []
                for request_id, _, body, headers in items:
                    done.append(outcome(request_id, await client.post("/graphql/", json=body, headers=headers)))
                return done

            return await asyncio.gather(*(send_all(items) for items in by_user(work)))

    responses = [response for done in asyncio.run(run()) for response in done]
    verify(work, "asgi", responses, store)
