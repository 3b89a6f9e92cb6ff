"""Audit writes at SERIALIZABLE isolation (CockroachDB's default): conflicts are retried, nothing is lost.

Eight threads write records and their seals at once. On PostgreSQL (and through
django-cockroachdb's backend) every connection runs at SERIALIZABLE, where a
serialization failure (SQLSTATE 40001) can hit any of gql_audit's own writes; SQLite
serializes writers with its lock.

This test holds only where gql_audit retries its own audit writes and seals on 40001
(``gql_audit.db.run_in_transaction``), recording each retry as a ``db_retry`` event:
without that, a conflicted write is stored unsealed and verification reports records.
"""

from __future__ import annotations

import logging
import threading

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.db import connection
from django.test import Client

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import RequestReads, SecurityEvent
from tests.conftest import make_token, post_graphql, retries_seen, run_in_threads

pytestmark = pytest.mark.django_db(transaction=True)

THREADS = 8
REQUESTS = 25
KEY = "a sealing key of 32 bytes or more, for this test"


@pytest.mark.parametrize("store", ["gql_audit", "auditlog"])
def test_8_threads_of_conflicting_audit_writes_at_serializable(users, settings, caplog, store):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": store,
        "TAMPER_EVIDENCE": {"key": KEY},
        # A tenth of the default's pauses: short enough for a test, long enough that eight
        # writers colliding on a loaded machine spread out within the ten attempts (with
        # 2-50 ms pauses, a few audit writes ran out of attempts under CI's load).
        "RETRY_BACKOFF": {"base": 0.01, "max_wait": 0.5},
    }
    answers: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        if connection.vendor in POSTGRES_VENDORS:
            with connection.cursor() as cursor:
                cursor.execute("SET default_transaction_isolation = 'serializable'")
        client = Client()
        for i in range(REQUESTS):
            request_id = f"ser-{n}-{i}"
            # Reads by two users, and every fifth request a refused token: reads, events and seals at once.
            token = "bad" if i % 5 == 4 else make_token("alice" if (n + i) % 2 else "bob")
            headers = {"X-Request-ID": request_id}
            response = post_graphql(client, "{ documents { title } }", token=token, headers=headers)
            with lock:
                answers.append((request_id, response.status_code, response.json()))

    caplog.set_level(logging.WARNING, logger="gql_audit")
    with retries_seen() as retried:
        assert run_in_threads(worker, THREADS) == []
    assert len(answers) == THREADS * REQUESTS and all(status == 200 for _, status, _ in answers)
    refused = {rid for rid, _, body in answers if body.get("errors")}
    read = {rid for rid, _, _ in answers} - refused
    assert len(refused) == THREADS * (REQUESTS // 5)

    # Every record landed: one reads row (or the ACCESS entries) per request that read, one event per refusal.
    if store == "gql_audit":
        assert set(RequestReads.objects.values_list("request_id", flat=True)) == read
    else:
        assert set(LogEntry.objects.filter(action=LogEntry.Action.ACCESS).values_list("cid", flat=True)) == read
    invalid = SecurityEvent.objects.filter(kind="token_invalid")
    assert set(invalid.values_list("request_id", flat=True)) == refused
    unwritten = [r.getMessage() for r in caplog.records if r.name == "gql_audit.audit"]
    assert unwritten == [], unwritten[:3]
    # Every retry recorded: one db_retry event for each retry the signal saw.
    assert SecurityEvent.objects.filter(kind="db_retry").count() == len(retried)
    # Every seal landed: verification passes on the untouched trail.
    call_command("gql_audit_verify")
