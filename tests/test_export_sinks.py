"""The sinks against real receivers: Debian's rsyslog (TCP and TLS) and a local HTTPS server.

Every record reaches every sink as the file sink has it; a receiver that is down, slow or
answers 500 loses nothing; a shipper killed with SIGKILL mid-batch and started again
delivers every record, the only duplicates sharing ``metadata.uid``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.utils import timezone

from gql_audit.models import OutboxEvent, SecurityEvent
from tests.conftest import post_graphql
from tests.export_servers import https_receiver, rsyslog_server
from tests.ocsf import problems
from tests.test_export import HOSTILE, lines, mixed_run

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def rsyslog(tmp_path):
    yield from rsyslog_server(tmp_path)


@pytest.fixture
def https_server(tmp_path):
    yield from https_receiver(tmp_path)


def export(settings, *sinks, format="ocsf"):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": "gql_audit",
        "EXPORT": {"format": format, "sinks": list(sinks)},
    }


def uids(events) -> collections.Counter:
    return collections.Counter(event["metadata"]["uid"] for event in events)


@pytest.mark.rsyslog
def test_every_sink_gets_every_record_as_the_file_sink_does(
    client, users, django_user_model, settings, tmp_path, rsyslog, https_server
):
    path = tmp_path / "events.jsonl"
    export(
        settings,
        f"file://{path}",
        f"syslog+tcp://127.0.0.1:{rsyslog.tcp}",
        {"url": f"syslog+tls://localhost:{rsyslog.tls}", "ca_file": rsyslog.ca_file},
        {"url": https_server.url, "ca_file": https_server.ca_file, "headers": {"Authorization": "Splunk test-hec"}},
    )
    secrets = mixed_run(client, users, django_user_model)
    call_command("gql_audit_ship")
    in_file = lines(path)
    assert in_file and all(problems(event) == [] for event in in_file)
    received = rsyslog.wait_for(2 * len(in_file))
    assert len(received) == 2 * len(in_file)
    # Each of the two syslog inputs got every event, byte for byte the file's (as JSON), in the same order.
    for port_events in (received[: len(in_file)], received[len(in_file) :]):
        by_uid = {item["body"]["metadata"]["uid"]: item["body"] for item in port_events}
        assert by_uid == {event["metadata"]["uid"]: event for event in in_file}
    assert sorted(item["body"]["metadata"]["uid"] for item in received) == sorted(2 * list(uids(in_file)))
    for item in received:
        body = item["body"]
        assert item["app"] == "gql_audit" and item["pri"] // 8 == 13
        expected = {1: 6, 3: 4, 4: 3}[body["severity_id"]]
        assert item["pri"] % 8 == expected, (item["pri"], body["severity_id"])
    assert [e["metadata"]["uid"] for e in https_server.delivered()] == [e["metadata"]["uid"] for e in in_file]
    assert all(post["headers"]["Authorization"] == "Splunk test-hec" for post in https_server.seen)
    assert https_server.delivered() == in_file
    assert not OutboxEvent.objects.exists()
    raw = (Path(rsyslog.dir) / "received.log").read_text(encoding="utf-8")
    for secret in secrets.values():
        assert secret not in raw and secret not in json.dumps(https_server.seen)


@pytest.mark.rsyslog
def test_hostile_and_huge_values_never_break_the_syslog_framing(client, users, settings, tmp_path, rsyslog):
    path = tmp_path / "events.jsonl"
    export(settings, f"file://{path}", f"syslog+tcp://127.0.0.1:{rsyslog.tcp}", format="json")
    deep: object = HOSTILE
    for _ in range(200):
        deep = [deep]
    from gql_audit.events import record_event

    record_event("graphql_error", message=HOSTILE * 50, path=HOSTILE, details={"deep": deep, HOSTILE[:40]: HOSTILE})
    post_graphql(client, LOGIN_HOSTILE, variables={"u": HOSTILE * 20, "p": "x"}, headers={"X-Request-ID": "h-1"})
    call_command("gql_audit_ship")
    in_file = lines(path)
    received = rsyslog.wait_for(len(in_file))
    assert len(received) == len(in_file) >= 2
    assert [item["body"] for item in received] == in_file
    assert all(item["app"] == "gql_audit" for item in received)
    assert any("<13>1 - - evil" in json.dumps(item["body"], ensure_ascii=False) for item in received)


LOGIN_HOSTILE = "mutation L($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"


def bad_tokens(client, count, prefix="r"):
    for n in range(count):
        post_graphql(client, "{ me { username } }", token="bad", headers={"X-Request-ID": f"{prefix}-{n}"})


def test_a_sink_answering_500_loses_nothing(client, users, settings, tmp_path, https_server):
    path = tmp_path / "events.jsonl"
    export(settings, f"file://{path}", {"url": https_server.url, "ca_file": https_server.ca_file})
    bad_tokens(client, 7)
    https_server.plan = [(500, 0.0), (503, 0.0), (500, 0.0)]  # given up after three in a row
    with pytest.raises(CommandError, match="answered 50"):
        call_command("gql_audit_ship", "--batch", "3")
    # The file has everything; the HTTPS sink's share waits in the outbox.
    assert len(lines(path)) == 7 and OutboxEvent.objects.count() == 7
    call_command("gql_audit_ship", "--batch", "3")
    assert uids(https_server.delivered()) == uids(lines(path))
    assert set(uids(https_server.delivered()).values()) == {1} and not OutboxEvent.objects.exists()


@pytest.mark.rsyslog
def test_a_sink_that_is_down_keeps_its_records_until_it_is_back(client, users, settings, tmp_path, rsyslog):
    path = tmp_path / "events.jsonl"
    export(settings, f"file://{path}", f"syslog+tcp://127.0.0.1:{rsyslog.tcp}")
    rsyslog.stop()
    bad_tokens(client, 4)
    with pytest.raises(CommandError, match="not delivered to every sink"):
        call_command("gql_audit_ship")
    assert len(lines(path)) == 4 and OutboxEvent.objects.count() == 4
    rsyslog.start()
    call_command("gql_audit_ship")
    assert uids(item["body"] for item in rsyslog.wait_for(4)) == uids(lines(path))
    assert not OutboxEvent.objects.exists()


def test_a_slow_sink_is_sent_again_never_skipped(client, users, settings, tmp_path, https_server, caplog):
    path = tmp_path / "events.jsonl"
    slow = {"url": https_server.url, "ca_file": https_server.ca_file, "timeout": 0.5}
    export(settings, f"file://{path}", slow)
    bad_tokens(client, 5)
    https_server.plan = [(200, 1.5)]  # answered after the sink gave up: sent again (a duplicate)
    call_command("gql_audit_ship")
    assert "timed out" in caplog.text
    assert set(uids(https_server.delivered())) == set(uids(lines(path))) and len(lines(path)) == 5
    assert len(https_server.seen) == 2 and not OutboxEvent.objects.exists()


@pytest.mark.postgres
def test_a_row_committed_late_is_shipped_not_passed_over(settings, tmp_path, users):
    """A transaction that wrote its outbox row before another but committed after the shipper
    numbered that other one: its row gets a later number and still ships."""
    path = tmp_path / "events.jsonl"
    export(settings, f"file://{path}", format="json")
    from gql_audit.events import record_event

    started, release = threading.Event(), threading.Event()

    def slow_writer():
        from django.db import connections

        try:
            with transaction.atomic():
                event = SecurityEvent.objects.create(
                    created_at=timezone.now() - timedelta(minutes=5),
                    kind="forbidden",
                    severity="warning",
                    message="late",
                )
                OutboxEvent.objects.create(
                    at=timezone.now() - timedelta(minutes=5), kind="event", record_id=str(event.pk)
                )
                started.set()
                release.wait(20)
        finally:
            connections.close_all()

    writer = threading.Thread(target=slow_writer)
    writer.start()
    assert started.wait(20)
    record_event("forbidden", message="early")
    call_command("gql_audit_ship")
    assert [line["message"] for line in lines(path)] == ["early"]
    release.set()
    writer.join(20)
    call_command("gql_audit_ship")
    assert [line["message"] for line in lines(path)] == ["early", "late"]
    assert not OutboxEvent.objects.exists()


SHIP_SETTINGS = """
import json
import os

