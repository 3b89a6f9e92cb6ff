"""The ways around the protections an attacker found, each refused and recorded.

Each test here failed before the protections were given one home in
``gql_audit.protect`` (admission of the request as received, every operation
counted); the security events are read through ``SecurityEvent``, whichever
``ACCESS_STORE`` the settings choose.
"""

from __future__ import annotations

import json
from unittest import mock

import pytest
from django.conf import settings
from django.test import Client, override_settings

from gql_audit.models import SecurityEvent
from gql_audit.protect.document import analyse, document_hash
from tests.conftest import make_token, post_graphql, stored_text

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_cache")]

LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"
WIDE = "{ serviceStatus { " + " ".join(f"a{i}: ok" for i in range(50)) + " } }"


def configured(**values):
    return override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **values})


def throttled(response):
    assert response.status_code == 429, response.content
    assert response.json()["errors"][0]["extensions"] == {"code": "THROTTLED", "rule": "THROTTLE"}


def events(kind, **filters):
    return list(SecurityEvent.objects.filter(kind=kind, **filters).order_by("created_at"))


# --- the login throttle ------------------------------------------------------------------


def test_an_operation_named_null_is_still_a_login(client, users, password_checks):
    # graphene-django runs the only operation when operationName is "null".
    body = {"query": LOGIN, "variables": {"u": "alice", "p": "wrong"}, "operationName": "null"}
    with configured(THROTTLE={"login": "3/300s"}):
        for _ in range(3):
            response = client.post("/graphql/", json.dumps(body), content_type="application/json")
            assert response.json()["errors"][0]["message"] == "Please enter valid credentials"
        right = {**body, "variables": {"u": "alice", "p": "alice-password"}}
        throttled(client.post("/graphql/", json.dumps(right), content_type="application/json"))
    assert len(password_checks) == 3
    (event,) = events("throttled")
    assert event.details["limit"] == "login" and event.details["username"] == "alice"


def test_logins_behind_a_thousand_aliases_all_count(client, users, password_checks):
    typenames = " ".join(f"t{i}: __typename" for i in range(1000))
    logins = " ".join(f'l{i}: tokenAuth(username: "alice", password: "guess{i}") {{ token }}' for i in range(6))
    with configured(THROTTLE={"login": "5/300s"}):
        throttled(post_graphql(client, "mutation { " + typenames + " " + logins + " }"))
    assert password_checks == []
    (event,) = events("throttled")
    assert event.details["attempts"] == 6 and event.details["username"] == "alice"


def test_a_login_in_an_operation_that_does_not_run_still_counts(client, users, password_checks):
    # The request names the query; the mutation beside it is counted all the same.
    document = 'query Q { serviceStatus { ok } } mutation M { tokenAuth(username: "alice", password: "x") { token } }'
    with configured(THROTTLE={"login": "1/300s"}):
        for _ in range(2):
            client.post(
                "/graphql/",
                json.dumps({"query": document, "operationName": "Q"}),
                content_type="application/json",
            )
    assert events("throttled")[0].details["username"] == "alice"


def test_a_username_from_a_variable_default_is_counted_as_that_username(client, users, password_checks):
    query = 'mutation Login($u: String = "alice") { tokenAuth(username: $u, password: "wrong") { token } }'
    with configured(THROTTLE={"login": "1/300s"}):
        post_graphql(client, query)
        throttled(post_graphql(client, query))
    (event,) = events("throttled")
    assert event.details["username"] == "alice"


def login(client, username, password="wrong", address="127.0.0.1"):
    return post_graphql(client, LOGIN, variables={"u": username, "p": password}, REMOTE_ADDR=address)


def test_another_address_is_not_locked_out_at_the_login_rate(client, users, password_checks):
    with configured(THROTTLE={"login": "3/300s"}):
        for _ in range(3):
            login(client, "alice", address="10.66.0.1")
        throttled(login(client, "alice", "alice-password", address="10.66.0.1"))
        # Alice herself, from her own address, still logs in.
        assert login(client, "alice", "alice-password", address="10.1.1.1").json()["data"]["tokenAuth"]["token"]


