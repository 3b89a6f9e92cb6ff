"""JSON log lines with the request context; the per-operation request line; event sinks."""

from __future__ import annotations

import io
import json
import logging

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from gql_audit.history import request_trail
from gql_audit.logging import ContextFilter, JSONFormatter, logging_config
from gql_audit.models import SecurityEvent
from tests.conftest import make_token, post_graphql


@pytest.fixture
def json_lines():
    """Everything logged, from any logger, as parsed JSON lines."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    db_logger = logging.getLogger("django.db.backends")
    db_level = db_logger.level
    db_logger.setLevel(logging.DEBUG)

    def lines():
        text = stream.getvalue()
        return [json.loads(line) for line in text.splitlines()], text

    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)
    db_logger.setLevel(db_level)


@pytest.mark.django_db
def test_every_line_of_a_request_carries_its_id(client, users, json_lines):
    with CaptureQueriesContext(connection):  # makes the database backend log its queries
        post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "log-1"})
    records, _ = json_lines()
    during = [r for r in records if r.get("request_id") == "log-1"]
    assert {r["logger"] for r in during} >= {"django.db.backends", "gql_audit.request"}
    db_lines = [r for r in during if r["logger"] == "django.db.backends"]
    assert all(r["actor_id"] in (None, users["alice"].pk) for r in db_lines)
    (request_line,) = [r for r in during if r["logger"] == "gql_audit.request"]
    assert request_line["operation"]["type"] == "query" and request_line["status"] == 200
    assert request_line["objects_accessed"] == 4 and request_line["error_codes"] == []
    assert request_line["actor_id"] == users["alice"].pk and request_line["duration_ms"] > 0
    outside = [r for r in records if r.get("request_id") is None]
    assert all(r["logger"] != "gql_audit.request" for r in outside)


@pytest.mark.django_db
@pytest.mark.parametrize("values", [False, True], ids=["names", "values"])
def test_failed_operation_line_has_codes_and_no_password(client, users, json_lines, settings, values):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "LOG_VARIABLE_VALUES": values}
    secret = "Sup3r-Secret-Pw"
    post_graphql(
        client, "{ serviceStatus { ok } me { username } }", token="bad-token", headers={"X-Request-ID": "log-2"}
    )
    login = "mutation L($u: String!, $pw: String!) { tokenAuth(username: $u, password: $pw) { token } }"
    post_graphql(client, login, variables={"u": "alice", "pw": secret}, headers={"X-Request-ID": "log-3"})
    post_graphql(client, "{ nope }", headers={"X-Request-ID": "log-4"})
    records, text = json_lines()
    lines = {r["request_id"]: r for r in records if r["logger"] == "gql_audit.request"}
    assert lines["log-2"]["error_codes"] == ["TOKEN_INVALID"]
    # By default the names only: values are personal data (a name, a phone number).
    assert lines["log-3"]["variables"] == ({"u": "alice", "pw": "[redacted]"} if values else ["pw", "u"])
    assert lines["log-3"]["error_codes"] == ["LOGIN_FAILED"]
    assert lines["log-4"]["error_codes"] == ["GRAPHQL_VALIDATION_FAILED"] and lines["log-4"]["status"] == 400
    assert secret not in text and "bad-token" not in text


def test_hostile_values_make_one_well_formed_line():
    hostile = 'line1\nline2\r\n"quoted" \x1b[31mred\x1b[0m \x00 ' + b"\xff\xfe\x80".decode("utf-8", "surrogateescape")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("tests.hostile")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("user said %s", hostile, extra={"user_value": hostile, "raw": b"\xff\x00"})
        try:
            raise ValueError(hostile)
        except ValueError:
            logger.exception("failed")
    finally:
        logger.removeHandler(handler)
    output = stream.getvalue()
    lines = output.splitlines()
    assert len(lines) == 2 and output.endswith("\n")
    first, second = (json.loads(line) for line in lines)
    assert first["user_value"] == hostile and first["message"] == f"user said {hostile}"
    assert "\x1b" not in output and "\x00" not in output and output.isascii()
    assert "ValueError" in second["exception"]


def test_logging_config_is_valid_and_uses_both():
    import logging.config

    config = logging_config("DEBUG", stream="ext://sys.stderr")
    logging.config.dictConfig({**config, "root": {"handlers": [], "level": "WARNING"}, "loggers": {}})
    assert config["handlers"]["gql_audit_json"]["filters"] == ["gql_audit_context"]
    assert config["formatters"]["gql_audit_json"]["()"] == "gql_audit.logging.JSONFormatter"


@pytest.mark.django_db
@pytest.mark.parametrize(("sink", "in_db"), [("logs", False), ("both", True)])
def test_event_sinks(client, users, settings, caplog, sink, in_db):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EVENT_SINK": sink}
    caplog.set_level(logging.INFO)
    post_graphql(client, "{ publicDocuments { title } me { username } }", headers={"X-Request-ID": f"sink-{sink}"})
    security = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.security"]
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gql_audit.audit"]
    assert [e["kind"] for e in security] == ["unauthenticated"]
    assert len(access) == 3 and all(a["cid"] == f"sink-{sink}" for a in access)
    assert SecurityEvent.objects.filter(request_id=f"sink-{sink}").exists() is in_db
    assert bool(request_trail(f"sink-{sink}").reads) is in_db


# --- Django's development server: its line for a request carries that request's id ------------


def server_line(request_line: str, status: str = "200") -> logging.LogRecord:
    """A record as Django's development server logs it for a request it answered."""
    args = (request_line, status, "45")
    return logging.LogRecord("django.server", logging.INFO, __file__, 0, '"%s" %s %s', args, None)


