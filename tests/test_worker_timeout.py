"""A request killed by gunicorn's worker timeout leaves a ``request_aborted`` line.

A real gunicorn serves the example service (plus one resolver that hangs) on
the test database, with ``--timeout 2`` and gql_audit's JSON logging written to
a file. A request by a JWT user hangs past the timeout; the arbiter sends the
worker SIGABRT, and the log must then name the request: its id, the actor,
the operation.

- sync worker: the signal handler's ``sys.exit`` raises SystemExit inside the
  hanging resolver, and ``AuditContextMiddleware`` logs it on the way out.
- gthread worker: the request runs in a pool thread that never sees the
  SystemExit (raised in the main thread); the ``worker_abort`` hook calls
  ``gql_audit.logging.log_in_flight``. A gthread worker's heartbeat comes from
  its main loop, so a slow request alone never times it out: the config stops
  the heartbeat while a request is in flight, as a stuck main loop would, and
  gunicorn's own timeout, signal and hook do the rest.

The settings, URLconf and gunicorn config are written to the test's tmp_path:
nothing but this file is added to the repository.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from django.db import connection

from tests.conftest import make_token

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 2  # gunicorn --timeout, seconds
HANG = 20  # seconds the resolver would sleep: far past the timeout
HANG_QUERY = "query Hang($s: Float!) { hang(seconds: $s) }"

SETTINGS = """
import os

from gql_audit.logging import logging_config
from tests.settings import *  # noqa: F403

# The test database of the pytest process that started this server.
for _alias in DATABASES:  # noqa: F405
    DATABASES[_alias]["NAME"] = os.environ["GQA_TEST_DB_NAME"]  # noqa: F405
ROOT_URLCONF = "gqa_worker_urls"
LOGGING = logging_config("INFO")
LOGGING["handlers"]["gql_audit_json"] = {
    "class": "logging.FileHandler",
    "filename": os.environ["GQA_LOG_FILE"],
    "filters": ["gql_audit_context"],
    "formatter": "gql_audit_json",
}
"""

URLS = """
import time

import graphene
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView

from example_service.schema import Mutation, Query
from tests.urls import urlpatterns as base


class HangingQuery(Query):
    hang = graphene.String(seconds=graphene.Float(required=True))

    def resolve_hang(root, info, seconds):
        time.sleep(seconds)
        return "finished"


schema = graphene.Schema(query=HangingQuery, mutation=Mutation)
urlpatterns = [*base, path("hang/", csrf_exempt(GraphQLView.as_view(schema=schema)))]
"""

CONFIG = """
# No control socket in ~/.gunicorn (gunicorn 25.1+; older versions ignore the name).
control_socket_disable = True
"""

GTHREAD_CONFIG = """

def post_worker_init(worker):
    # gthread beats from its main loop whatever its threads do: stop the beat
    # while a request is in flight, as a main loop stuck behind it would.
    from gql_audit import context

    beat = worker.notify

    def notify():
        if not context.in_flight():
            beat()

    worker.notify = notify


def worker_abort(worker):
    from gql_audit.logging import log_in_flight

    worker.log.info("gql_audit: %d request(s) in flight logged", log_in_flight())
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gunicorn:
    """gunicorn serving the test app; always stopped by ``stop()``."""

    def __init__(self, directory: Path, worker_class: str, settings: str = SETTINGS) -> None:
        self.directory = directory
        self.port = free_port()
        self.log_file = directory / "app.jsonl"
        self.server_log = directory / "gunicorn.log"
        (directory / "gqa_worker_settings.py").write_text(settings)
        (directory / "gqa_worker_urls.py").write_text(URLS)
        args = [
            sys.executable,
            "-m",
            "gunicorn",
            "example_service.wsgi:application",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            "1",
            "--worker-class",
            worker_class,
            "--timeout",
            str(TIMEOUT),
            "--graceful-timeout",
            "2",
            "--log-level",
            "info",
        ]
        config = directory / "gunicorn_conf.py"
        config.write_text(CONFIG + (GTHREAD_CONFIG if worker_class == "gthread" else ""))
        args += ["--config", str(config)]
        if worker_class == "gthread":
            args += ["--threads", "4"]
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(directory), str(ROOT), str(ROOT / "example_service")]),
            "DJANGO_SETTINGS_MODULE": "gqa_worker_settings",
            "GQA_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
            "GQA_LOG_FILE": str(self.log_file),
        }
        self.log_file.touch()
        self.server_output = open(self.server_log, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.server_output, stderr=subprocess.STDOUT, start_new_session=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hang/"

    def wait_ready(self, seconds: float = 30) -> None:
        """Until the app answers (the worker imported Django and the URLconf)."""
        deadline = time.monotonic() + seconds
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"gunicorn exited with {self.process.returncode}:\n{self.server_log.read_text()}")
            try:
                response = httpx.post(self.url, json={"query": "{ __typename }"}, timeout=2)
                if response.status_code == 200 and response.json() == {"data": {"__typename": "HangingQuery"}}:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"gunicorn did not answer within {seconds}s:\n{self.server_log.read_text()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM to the arbiter's group, SIGKILL if it lingers: no process left behind."""
        try:
            if self.process.poll() is None:
                os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait(timeout=10)
            else:
                # The arbiter is gone; a worker of its group may not be.
                try:
                    os.killpg(self.process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        finally:
            self.server_output.close()

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log_file.read_text().splitlines() if line.strip()]

    def wait_for(self, predicate, seconds: float = 15) -> list[dict]:
        """The log's lines once ``predicate(lines)`` holds (bounded)."""
        deadline = time.monotonic() + seconds
        while True:
            lines = self.lines()
            if predicate(lines):
                return lines
            if time.monotonic() > deadline:
                pytest.fail(
                    f"not logged within {seconds}s.\napp log:\n{self.log_file.read_text()}\n"
                    f"gunicorn:\n{self.server_log.read_text()}"
                )
            time.sleep(0.1)