def test_login_username_locks_the_account_across_addresses(client, users, password_checks):
    with configured(THROTTLE={"login": "10/300s", "login_username": "3/300s"}):
        for n in range(3):
            login(client, "alice", address=f"10.66.0.{n + 1}")
        throttled(login(client, "alice", "alice-password", address="10.1.1.1"))
    event = events("throttled")[-1]
    assert (event.details["limit"], event.details["scope"]) == ("login_username", "username")


def test_ipv6_clients_are_counted_per_64(client, users, password_checks):
    with configured(THROTTLE={"login_address": "3/300s"}):
        for n in range(3):
            login(client, f"user{n}", address=f"2001:db8:1:2::{n + 1:x}")
        throttled(login(client, "bob", "bob-password", address="2001:db8:1:2:ffff:ffff:ffff:fffe"))
        # Another /64 is another client.
        assert login(client, "bob", "bob-password", address="2001:db8:1:3::1").json()["data"]["tokenAuth"]["token"]


def test_operations_are_counted_per_actor_and_per_address(client, users):
    token = make_token("alice")
    with configured(THROTTLE={"operations": "3/60s"}):
        for _ in range(3):
            assert post_graphql(client, "{ me { username } }", token=token, REMOTE_ADDR="10.5.5.5").status_code == 200
        throttled(post_graphql(client, "{ me { username } }", token=token, REMOTE_ADDR="10.5.5.6"))
        # Anonymous requests count per address, not against alice.
        assert post_graphql(client, "{ serviceStatus { ok } }", REMOTE_ADDR="10.5.5.5").status_code == 200
    (event,) = events("throttled")
    assert (event.details["limit"], event.details["scope"], event.actor_id) == (
        "operations",
        "actor",
        users["alice"].pk,
    )


# --- every view that executes GraphQL ------------------------------------------------


def upload(client, operations, **extra):
    """A multipart request as graphene-file-upload's clients send it."""
    return client.post(
        "/graphql-upload/", {"operations": json.dumps(operations), "map": "{}"}, **extra
    )  # the test client encodes a dict as multipart/form-data


def test_a_multipart_upload_view_is_held_to_the_limits(client, users):
    with configured(QUERY_LIMITS={"max_aliases": 3}):
        response = upload(client, {"query": WIDE}, headers={"X-Request-ID": "upload-limits"})
    assert response.status_code == 400
    assert response.json()["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "rule": "QUERY_LIMITS"}
    (event,) = SecurityEvent.objects.filter(request_id="upload-limits")
    assert event.kind == "query_limit" and event.details["value"] == 50


def test_a_multipart_upload_view_is_held_to_the_allow_list(client, users, tmp_path):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({document_hash("{ serviceStatus { ok } }"): "{ serviceStatus { ok } }"}))
    with configured(PERSISTED_OPERATIONS={"manifest": str(manifest), "mode": "enforce"}):
        refused = upload(client, {"query": "{ a: serviceStatus { ok } b: serviceStatus { ok } }"})
        batch = upload(client, [{"query": "{ serviceStatus { ok } }"}, {"query": "{ x: serviceStatus { ok } }"}])
        listed = upload(client, {"query": "{ serviceStatus { ok } }"})
    assert refused.status_code == 400 and refused.json()["errors"][0]["extensions"]["code"] == "OPERATION_NOT_ALLOWED"
    assert batch.status_code == 400
    assert listed.status_code == 200 and listed.json() == {"data": {"serviceStatus": {"ok": True}}}
    assert len(events("operation_unknown")) == 2


@pytest.mark.parametrize("entry", ["a string", 7, None, ["nested"]])
def test_a_batch_entry_that_is_not_an_object_is_a_400_with_an_event(client, users, entry):
    body = [{"query": 'mutation { tokenAuth(username: "alice", password: "x") { token } }'}, entry]
    response = client.post(
        "/graphql-batch/", json.dumps(body), content_type="application/json", headers={"X-Request-ID": "shape"}
    )
    assert response.status_code == 400 and b"Traceback" not in response.content
    assert [r["errors"][0]["extensions"]["code"] for r in response.json()] == ["BAD_REQUEST"] * 2
    (event,) = SecurityEvent.objects.filter(request_id="shape")
    assert event.kind == "graphql_error" and "batch entry 1 is not an object" in event.message
    # Nothing ran: the first entry's login was not attempted.
    assert not events("login_failed")


