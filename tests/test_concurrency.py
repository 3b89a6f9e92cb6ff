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
from gql_audit.models import RequestReads
from tests.conftest import close_async_connections, make_token, sized

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


@pytest.fixture(params=["gql_audit", "auditlog"])
def store(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param}
    return request.param


def verify(work, prefix, responses, store):
    owner_of = {request_id: user.pk for request_id, user, _, _ in work}
    assert len(responses) == REQUESTS
    for request_id, status, echoed, body in responses:
        assert status == 200, (request_id, body)
        assert echoed == request_id
        assert "errors" not in body, (request_id, body)
    entries = list(
        LogEntry.objects.filter(cid__startswith=f"{prefix}-").values_list("cid", "actor_id", "additional_data")
    )
    # Per request: the profile's UPDATE and the document's CREATE, and (auditlog
    # store) an ACCESS entry for each of the two objects the response returned.
    per_request = 4 if store == "auditlog" else 2
    assert Counter(cid for cid, _, _ in entries) == Counter({rid: per_request for rid in owner_of})
    wrong_actor = [(cid, actor) for cid, actor, _ in entries if actor != owner_of[cid]]
    wrong_cid = [cid for cid, _, data in entries if data["gql_audit"]["request_id"] != cid]
    assert wrong_actor == [] and wrong_cid == []
    if store == "gql_audit":  # one row of reads per request, naming its actor
        rows = list(
            RequestReads.objects.filter(request_id__startswith=f"{prefix}-").values_list("request_id", "actor", "keys")
        )
        assert Counter(rid for rid, _, _ in rows) == Counter({rid: 1 for rid in owner_of})
        assert [rid for rid, actor, _ in rows if actor["id"] != owner_of[rid]] == []
        assert all(len(keys) == 2 for _, _, keys in rows)
    # The data itself went to the right owner too.
    documents = dict(Document.objects.filter(title__startswith=f"{prefix}-").values_list("title", "owner_id"))
    assert documents == owner_of


def send_from_threads(url, work):
    """``work`` posted to ``url`` from 10 threads: (request id, status, echoed id, body) each."""

    def send(item):
        request_id, _, body, headers = item
        response = httpx.post(url, json=body, headers=headers, timeout=60)
        return request_id, response.status_code, response.headers.get("X-Request-ID"), response.json()

    with ThreadPoolExecutor(max_workers=10) as pool:
        return list(pool.map(send, work))


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
        limit = asyncio.Semaphore(50)
        async with httpx.AsyncClient(base_url=asgi_server, timeout=60) as client:

            async def send(item):
                request_id, _, body, headers = item
                async with limit:
                    response = await client.post("/graphql/", json=body, headers=headers)
                return request_id, response.status_code, response.headers.get("X-Request-ID"), response.json()

            return await asyncio.gather(*(send(item) for item in work))

    responses = asyncio.run(run())
    verify(work, "asgi", responses, store)
