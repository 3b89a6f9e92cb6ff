"""The auditor's cookbook (docs/cookbook.md) answers its questions from a real trail.

Every block marked ``<!-- cookbook -->`` is run as the page shows it; the
recipes it defines are called on records made by real GraphQL requests
through the Django test client, in both access stores.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from example_service.models import Document
from gql_audit.models import SecurityEvent
from tests.conftest import ACCESS_STORES, make_token

pytestmark = pytest.mark.django_db
COOKBOOK = Path(__file__).resolve().parent.parent / "docs" / "cookbook.md"
BLOCK = re.compile(r"<!-- cookbook -->\n```python\n(.*?)```", re.DOTALL)


@pytest.fixture(autouse=True, params=ACCESS_STORES)
def store(request, settings):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": request.param,
        "SUBJECT_OBJECTS": "example_service.subjects.subject_objects",
    }
    return request.param


@pytest.fixture
def recipes():
    namespace: dict = {}
    blocks = BLOCK.findall(COOKBOOK.read_text())
    assert len(blocks) == COOKBOOK.read_text().count("<!-- cookbook -->") == 7
    for block in blocks:
        exec(compile(block, str(COOKBOOK), "exec"), namespace)  # noqa: S102 - the page's own code
    return namespace


@pytest.fixture
def trail(gql, users):
    alice, bob = make_token("alice"), make_token("bob")
    gql("query Public { publicDocuments { title } }", headers={"X-Request-ID": "anonymous"})
    gql("query Listing { documents { title body } }", token=bob, headers={"X-Request-ID": "bob-list"})
    gql(
        'mutation NewPhone { updateProfile(phone: "+1 555 0100") { profile { phone } } }',
        token=alice,
        headers={"X-Request-ID": "alice-phone"},
    )
    for password in ("guess-1", "guess-2"):
        body = gql(
            "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }",
            variables={"u": "alice", "p": password},
            headers={"X-Request-ID": f"login-{password}"},
        )
        assert body["errors"]
    return users


def test_who_read_this_object(recipes, trail):
    document = trail["alice"].documents.get(classification="public")
    rows = recipes["who_read"](document)
    assert [row[1:] for row in rows] == [
        ("bob", ["body", "title"], "127.0.0.1", "Listing"),
        ("anonymous", ["title"], "127.0.0.1", "Public"),
    ]
    assert rows[0][0] > rows[1][0]


def test_who_changed_it(recipes, trail):
    profile = trail["alice"].profile
    (latest, *older) = recipes["who_changed"](profile)
    assert latest[1:] == ("alice", "update", {"phone": ["", "+1 555 0100"]})
    assert [row[2] for row in older] == ["create"]


def test_what_did_this_user_do(recipes, trail, store):
    rows = recipes["activity_of"](trail["alice"])
    whats = sorted(row[1] for row in rows if row[3] == "alice-phone")
    # The change, and the read of the profile the mutation returned: one request row or one ACCESS entry.
    assert whats == (["read", "update"] if store == "gql_audit" else ["access", "update"])
    assert not any(row[3] == "bob-list" for row in rows)
    bob_rows = recipes["activity_of"](trail["bob"])
    assert {row[3] for row in bob_rows} == {"bob-list"}


def test_everything_one_request_did(recipes, trail):
    done = recipes["what_request_did"]("alice-phone")
    profile = trail["alice"].profile
    assert done["reads"] == [("example_service.Profile", str(profile.pk), ["phone"])]
    assert done["changes"] == [("update", str(profile))]
    assert done["events"] == []
    failed = recipes["what_request_did"]("login-guess-1")
    assert [event[0] for event in failed["events"]] == ["login_failed"]


def test_failed_logins_today(recipes, trail):
    usernames, addresses = recipes["failed_logins_today"]()
    assert usernames == Counter({"alice": 2}) and addresses == Counter({"127.0.0.1": 2})
    SecurityEvent.objects.filter(kind="login_failed").update(created_at="2020-01-01T00:00:00Z")
    assert recipes["failed_logins_today"]() == (Counter(), Counter())


def test_everything_about_one_person(recipes, trail):
    rows = recipes["report_for"]("alice")
    profile = trail["alice"].profile
    assert (("update", f"example_service.Profile:{profile.pk}", "alice", ["phone"])) in [row[1:] for row in rows]
    assert {row[3] for row in rows if row[1] == "read"} == {"alice", "bob", None}


def test_reads_of_many_objects_at_once(recipes, trail):
    documents = list(Document.objects.filter(owner=trail["alice"]))
    # alice's public document was read by bob and by an anonymous client; her confidential one by nobody else.
    assert recipes["readers_of"](documents) == Counter({"bob": 1, "anonymous": 1})