from tests.settings import *  # noqa: F403

for _alias in DATABASES:  # noqa: F405
    DATABASES[_alias]["NAME"] = os.environ["GQA_TEST_DB_NAME"]  # noqa: F405
GQL_AUDIT = {**GQL_AUDIT, "EXPORT": json.loads(os.environ["GQA_EXPORT"])}  # noqa: F405
"""


def start_shipper(tmp_path, export_setting) -> subprocess.Popen:
    (tmp_path / "gqa_ship_settings.py").write_text(SHIP_SETTINGS)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gqa_ship_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "example_service")]),
        "GQA_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "GQA_EXPORT": json.dumps(export_setting),
    }
    args = [sys.executable, "-m", "django", "gql_audit_ship", "--follow", "--batch", "10", "--interval", "0.1"]
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )


def wait(condition, seconds=30, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} not met within {seconds}s")


def test_killed_mid_batch_and_restarted_the_shipper_loses_nothing(client, users, settings, tmp_path, https_server):
    path = tmp_path / "events.jsonl"
    setting = {
        "format": "ocsf",
        "sinks": [f"file://{path}", {"url": https_server.url, "ca_file": https_server.ca_file}],
    }
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EXPORT": setting}
    bad_tokens(client, 45, prefix="k")
    staged = OutboxEvent.objects.count()
    assert staged == 45
    https_server.plan = [(200, 0.0), (200, 30.0)]  # the second batch is held: the shipper is killed waiting
    first = start_shipper(tmp_path, setting)
    try:
        wait(lambda: len(https_server.seen) >= 2, what="the second batch reached the HTTPS server")
        time.sleep(0.2)
        os.killpg(first.pid, signal.SIGKILL)
    finally:
        first.wait(10)
    assert first.returncode == -signal.SIGKILL
    # The held batch's events reached the server, unacknowledged; they are still in the outbox.
    assert OutboxEvent.objects.count() > 0
    second = start_shipper(tmp_path, setting)
    try:
        wait(lambda: not OutboxEvent.objects.exists(), what="the outbox emptied")
    finally:
        second.send_signal(signal.SIGTERM)
        output = second.communicate(timeout=20)[0].decode()
    assert second.returncode == 0, output
    expected = {f"event:{pk}" for pk in SecurityEvent.objects.values_list("pk", flat=True)}
    received = uids(event for post in https_server.seen for event in post["body"])
    assert set(received) == expected  # every record delivered
    duplicated = {uid for uid, count in received.items() if count > 1}
    assert 0 < len(duplicated) <= 10  # the killed batch only, each copy the same event
    bodies = collections.defaultdict(list)
    for post in https_server.seen:
        for event in post["body"]:
            bodies[event["metadata"]["uid"]].append(event)
    assert all(all(copy == copies[0] for copy in copies) for copies in bodies.values())
    assert uids(lines(path)) == collections.Counter({uid: 1 for uid in expected})
