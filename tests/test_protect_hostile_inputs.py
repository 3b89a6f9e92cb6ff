"""Hostile shapes of every parameter admission reads, every protection on: a clear answer,
never a 500, and each request on record."""

from __future__ import annotations

import json

import pytest
from django.conf import settings
from django.test import override_settings

from gql_audit.models import SecurityEvent
from tests.test_protect_attacks import ALL_ON, LOGIN

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_cache")]

DEEP = "[" * 5000 + "]" * 5000
HOSTILE_BODIES = [
    {"query": LOGIN, "operationName": ["Login"], "variables": {"u": "alice", "p": "x"}},
    {"query": LOGIN, "operationName": {"a": 1}, "variables": {"u": "alice", "p": "x"}},
    {"query": LOGIN, "operationName": "\ud800\x00", "variables": {"u": "alice", "p": "x"}},
    {"query": LOGIN, "variables": "{not json"},
    {"query": LOGIN, "variables": DEEP},
    {"query": LOGIN, "variables": {"u": {"nested": [[["alice"]]]}, "p": None}},
    {"query": ["not", "a", "string"]},
    {"query": 12345},
    {"query": None, "extensions": {"persistedQuery": {"sha256Hash": ["x"] * 1000}}},
    {
        "query": "query Q($first: Int = 3) { documentsConnection(first: $first) { edges { node { title } } } }",
        "variables": {"first": [[[[1]]]]},
    },
    {
        "query": "query Q($first: Int) { documentsConnection(first: $first) { edges { node { title } } } }",
        "variables": {"first": 10**30},
    },
    {"query": "{ serviceStatus { ok } }\x00"},
    {"query": "{ serviceStatus " + "{ ok " * 3000 + "}" * 3001},
    {"query": "\ud800{ serviceStatus { ok } }"},
]


@pytest.mark.parametrize("body", HOSTILE_BODIES, ids=range(len(HOSTILE_BODIES)))
def test_hostile_parameters_get_a_clear_answer(client, users, body):
    with override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **ALL_ON}):
        response = client.post(
            "/graphql/", json.dumps(body), content_type="application/json", headers={"X-Request-ID": "hostile-param"}
        )
        batch = client.post("/graphql-batch/", json.dumps([body, body]), content_type="application/json")
        upload = client.post("/graphql-upload/", {"operations": json.dumps(body), "map": "{}"})
    for answer in (response, batch, upload):
        assert answer.status_code in (200, 400, 405, 413, 429), answer.content[:300]
        assert b"Traceback" not in answer.content


@pytest.mark.parametrize(
    "operations",
    ["{not json", DEEP, "[]", "[1, 2]", json.dumps([[{"query": "{ serviceStatus { ok } }"}]]), '"a string"'],
)
@pytest.mark.parametrize("protections", [ALL_ON, {}], ids=["protections on", "protections off"])
def test_hostile_multipart_operations_get_a_clear_answer(client, users, operations, protections):
    with override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **protections}):
        response = client.post(
            "/graphql-upload/", {"operations": operations, "map": "{}"}, headers={"X-Request-ID": "upload-shape"}
        )
    assert response.status_code in (200, 400), response.content[:300]
    assert b"Traceback" not in response.content
    if response.status_code == 400:
        assert SecurityEvent.objects.filter(request_id="upload-shape", kind="graphql_error").exists()


def test_a_query_string_that_cannot_be_read_is_a_400_on_record(client, users):
    fields = "&".join(f"f{i}=x" for i in range(1200))
    with override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **ALL_ON}):
        response = client.post(
            f"/graphql/?{fields}", json.dumps({"query": "{ serviceStatus { ok } }"}), content_type="application/json"
        )
    assert response.status_code == 400 and b"Traceback" not in response.content
    assert SecurityEvent.objects.filter(kind="graphql_error").exists()
