"""``METRICS``: Prometheus metrics counted where things happen, exposed by ``gql_audit.views.metrics``.

In the test process first; then a real 2-worker gunicorn in prometheus_client's
multiprocess mode, scraped by a real Prometheus (Debian's ``prometheus``) whose query
API must add up what both workers counted; and the alerting rules the docs ship,
tested with ``promtool test rules``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import make_token, post_graphql
from tests.export_servers import free_port, need, wait_port

ROOT = Path(__file__).resolve().parent.parent
PROMETHEUS = os.environ.get("GQL_AUDIT_TEST_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("GQL_AUDIT_TEST_PROMTOOL", "/usr/bin/promtool")
LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """``(sample name, sorted labels) -> value`` of an exposition."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(client) -> dict[tuple[str, tuple], float]:
    response = client.get("/metrics/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    return samples(response.content.decode())


def grew(before, after, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture
def metrics_on(settings, monkeypatch):
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "METRICS": True}


@pytest.mark.django_db
def test_requests_failures_refusals_and_writes_are_counted(client, users, settings, metrics_on):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "QUERY_LIMITS": {"max_depth": 3, "mode": "enforce"}}
    before = scrape(client)
    alice = make_token("alice")
    post_graphql(client, "{ me { username } }", token=alice)
    post_graphql(client, "{ me { username } }", token=alice)
    post_graphql(client, 'mutation { updateProfile(phone: "1") { profile { phone } } }', token=alice)
    post_graphql(client, "{ me { username } }", token="not-a-token")
    post_graphql(client, "{ me { username } }")
    post_graphql(client, LOGIN, variables={"u": "alice", "p": "wrong"})
    post_graphql(client, "{ me { profile { user { profile { phone } } } } }", token=alice)
    after = scrape(client)
    requests = "gql_audit_requests_total"
    assert grew(before, after, requests, operation_type="query", outcome="ok") == 2
    assert grew(before, after, requests, operation_type="mutation", outcome="ok") == 1
    assert grew(before, after, requests, operation_type="query", outcome="denied") == 2
    assert grew(before, after, requests, operation_type="mutation", outcome="denied") == 1
    assert grew(before, after, requests, operation_type="query", outcome="refused") == 1
    failures = "gql_audit_auth_failures_total"
    assert grew(before, after, failures, code="TOKEN_INVALID") == 1
    assert grew(before, after, failures, code="UNAUTHENTICATED") == 1
    assert grew(before, after, failures, code="LOGIN_FAILED") == 1
    assert grew(before, after, "gql_audit_refusals_total", rule="QUERY_LIMITS") == 1
    assert grew(before, after, "gql_audit_refusals_total", rule="PUBLIC_FIELDS") == 1
    assert grew(before, after, "gql_audit_records_written_total", kind="event") >= 4
    assert grew(before, after, "gql_audit_records_written_total", kind="reads") >= 3
    assert grew(before, after, "gql_audit_records_written_total", kind="change") == 1
    assert grew(before, after, "gql_audit_audit_write_seconds_count") == 7  # the scrape itself writes nothing
    assert not grew(before, after, "gql_audit_records_fallback_total", kind="event")


@pytest.mark.django_db
def test_records_the_database_refused_are_counted_as_fallback(client, users, metrics_on):
    from tests.conftest import table_away

    before = scrape(client)
    with table_away("gql_audit_securityevent"):
        post_graphql(client, "{ me { username } }", token="not-a-token")
    after = scrape(client)
    assert grew(before, after, "gql_audit_records_fallback_total", kind="event") == 1


@pytest.mark.django_db
def test_the_database_gauges(client, users, settings, metrics_on, tmp_path):
    from django.core.management import call_command

    text = client.get("/metrics/").content.decode()
    assert "# TYPE gql_audit_checkpoint_age_seconds gauge" in text  # no checkpoint is stored: no sample
    assert not [line for line in text.splitlines() if line.startswith("gql_audit_checkpoint_age_seconds")]
    assert scrape(client)[("gql_audit_outbox_backlog", ())] == 0
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "EXPORT": {"sinks": [f"file://{tmp_path / 'x.jsonl'}"]}}
    for _ in range(3):
        post_graphql(client, "{ me { username } }", token="not-a-token")
    assert scrape(client)[("gql_audit_outbox_backlog", ())] == 3
    call_command("gql_audit_ship")
    assert scrape(client)[("gql_audit_outbox_backlog", ())] == 0


@pytest.mark.django_db
def test_the_checkpoint_age_is_the_newest_checkpoint_s(client, users, settings, metrics_on):
    import datetime

    from django.utils import timezone

    from gql_audit.models import Checkpoint

    def stored(minutes_ago: float) -> None:
        Checkpoint.objects.create(
            created_at=timezone.now() - datetime.timedelta(minutes=minutes_ago),
            tree_size=1,
            root_hash="0" * 64,
            key_id="00000000",
            note="n",
        )

    stored(30)
    # CHECKPOINTS off: no sample, whatever the table holds.
    assert ("gql_audit_checkpoint_age_seconds", ()) not in scrape(client)
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "CHECKPOINTS": {"origin": "example.test/log", "public_keys": []}}
    assert 30 * 60 <= scrape(client)[("gql_audit_checkpoint_age_seconds", ())] < 31 * 60
    stored(2)
    assert 2 * 60 <= scrape(client)[("gql_audit_checkpoint_age_seconds", ())] < 3 * 60