def test_a_batch_over_max_batch_is_refused(client, users):
    body = [{"query": "{ serviceStatus { ok } }"}] * 6
    with configured(QUERY_LIMITS={"max_batch": 5}):
        response = client.post("/graphql-batch/", json.dumps(body), content_type="application/json")
    assert response.status_code == 400
    (event,) = events("query_limit")
    assert (event.details["limit"], event.details["value"], event.details["max"]) == ("max_batch", 6, 5)


def test_an_operation_that_does_not_run_is_held_to_the_limits(client, users):
    document = "query Small { serviceStatus { ok } } query Big " + WIDE
    with configured(QUERY_LIMITS={"max_aliases": 10}):
        response = client.post(
            "/graphql/", json.dumps({"query": document, "operationName": "Small"}), content_type="application/json"
        )
    assert response.status_code == 400
    assert events("query_limit")[0].details["value"] == 50


def test_an_unused_fragment_is_held_to_the_limits():
    fragment = "fragment Unused on ServiceStatus { " + " ".join(f"a{i}: ok" for i in range(50)) + " }"
    analysis = analyse("{ serviceStatus { ok } } " + fragment)
    assert analysis.worst().aliases == 50


@pytest.mark.parametrize(
    "padding",
    ["#" + "x" * 200_000 + "\n", '"' + "x" * 200_000 + '"'],
    ids=["comment", "string"],
)
def test_max_tokens_bounds_comments_and_strings(client, users, padding, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000_000
    query = "query Q($s: String = %s) { serviceStatus { ok } }" % padding if padding[0] == '"' else padding + WIDE
    with configured(QUERY_LIMITS={"max_tokens": 1000}):
        response = post_graphql(client, query)
    assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
    assert events("query_limit")[0].details["limit"] == "max_tokens"


# --- what clients are told, what is stored -------------------------------------------


def test_a_session_cookie_without_a_csrf_token_runs_as_anonymous(users):
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(users["alice"])
    query = "{ me { username } serviceStatus { ok } }"
    response = browser.post(
        "/graphql/", json.dumps({"query": query}), content_type="application/json", headers={"X-Request-ID": "xsite"}
    )
    body = response.json()
    assert body["data"]["me"] is None and body["data"]["serviceStatus"]["ok"] is True
    (event,) = SecurityEvent.objects.filter(request_id="xsite", kind="forbidden")
    assert event.details["rule"] == "csrf" and event.actor_id is None
    # With the CSRF token, the session is believed.
    browser.get("/admin/login/")
    token = browser.cookies[settings.CSRF_COOKIE_NAME].value
    response = browser.post(
        "/graphql/", json.dumps({"query": query}), content_type="application/json", headers={"X-CSRFToken": token}
    )
    assert response.json()["data"]["me"] == {"username": "alice"}


def test_a_cookie_cannot_hide_which_account_was_attacked(client, users):
    client.cookies["pref"] = "alice"
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "wrong"}, headers={"X-Request-ID": "hide"})
    (event,) = SecurityEvent.objects.filter(request_id="hide", kind="login_failed")
    assert event.details["username"] == "alice"


def test_an_inline_password_quoted_by_a_syntax_error_is_not_stored(client, users, caplog):
    caplog.set_level("DEBUG")
    secret = "Quoted-By-Syntax-Error-42"
    query = 'mutation { tokenAuth(username: "alice" password "%s") { token } }' % secret
    response = post_graphql(client, query, headers={"X-Request-ID": "syntax"})
    assert response.status_code == 400 and secret in response.content.decode()  # the client's own text
    stored = json.dumps(list(SecurityEvent.objects.values()), default=str)
    assert "syntax" in stored and secret not in stored and secret not in caplog.text


def test_a_mutation_sent_by_get_is_recorded(client, users):
    response = client.get(
        "/graphql/",
        {"query": 'mutation { refreshToken(token: "x") { token } }'},
        headers={"Accept": "application/json", "X-Request-ID": "get-mutation"},
    )
    assert response.status_code == 405
    (event,) = SecurityEvent.objects.filter(request_id="get-mutation")
    assert event.kind == "graphql_error" and event.details["status"] == 405


DRIVER_TEXT = 'connection to server at "10.20.30.40", port 6543 failed: server closed the connection unexpectedly'


