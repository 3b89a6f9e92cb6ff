"""gql_audit's statements under server-side binding and prepared statements (PostgreSQL).

A service may turn on ``"server_side_binding": True`` and ``"prepare_threshold"`` in its
connection's ``OPTIONS``; gql_audit's writes must work there, and, having one text per
model, be prepared once per connection. tests/run.sh's ``postgres_prepared`` step runs
these (with the other tests of gql_audit's own statements) with those options on
(``GQL_AUDIT_TEST_PG_PREPARED``); elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import pytest
from django.db import connection

from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.models import RequestReads, Seal
from tests.conftest import make_token, post_graphql

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "a sealing key of 32 bytes or more, for these tests"


@pytest.fixture
def prepared_connection():
    options = connection.settings_dict.get("OPTIONS", {})
    if connection.vendor != "postgresql" or options.get("server_side_binding") is not True:
        pytest.skip("needs PostgreSQL with server-side binding (GQL_AUDIT_TEST_PG_PREPARED=1, tests/run.sh)")
    assert options.get("prepare_threshold") is not None


def prepared_texts() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement FROM pg_prepared_statements")
        return [text for (text,) in cursor.fetchall()]


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
def test_reads_rows_and_their_seals_are_written_prepared(client, users, settings, prepared_connection, sealed):
    audit = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit"}
    if sealed:
        audit["TAMPER_EVIDENCE"] = {"key": KEY}
    settings.GQL_AUDIT = audit
    sealing.forget()
    token = make_token("alice")
    for n in range(6):
        response = post_graphql(client, "{ documents { title } }", token=token, headers={"X-Request-ID": f"p-{n}"})
        assert response.status_code == 200 and "errors" not in response.json()
    rows = RequestReads.objects.filter(request_id__startswith="p-")
    assert sorted(rows.values_list("request_id", flat=True)) == [f"p-{n}" for n in range(6)]
    assert all(row.actor_id == str(users["alice"].pk) and row.keys for row in rows)
    # Prepared on this connection: the one text of the write, whatever its values.
    table = RequestReads._meta.db_table
    writes = [text for text in prepared_texts() if f'INTO "{table}"' in text]
    assert len(writes) == 1, writes
    if sealed:
        assert writes[0].startswith("WITH ins_0 AS (INSERT INTO") and Seal._meta.db_table in writes[0]
        assert Seal.objects.count() == 6
        report = verify()
        assert report.ok and report.records == 6, report