def test_a_server_line_gets_the_id_of_the_request_it_names_and_no_other():
    from django.test import RequestFactory

    from gql_audit.logging import remember_answered

    remember_answered("the-post", RequestFactory().post("/graphql/é?x=1"))
    record = server_line("POST /graphql/%C3%A9?x=1 HTTP/1.1")
    ContextFilter().filter(record)
    assert record.request_id == "the-post"
    # Once only: a line about a request that never reached the middleware gets none.
    record = server_line("POST /graphql/%C3%A9?x=1 HTTP/1.1")
    ContextFilter().filter(record)
    assert record.request_id is None
    remember_answered("the-post", RequestFactory().post("/graphql/"))
    for line in ("GET /graphql/ HTTP/1.1", "POST /admin/ HTTP/1.1", "garbage", "\x16\x03\x01"):
        record = server_line(line, "400")
        ContextFilter().filter(record)
        assert record.request_id is None, line


@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_the_development_servers_line_for_each_request_carries_its_id(users):
    import http.client
    import threading
    import time

    from django.core.handlers.wsgi import WSGIHandler
    from django.core.servers.basehttp import ThreadedWSGIServer, WSGIRequestHandler

    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JSONFormatter())
    server_logger = logging.getLogger("django.server")
    server_logger.addHandler(handler)
    server = ThreadedWSGIServer(("127.0.0.1", 0), WSGIRequestHandler)
    server.set_app(WSGIHandler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    query = json.dumps({"query": "{ me { username } }"})
    sent = [
        ("POST", "/graphql/", query, {"Authorization": f"JWT {make_token('alice')}", "X-Request-ID": "dev-1"}),
        ("GET", "/admin/", None, {}),
        ("POST", "/graphql/?x=%41", query, {"Content-Type": "application/json"}),
        ("GET", "/nowhere/%C3%A9/", None, {}),
        ("GET", "/not-utf-8/%FF/", None, {}),
    ]
    answered = []
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=30)  # one, kept alive
        for method, path, body, headers in sent:
            connection.request(method, path, body=body, headers={"Content-Type": "application/json", **headers})
            response = connection.getresponse()
            response.read()
            answered.append((f"{method} {path}", response.status, response.headers["X-Request-ID"]))
        connection.close()
        deadline = time.monotonic() + 10  # the server logs a request once it has sent the response
        while stream.getvalue().count("\n") < len(sent) and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        server.shutdown()
        server.server_close()
        server_logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["status_code"], line["request_id"]) for line in lines] == [(s, r) for _, s, r in answered]
    assert [status for _, status, _ in answered] == [200, 302, 200, 404, 404]
    assert answered[0][2] == "dev-1" and all(request_id for _, _, request_id in answered)