def broken_transactions():
    """The transaction graphene-django opens for a mutation fails, as when the database went away."""
    import contextlib
    import types

    from django.db import connection

    @contextlib.contextmanager
    def atomic(*args, **kwargs):
        with connection.wrap_database_errors:
            raise connection.Database.OperationalError(DRIVER_TEXT)
        yield

    return mock.patch("graphene_django.views.transaction", types.SimpleNamespace(atomic=atomic))


@pytest.mark.parametrize("mode", ["database", "all"])
def test_a_database_failure_outside_the_resolvers_is_masked(client, users, mode):
    from django.db import connection

    query = 'mutation { updateProfile(fullName: "x") { profile { fullName } } }'
    try:
        with configured(MASK_ERRORS=mode), broken_transactions():
            response = post_graphql(client, query, token=make_token("alice"), headers={"X-Request-ID": "dbgone"})
    finally:
        connection.errors_occurred = False
    text = response.content.decode()
    assert "10.20.30.40" not in text and "6543" not in text and "closed the connection" not in text
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "INTERNAL_ERROR", "request_id": "dbgone"}
    (event,) = SecurityEvent.objects.filter(request_id="dbgone", kind="db_error")
    assert "10.20.30.40" not in event.message + json.dumps(event.details)


def refused_commits():
    """The COMMIT of a mutation's transaction refused with a serialization failure (40001), as
    at SERIALIZABLE; Django's rollback after it says the connection works again."""
    import contextlib
    import types

    import psycopg
    from django.db import connection
    from django.db.utils import OperationalError

    @contextlib.contextmanager
    def atomic(*args, **kwargs):
        yield
        connection.errors_occurred = False  # what Django's rollback() leaves
        raise OperationalError(f"could not serialize access during commit attempt ({DRIVER_TEXT})") from (
            psycopg.errors.SerializationFailure("could not serialize access")
        )

    return mock.patch("graphene_django.views.transaction", types.SimpleNamespace(atomic=atomic))


def test_a_refused_commit_is_masked_and_recorded_with_its_sqlstate(client, users):
    query = 'mutation { updateProfile(fullName: "x") { profile { fullName } } }'
    with refused_commits():
        response = post_graphql(client, query, token=make_token("alice"), headers={"X-Request-ID": "commit-40001"})
    text = response.content.decode()
    assert "10.20.30.40" not in text and "serialize" not in text
    (error,) = response.json()["errors"]
    assert error["extensions"] == {"code": "INTERNAL_ERROR", "request_id": "commit-40001"}
    (event,) = SecurityEvent.objects.filter(request_id="commit-40001", kind="db_error")
    assert event.sqlstate == "40001" and event.actor.username == "alice"
    assert "10.20.30.40" not in event.message + json.dumps(event.details)


def test_mask_errors_all_masks_an_exception_outside_the_resolvers(client, users):
    from graphql import ExecutionContext

    with (
        configured(MASK_ERRORS="all"),
        mock.patch.object(ExecutionContext, "build", side_effect=TypeError("internal detail /srv/app/secret.py")),
    ):
        response = post_graphql(client, "{ serviceStatus { ok } }", headers={"X-Request-ID": "all"})
    assert "secret.py" not in response.content.decode()
    assert response.json()["errors"][0]["extensions"]["code"] == "INTERNAL_ERROR"


# --- a hostile run, then every row and log line scanned ---------------------------------

ALL_ON = {
    "QUERY_LIMITS": {
        "max_depth": 8,
        "max_aliases": 10,
        "max_fields": 100,
        "max_directives": 5,
        "max_tokens": 500,
        "max_cost": 2000,
        "max_request_bytes": 200_000,
        "max_batch": 3,
        "mode": "enforce",
    },
    "THROTTLE": {"login": "2/300s", "login_username": "4/300s", "auth_failures": "6/60s", "operations": "40/60s"},
}


