"""``TAMPER_EVIDENCE``: sealed records, and ``gql_audit_verify`` finding every change made behind its back.

The tampering is done the way an attacker with database access would: in SQL,
never through the ORM's signals.
"""

from __future__ import annotations

import time
import uuid

import pytest
from auditlog.models import LogEntry
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from graphql_relay import to_global_id

from example_service.models import Document
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.events import record_event
from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.models import RequestReads, Seal, SealChain, SecurityEvent
from tests.conftest import ACCESS_STORES, make_token, post_graphql, writes_of_a_request

pytestmark = pytest.mark.django_db(transaction=True)

KEY = "first key: 32 bytes or more of secret material"
SECOND_KEY = "second key, after a rotation, also long enough"


@pytest.fixture(params=ACCESS_STORES)
def sealed(request, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": request.param, "TAMPER_EVIDENCE": {"key": KEY}}
    sealing.forget()
    return request.param


def traffic(client, users, prefix="r"):
    """Reads, a change, a refused token, a change and an event outside any request."""
    doc = users["alice"].documents.first()
    post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": f"{prefix}-1"})
    post_graphql(
        client,
        'mutation { updateDocument(id: "%s", title: "renamed") { document { title } } }'
        % to_global_id("DocumentNode", doc.pk),
        token=make_token("alice"),
        headers={"X-Request-ID": f"{prefix}-2"},
    )
    post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": f"{prefix}-3"})
    # An address in a spelling the database rewrites (PostgreSQL's inet), and a client's text in the reads.
    post_graphql(
        client,
        "query Q($t: String) { documents { title } }",
        variables={"t": "\x00\ud800 \u202e"},
        token=make_token("bob"),
        REMOTE_ADDR="0:0:0:0:0:FFFF:7F00:2",
        headers={"X-Request-ID": f"{prefix}-4\u202e"},
    )
    other = users["bob"].documents.first()
    other.title = "changed from a shell"
    other.save()
    record_event("db_error", message="from a cron job")


def problems(since=None):
    return sorted((p.what, p.kind, p.id) for p in verify(since=since).problems)


def sql(statement, params=()):
    with connection.cursor() as cursor:
        cursor.execute(statement, params)


def test_an_untouched_trail_verifies_clean(client, users, sealed, capsys):
    traffic(client, users)
    report = verify()
    assert report.problems == []
    # Reads (one row, or one ACCESS entry per object), the change, two events, the shell's change.
    assert report.records >= 5 and report.seals >= 4 and report.chains >= 1
    call_command("gql_audit_verify")
    assert capsys.readouterr().out.startswith("OK:")
    assert not SecurityEvent.objects.filter(message__contains=KEY).exists()


def test_each_kind_of_tampering_is_named(client, users, sealed):
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    change = LogEntry.objects.filter(cid="r-2").exclude(action=LogEntry.Action.ACCESS).get()
    shell_change = LogEntry.objects.exclude(cid="r-2").exclude(action=LogEntry.Action.ACCESS).latest("timestamp")
    if sealed == "gql_audit":
        read = RequestReads.objects.get(request_id="r-1")
        read_table, read_id, read_kind = RequestReads._meta.db_table, read.pk.hex, "reads"
        read_pk = str(read.pk)
    else:
        read = LogEntry.objects.filter(cid="r-1", action=LogEntry.Action.ACCESS).first()
        read_table, read_id, read_kind, read_pk = LogEntry._meta.db_table, read.pk, "entry", str(read.pk)
    # UPDATE a field, DELETE a row, INSERT a forged row, reorder timestamps.
    sql(f"UPDATE {SecurityEvent._meta.db_table} SET message = %s WHERE request_id = %s", ["nothing happened", "r-3"])
    sql(f"DELETE FROM {read_table} WHERE id = %s", [read.pk if connection.vendor in POSTGRES_VENDORS else read_id])
    forged = uuid.uuid4()
    sql(
        f"INSERT INTO {SecurityEvent._meta.db_table} (id, created_at, kind, severity, request_id, path, message,"
        " sqlstate, details) SELECT %s, created_at, kind, severity, request_id, path, message, sqlstate, details"
        f" FROM {SecurityEvent._meta.db_table} WHERE request_id = %s",
        [forged if connection.vendor in POSTGRES_VENDORS else forged.hex, "r-3"],
    )
    sql(
        f"UPDATE {LogEntry._meta.db_table} SET timestamp = (SELECT timestamp FROM {LogEntry._meta.db_table}"
        " WHERE id = %s) WHERE id = %s",
        [shell_change.pk, change.pk],
    )
    assert problems() == sorted(
        [
            ("edited", "event", str(event.pk)),
            ("deleted", read_kind, read_pk),
            ("inserted", "event", str(forged)),
            ("edited", "entry", str(change.pk)),
        ]
    )
    with pytest.raises(CommandError) as failed:
        call_command("gql_audit_verify")
    assert failed.value.returncode == 1


def test_seals_themselves_cannot_be_dropped_or_rewritten(client, users, sealed):
    traffic(client, users)
    seals = list(Seal.objects.order_by("chain", "seq"))
    first, middle, last = seals[0], seals[1], seals[-1]
    # Rewrite a seal's list to hide a record, drop one in the middle, and drop the newest.
    entries = first.entries[1:] + [["event", str(uuid.uuid4()), "0" * 64, "db_error", None, first.entries[0][5]]]
    Seal.objects.filter(pk=first.pk).update(entries=entries)
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s AND seq = %s", [middle.chain, middle.seq])
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s AND seq = %s", [last.chain, last.seq])
    found = [(p.what, p.chain, p.position) for p in verify().problems if p.kind == "seal"]
    assert ("seal forged", first.chain, first.seq) in found
    assert ("seal missing", middle.chain, middle.seq) in found
    assert ("seal missing", last.chain, last.seq) in found
    # And the chain's own record of its head cannot be rolled back without the key.
    SealChain.objects.update(head_seq=1)
    assert any(p.what == "chain edited" for p in verify().problems)


def test_a_purge_leaves_a_checkpoint_and_the_trail_still_verifies(client, users, sealed):
    traffic(client, users, prefix="old")
    time.sleep(1.1)
    traffic(client, users, prefix="new")
    call_command("gql_audit_purge", "--older-than", "1s")
    assert not SecurityEvent.objects.filter(request_id="old-3").exists()
    assert SecurityEvent.objects.filter(request_id="new-3").exists()
    assert problems() == []
    # A purge of one event kind excuses only that kind.
    time.sleep(1.1)
    call_command("gql_audit_purge", "--older-than", "1s", "--kind", "token_invalid")
    assert problems() == []
    sql(f"DELETE FROM {SecurityEvent._meta.db_table} WHERE request_id = %s", ["new-3"])
    assert problems() == []  # token_invalid, older than the checkpoint: purged, not tampered with
    sql(f"DELETE FROM {LogEntry._meta.db_table} WHERE cid = %s AND action != %s", ["old-2", LogEntry.Action.ACCESS])
    assert [p.what for p in verify().problems] == ["deleted"]  # change entries are never purged


def test_rotated_keys_verify_with_previous_keys(client, users, sealed, settings):
    traffic(client, users, prefix="k1")
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": {"key": SECOND_KEY, "previous_keys": [KEY]}}
    traffic(client, users, prefix="k2")
    assert problems() == []
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": {"key": SECOND_KEY}}
    assert {p.what for p in verify().problems} == {"unknown key"}


def test_a_deleted_user_is_not_tampering(client, users, sealed):
    traffic(client, users)
    users["alice"].delete()  # SET_NULL on every actor column
    assert problems() == []


def test_sealing_costs_a_constant_number_of_statements(client, users, sealed, settings):
    owner = users["alice"]
    token = make_token("alice")
    post_graphql(client, "{ documents { title } }", token=token)  # the writer's chain starts: one INSERT more
    counts = []
    for n in (3, 60):
        Document.objects.bulk_create(Document(title=f"d{n}-{i}", body="", owner=owner) for i in range(n))
        with CaptureQueriesContext(connection) as queries:
            post_graphql(client, "{ documents { title } }", token=token)
        counts.append(len(queries))
    assert counts[0] == counts[1]


@pytest.mark.postgres
@pytest.mark.parametrize("sealing_on", [False, True])
def test_a_request_s_reads_are_written_by_one_statement_in_autocommit(client, users, settings, sealing_on):
    """On PostgreSQL a request's reads row (with its seal and the chain's UPDATE) is one
    statement, its own transaction: no BEGIN and COMMIT round trips of its own."""
    store = {"ACCESS_STORE": "gql_audit", "TAMPER_EVIDENCE": {"key": KEY} if sealing_on else None}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **store}
    sealing.forget()
    writes = writes_of_a_request(client, make_token("alice"), "one-statement")
    assert len(writes) == 1
    sql_text, in_atomic, autocommit = writes[0]
    assert RequestReads._meta.db_table in sql_text and (Seal._meta.db_table in sql_text) is sealing_on
    assert not in_atomic and autocommit
    assert RequestReads.objects.filter(request_id="one-statement").count() == 1
    if sealing_on:
        assert verify().problems == []