@pytest.fixture
def gunicorn(tmp_path):
    started = []

    def start(worker_class: str) -> Gunicorn:
        server = Gunicorn(tmp_path, worker_class)
        started.append(server)
        server.wait_ready()
        return server

    yield start
    for server in started:
        server.stop()


def hang(server: Gunicorn, token: str, request_id: str, outcome: dict) -> None:
    """POST the hanging operation; record how the connection ended."""
    started = time.monotonic()
    try:
        response = httpx.post(
            server.url,
            json={"query": HANG_QUERY, "variables": {"s": HANG}, "operationName": "Hang"},
            headers={"Authorization": f"JWT {token}", "X-Request-ID": request_id},
            timeout=HANG - 5,
        )
        outcome[request_id] = ("response", response.status_code, time.monotonic() - started)
        outcome[f"{request_id}:headers"] = dict(response.headers)
        outcome[f"{request_id}:body"] = response.text
    except httpx.TimeoutException as exc:
        outcome[request_id] = ("timeout", repr(exc), time.monotonic() - started)
    except httpx.TransportError as exc:
        outcome[request_id] = ("dropped", repr(exc), time.monotonic() - started)


def aborted(lines: list[dict], request_id: str) -> list[dict]:
    return [line for line in lines if line.get("event") == "request_aborted" and line.get("request_id") == request_id]


def check_aborted_line(line: dict, *, reason: str, actor_id: int) -> None:
    assert line["level"] == "ERROR" and line["logger"] == "gql_audit.request"
    assert line["message"] == "request_aborted" and line["reason"] == reason
    assert line["actor_id"] == actor_id
    assert line["operation"] == {
        "type": "query",
        "name": "Hang",
        "hash": hashlib.sha256(HANG_QUERY.encode()).hexdigest(),
    }
    assert line["path"] == ["hang"]
    # Killed at the timeout, long before the resolver would have returned.
    assert (TIMEOUT - 1) * 1000 <= line["elapsed_ms"] < HANG * 1000


def test_sync_worker_timeout_logs_the_request(gunicorn, users):
    server = gunicorn("sync")
    token = make_token("alice")
    outcome: dict = {}
    hang(server, token, "hang-sync", outcome)
    kind, detail, seconds = outcome["hang-sync"]
    # gunicorn aborted the worker well before the resolver's sleep (or the
    # client's own timeout) was over: the SystemExit reached the middleware,
    # which answers a 500 naming the request before the worker exits.
    assert (kind, detail) == ("response", 500), outcome
    assert outcome["hang-sync:headers"]["x-request-id"] == "hang-sync"
    assert json.loads(outcome["hang-sync:body"])["errors"][0]["extensions"] == {
        "code": "INTERNAL_ERROR",
        "request_id": "hang-sync",
    }
    assert TIMEOUT - 1 <= seconds < HANG - 5, outcome

    lines = server.wait_for(lambda lines: aborted(lines, "hang-sync"))
    (line,) = aborted(lines, "hang-sync")
    check_aborted_line(line, reason="SystemExit", actor_id=users["alice"].pk)
    # The request never finished: no request line for it.
    assert not [x for x in lines if x.get("event") == "graphql_request" and x.get("request_id") == "hang-sync"]
    assert "WORKER TIMEOUT" in server.server_log.read_text()
    assert token not in server.log_file.read_text() and token not in server.server_log.read_text()
    # The arbiter replaced the worker: the service answers again.
    server.wait_ready()


def test_gthread_worker_abort_hook_logs_every_request_in_flight(gunicorn, users):
    server = gunicorn("gthread")
    tokens = {name: make_token(name) for name in ("alice", "bob")}
    outcome: dict = {}
    clients = [
        threading.Thread(target=hang, args=(server, token, f"hang-gthread-{name}", outcome), daemon=True)
        for name, token in tokens.items()
    ]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=HANG)
    assert not any(client.is_alive() for client in clients), outcome

    lines = server.wait_for(lambda lines: all(aborted(lines, f"hang-gthread-{n}") for n in ("alice", "bob")))
    for name in ("alice", "bob"):
        # One line each, from the hook: the request threads never saw the SystemExit.
        (line,) = aborted(lines, f"hang-gthread-{name}")
        check_aborted_line(line, reason="worker_abort", actor_id=users[name].pk)
        assert outcome[f"hang-gthread-{name}"][0] == "dropped", outcome
    server_log = server.server_log.read_text()
    assert "WORKER TIMEOUT" in server_log and "gql_audit: 2 request(s) in flight logged" in server_log
    for token in tokens.values():
        assert token not in server.log_file.read_text() and token not in server_log
    server.wait_ready()