def test_a_hostile_run_leaves_no_secret_in_any_row_or_log_line(client, users, caplog):
    caplog.set_level("DEBUG")
    password = "Hostile-Run-Password-731"
    inline = "Inline-Hostile-Secret-562"
    token = make_token("alice")
    cookie = "Cookie-Value-Hostile-908"
    client.cookies["sessionid"] = cookie
    client.cookies["JWT"] = token
    requests = [
        # Logins by every route around the throttle, each carrying the password.
        {"query": LOGIN, "variables": {"u": "alice", "p": password}, "operationName": "null"},
        {
            "query": "mutation { "
            + " ".join(f"t{i}: __typename" for i in range(5))
            + f' tokenAuth(username: "alice", password: "{inline}") {{ token }} }}'
        },
        {"query": f'mutation {{ tokenAuth(username: "alice" password "{inline}") {{ token }} }}'},  # a syntax error
        {"query": LOGIN, "variables": {"u": "alice\x00\ud800", "p": password + "\x00"}},
        {"query": LOGIN, "variables": {"u": "ALICE", "p": password}},  # the third try at alice: refused
        {"query": LOGIN, "variables": {"u": ["alice"] * 500, "p": {"nested": [[[password]]]}}},
        # Aliases, fragments, directives, comments, huge and deep values.
        {"query": "{ " + " ".join(f"a{i}: serviceStatus {{ ok }}" for i in range(40)) + " }"},
        {
            "query": "query { ...F ...F ...F } "
            "fragment F on Query { serviceStatus @include(if: true) @skip(if: false) { ok } }"
        },
        {"query": "# " + password + "\n" + "#" * 50_000 + "\n{ serviceStatus { ok } }"},
        {"query": "{ me { username } }", "variables": {"deep": [[[[[[[[[[password]]]]]]]]]], "x": "y" * 100_000}},
        {"query": "{ documents { owner { documents { edges { node { owner { username } } } } } } }"},
    ]
    with configured(**ALL_ON):
        for n, body in enumerate(requests):
            response = client.post(
                "/graphql/",
                json.dumps(body),
                content_type="application/json",
                headers={"Authorization": f"JWT {token}", "X-Request-ID": f"hostile-{n}"},
                REMOTE_ADDR=f"2001:db8:9:9::{n + 1:x}",
            )
            assert response.status_code in (200, 400, 413, 429) and b"Traceback" not in response.content
        batch = [{"query": LOGIN, "variables": {"u": "alice", "p": password}}] * 3 + ["oops"]
        client.post("/graphql-batch/", json.dumps(batch), content_type="application/json")
        upload_body = {"query": LOGIN, "variables": {"u": "alice", "p": password}}
        client.post("/graphql-upload/", {"operations": json.dumps(upload_body), "map": "{}"})
    # Something was recorded, and refused, along the way.
    kinds = set(SecurityEvent.objects.values_list("kind", flat=True))
    assert {"throttled", "query_limit", "login_failed"} <= kinds
    stored = stored_text()
    logged = caplog.text + json.dumps([getattr(r, "gql_audit_payload", None) for r in caplog.records], default=str)
    for secret in (password, inline, token, cookie, token.split(".")[2]):
        assert secret not in stored, secret
        assert secret not in logged, secret


def test_a_document_the_view_reads_in_its_own_way_is_checked_when_it_executes(client, users, password_checks):
    # The body is harmless; the view executes the header's document, which admission never saw.
    harmless = json.dumps({"query": "{ serviceStatus { ok } }"})
    logins = (
        "mutation { "
        + " ".join(f'l{i}: tokenAuth(username: "alice", password: "x{i}") {{ token }}' for i in range(3))
        + " }"
    )
    with configured(QUERY_LIMITS={"max_aliases": 3}, THROTTLE={"login": "2/300s"}):
        wide = client.post(
            "/graphql-header/",
            harmless,
            content_type="application/json",
            headers={"X-Document": WIDE, "X-Request-ID": "own-way"},
        )
        login_burst = client.post(
            "/graphql-header/",
            harmless,
            content_type="application/json",
            headers={"X-Document": logins, "X-Request-ID": "own-way-logins"},
        )
    assert wide.json()["errors"][0]["extensions"] == {"code": "QUERY_TOO_COMPLEX", "rule": "QUERY_LIMITS"}
    assert wide.json()["data"] == {"serviceStatus": None}
    (event,) = SecurityEvent.objects.filter(request_id="own-way", kind="query_limit")
    assert event.details["value"] == 50
    assert {e["extensions"]["code"] for e in login_burst.json()["errors"]} == {"THROTTLED"}
    assert password_checks == []