def test_interleaved_requests_from_10_users_verify_clean(live_server, sealed, settings):
    from django.contrib.auth import get_user_model

    from example_service.models import Profile
    from tests.test_concurrency import REQUESTS, plan, send_from_threads
    from tests.test_concurrency import verify as verify_requests

    team = []
    for i in range(10):
        user = get_user_model().objects.create_user(f"sealer{i}", f"sealer{i}@example.org", "pw")
        Profile.objects.create(user=user, full_name=f"Sealer {i}")
        team.append(user)
    work = plan(team, "sealed")
    verify_requests(work, "sealed", send_from_threads(f"{live_server.url}/graphql/", work), sealed)
    report = verify()
    assert report.problems == []
    assert report.seals >= REQUESTS
    # A chain per writer at a time, never one per request: at most as many as the server's threads.
    assert 1 <= SealChain.objects.count() <= 10


def test_no_key_no_verification(settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": None}
    with pytest.raises(CommandError, match="TAMPER_EVIDENCE is off: nothing is sealed to verify"):
        call_command("gql_audit_verify")


def test_a_seal_that_cannot_be_written_loses_no_record(client, users, sealed, caplog):
    from tests.conftest import table_away

    post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "warm"})
    with table_away(Seal._meta.db_table):
        post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "lost"})
        post_graphql(client, "{ documents { title } }", token="bad", headers={"X-Request-ID": "lost-2"})
    from gql_audit.history import request_trail

    assert request_trail("lost").reads and request_trail("lost-2").events.exists()
    failures = [r for r in caplog.records if r.name == "gql_audit.audit" and "seal_failed" in r.getMessage()]
    assert failures and KEY not in caplog.text
    # Until another seal lists them, nothing in the database vouches for them: inserted.
    assert {p.what for p in verify().problems} == {"inserted"}
    # The next seal of the process lists them, marked: reported as unsealed, never as inserted.
    post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "back"})
    found = verify().problems
    assert {p.what for p in found} == {"unsealed"}
    assert {p.id for p in found} >= {str(request_trail("lost-2").events.get().pk)}