@pytest.mark.django_db
def test_off_it_is_not_found_and_counts_nothing(client, users, settings, monkeypatch):
    from gql_audit import metrics

    monkeypatch.setattr(metrics, "_metrics", lambda: pytest.fail("counted with METRICS off"))
    post_graphql(client, "{ me { username } }", token="not-a-token")
    assert client.get("/metrics/").status_code == 404


def test_a_label_never_takes_a_clients_text(settings, metrics_on):
    from prometheus_client import REGISTRY, generate_latest

    from gql_audit import metrics

    metrics.event_recorded("forbidden", {"rule": 'evil"} 1\nx{'}, "")
    metrics.event_recorded("db_retry", {}, '4"\n}x')
    text = generate_latest(REGISTRY).decode()
    assert 'gql_audit_refusals_total{rule="other"}' in text and "evil" not in text
    assert 'gql_audit_db_retries_total{sqlstate="other"}' in text


@pytest.mark.prometheus
def test_the_shipped_alerting_rules_pass_promtool():
    need(PROMTOOL, "prometheus")
    rules = ROOT / "docs" / "prometheus" / "gql_audit-rules.yml"
    checked = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [PROMTOOL, "test", "rules", "rules_test.yml"],
        cwd=ROOT / "tests" / "prometheus",
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


GUNICORN_SETTINGS = """
import os

from tests.settings import *  # noqa: F403

for _alias in DATABASES:  # noqa: F405
    DATABASES[_alias]["NAME"] = os.environ["GQA_TEST_DB_NAME"]  # noqa: F405
GQL_AUDIT = {**GQL_AUDIT, "METRICS": True}  # noqa: F405
"""

GUNICORN_CONFIG = """
control_socket_disable = True


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
"""

PROMETHEUS_CONFIG = """
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: gql_audit
    metrics_path: /metrics/
    static_configs:
      - targets: ["127.0.0.1:{port}"]
"""


def prometheus_query(port: int, expression: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_ready(port: int, seconds: float = 60) -> None:
    """Until Prometheus says it is ready (its API answers 503 while it starts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise AssertionError(f"Prometheus was not ready within {seconds}s")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.prometheus
@pytest.mark.server
@pytest.mark.django_db(transaction=True)
def test_prometheus_scrapes_the_counts_of_every_gunicorn_worker(users, tmp_path):
    from django.db import connection

    need(PROMETHEUS, "prometheus")
    if shutil.which("gunicorn", path=str(Path(sys.executable).parent)) is None:
        pytest.fail("gunicorn is not installed (pip install -e '.[dev]')")
    multiproc = tmp_path / "multiproc"
    multiproc.mkdir()
    (tmp_path / "gqa_metrics_settings.py").write_text(GUNICORN_SETTINGS)
    (tmp_path / "gunicorn_conf.py").write_text(GUNICORN_CONFIG)
    port, prometheus_port = free_port(), free_port()
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "gqa_metrics_settings",
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT), str(ROOT / "example_service")]),
        "GQA_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "PROMETHEUS_MULTIPROC_DIR": str(multiproc),
    }
    server_log = (tmp_path / "gunicorn.log").open("wb")
    gunicorn = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "gunicorn"),
            "--workers", "2",
            "--bind", f"127.0.0.1:{port}",
            "--config", str(tmp_path / "gunicorn_conf.py"),
            "example_service.wsgi:application",
        ],
        cwd=ROOT, env=env, stdout=server_log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    (tmp_path / "prometheus.yml").write_text(PROMETHEUS_CONFIG.format(port=port))
    prometheus_log = (tmp_path / "prometheus.log").open("wb")
    prometheus = None
    try:
        wait_port(port, 30)
        token = make_token("alice")

        def send() -> None:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/graphql/",
                data=json.dumps({"query": "query Mine { me { username } }"}).encode(),
                headers={"Content-Type": "application/json", "Authorization": f"JWT {token}", "Connection": "close"},
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    assert response.status == 200
            except urllib.error.HTTPError as exc:
                raise AssertionError(f"{exc.code}: {exc.read()[:500]!r}") from None

        # Four at a time until both workers have served some (the kernel picks which accepts).
        sent = 0
        with ThreadPoolExecutor(4) as pool:
            while sent < 400:
                list(pool.map(lambda _: send(), range(20)))
                sent += 20
                if len({path.name.split("_")[-1] for path in multiproc.glob("counter_*.db")}) == 2:
                    break
        assert len(list(multiproc.glob("counter_*.db"))) == 2, sorted(multiproc.iterdir())
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prometheus_port}",
            ],
            stdout=prometheus_log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        wait_port(prometheus_port, 30)
        wait_ready(prometheus_port)
        expression = 'sum(gql_audit_requests_total{operation_type="query",outcome="ok"})'
        deadline = time.monotonic() + 60
        found: list[dict] = []
        while time.monotonic() < deadline:
            found = prometheus_query(prometheus_port, expression)
            if found and float(found[0]["value"][1]) >= sent:
                break
            time.sleep(0.5)
        assert found and float(found[0]["value"][1]) == sent, (found, (tmp_path / "prometheus.log").read_text())
        assert prometheus_query(prometheus_port, 'up{job="gql_audit"}')[0]["value"][1] == "1"
        written = prometheus_query(prometheus_port, 'sum(gql_audit_records_written_total{kind="reads"})')
        assert float(written[0]["value"][1]) >= sent
        latency = prometheus_query(prometheus_port, "sum(gql_audit_audit_write_seconds_count)")
        assert float(latency[0]["value"][1]) >= sent
    finally:
        if prometheus is not None:
            stop(prometheus)
        stop(gunicorn)
        server_log.close()
        prometheus_log.close()
