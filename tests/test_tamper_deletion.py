"""Deletion cannot make ``gql_audit_verify`` pass, and an honest trail raises no false alarm.

Someone with write access to the database but not the key deletes chain rows, whole
chains, one request's records with its seal and its chain, or a chain's newest seals:
each is reported. Under ASGI, where each request runs in a thread of its own, writers
still share a few chains (a chain per request would make a request's deletion
undetectable). A serialization failure (SQLSTATE 40001) in the audit write is retried;
what stays unsealed after a failed or timed-out write is logged and reported as
``unsealed``, never as ``inserted``.
"""

from __future__ import annotations

import logging
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from auditlog.models import LogEntry
from django.db import connection, connections, transaction
from graphql_relay import to_global_id

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.models import RequestReads, Seal, SealChain, SecurityEvent
from tests import test_concurrency, test_tamper
from tests.conftest import make_token, post_graphql
from tests.test_tamper import problems, sql, traffic

pytestmark = pytest.mark.django_db(transaction=True)

#: Fixtures: sealing on in each access store; uvicorn serving the ASGI application.
sealed = test_tamper.sealed
asgi_server = test_concurrency.asgi_server


def db_pk(model, pk):
    """A primary key as a raw statement must spell it (SQLite keeps UUIDs as 32 hex digits)."""
    return pk.hex if isinstance(pk, uuid.UUID) and connection.vendor == "sqlite" else pk


def delete_listed(seal: Seal) -> None:
    """Delete every record ``seal`` lists, in SQL."""
    kinds = sealing.record_kinds()
    for entry in seal.entries:
        if entry[0] not in kinds:
            continue
        model = kinds[entry[0]].model
        pk = model._meta.pk.to_python(entry[1])
        sql(f"DELETE FROM {model._meta.db_table} WHERE {model._meta.pk.column} = %s", [db_pk(model, pk)])


def delete_chain(chain: str) -> None:
    """A whole chain gone: its records, its seals and its row."""
    for seal in Seal.objects.filter(chain=chain):
        delete_listed(seal)
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s", [chain])
    sql(f"DELETE FROM {SealChain._meta.db_table} WHERE chain = %s", [chain])


def whats(found):
    return {what for what, _, _ in found}


def test_deleting_every_chain_row_is_reported_and_edits_still_show(client, users, sealed):
    """``DELETE FROM gql_audit_sealchain`` (seals left in place), then a security event
    rewritten: verify said "OK: 0 records in 0 seals on 0 chains"."""
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    sql(f"DELETE FROM {SealChain._meta.db_table}")
    sql(
        f"UPDATE {SecurityEvent._meta.db_table} SET message = %s WHERE id = %s",
        ["nothing happened", db_pk(SecurityEvent, event.pk)],
    )
    found = problems()
    assert "chain missing" in whats(found), found
    assert ("edited", "event", str(event.pk)) in found


def test_live_writers_start_a_new_chain_when_theirs_is_deleted(client, users, sealed, caplog):
    """Writers went on sealing into chains whose rows no longer exist."""
    traffic(client, users)
    sql(f"DELETE FROM {SealChain._meta.db_table}")
    caplog.set_level(logging.ERROR, logger="gql_audit.audit")
    # The first seal after the deletion finds its chain's row gone (it says so), the next starts another.
    for n in range(2):
        post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": f"a{n}"})
    assert any("seal_chain_missing" in record.getMessage() for record in caplog.records)
    newest = Seal.objects.order_by("-at").first()
    assert SealChain.objects.filter(chain=newest.chain).exists()
    assert "chain missing" in whats(problems())


def test_a_whole_chain_deleted_with_its_seals_and_records_is_reported(client, users, sealed):
    traffic(client, users, prefix="a")
    sealing.forget()  # the next writes start another chain
    traffic(client, users, prefix="b")
    chains = list(SealChain.objects.order_by("started_at").values_list("chain", flat=True))
    assert len(chains) >= 2
    assert problems() == []
    delete_chain(chains[-1])
    found = problems()
    assert "chain missing" in whats(found), found


def test_a_chain_s_newest_seals_deleted_with_their_records_are_reported(client, users, sealed):
    traffic(client, users)
    newest = Seal.objects.order_by("-at").first()
    delete_listed(newest)
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s AND seq = %s", [newest.chain, newest.seq])
    assert ("seal missing", "seal", str(newest.seq)) in problems()


@pytest.mark.server
def test_under_asgi_writers_share_chains_and_a_request_s_deletion_is_reported(asgi_server, users, sealed):
    token = make_token("alice")

    def send(n):
        response = httpx.post(
            f"{asgi_server}/graphql/",
            json={"query": "{ documents { title } }"},
            headers={"Authorization": f"JWT {token}", "X-Request-ID": f"asgi-{n}"},
            timeout=60,
        )
        assert response.status_code == 200

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(send, range(40)))
    assert Seal.objects.count() >= 40
    # A chain per writer thread or process, never per request.
    assert SealChain.objects.count() <= 8, SealChain.objects.count()
    assert problems() == []
    # One request's records, its seal and its chain row deleted.
    if sealed == "gql_audit":
        victim = RequestReads.objects.get(request_id="asgi-17")
        kind, pk = "reads", str(victim.pk)
    else:
        victim = LogEntry.objects.filter(cid="asgi-17").first()
        kind, pk = "entry", str(victim.pk)
    seal = next(s for s in Seal.objects.all() if any(e[:2] == [kind, pk] for e in s.entries))
    delete_listed(seal)
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s AND seq = %s", [seal.chain, seal.seq])
    sql(f"DELETE FROM {SealChain._meta.db_table} WHERE chain = %s", [seal.chain])
    found = problems()
    assert found and whats(found) & {"seal missing", "chain missing"}, found


# --- an honest trail: no false alarm ------------------------------------------------------


@pytest.fixture
def serializable(settings):
    """Every connection opened from now on runs at SERIALIZABLE (CockroachDB's only level)."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite's transactions are serializable whatever is set")
    from psycopg import IsolationLevel

    options = connections.settings["default"].setdefault("OPTIONS", {})
    saved = dict(options)
    # Statements in autocommit too, not only the transactions psycopg opens.
    options["options"] = "-c default_transaction_isolation=serializable"
    options["isolation_level"] = IsolationLevel.SERIALIZABLE
    connections.close_all()
    yield
    options.clear()
    options.update(saved)
    connections.close_all()


@pytest.mark.postgres
@pytest.mark.server
def test_8_threads_x_100_requests_at_serializable_verify_clean(live_server, users, sealed, serializable):
    token = make_token("alice")
    url = f"{live_server.url}/graphql/"

    def send(n):
        response = httpx.post(
            url,
            json={"query": "{ documents { title } }"},
            # One request in ten with a bad token: a security event beside the reads.
            headers={"Authorization": f"JWT {'bad' if n % 10 == 0 else token}", "X-Request-ID": f"ser-{n}"},
            timeout=120,
        )
        assert response.status_code == 200, response.content

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(send, range(800)))
    with connection.cursor() as cursor:
        cursor.execute("SHOW transaction_isolation")
        assert cursor.fetchone()[0] == "serializable"
    report = verify()
    assert report.problems == []
    assert report.records >= 800


def _block_the_audit_write():
    """From another connection, once the view's transaction committed: hold every table the
    audit write needs, so that it times out (PostgreSQL's statement_timeout, SQLite's busy timeout)."""
    if connection.vendor in POSTGRES_VENDORS:
        import psycopg

        params = connection.get_connection_params()
        # A plain cursor: the CockroachDB-backend pass records (and parses) gql_audit's
        # statements, not this test's own scaffolding (LOCK TABLE is PostgreSQL's).
        params.pop("cursor_factory", None)
        other = psycopg.connect(**params)
        tables = ", ".join(m._meta.db_table for m in (Seal, SealChain, RequestReads, SecurityEvent, LogEntry))
        other.execute(f"LOCK TABLE {tables} IN ACCESS EXCLUSIVE MODE")
        return other
    import sqlite3

    other = sqlite3.connect(connection.settings_dict["NAME"], isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    return other


@pytest.fixture
def short_timeout():
    with connection.cursor() as cursor:
        if connection.vendor in POSTGRES_VENDORS:
            cursor.execute("SET statement_timeout = 300")
        else:
            cursor.execute("PRAGMA busy_timeout = 300")
    yield
    with connection.cursor() as cursor:
        if connection.vendor in POSTGRES_VENDORS:
            cursor.execute("SET statement_timeout = 0")
        else:
            cursor.execute("PRAGMA busy_timeout = 60000")


def test_change_entries_left_unsealed_by_a_timed_out_write_are_logged_and_reported_unsealed(
    client, users, sealed, short_timeout, caplog
):
    doc = users["alice"].documents.first()
    post_graphql(client, "{ documents { title } }", token=make_token("alice"))  # a chain exists
    held = []

    def block_after_commit(sender, instance, created, **kwargs):
        if created and instance.action != LogEntry.Action.ACCESS:
            transaction.on_commit(lambda: held.append(_block_the_audit_write()))

    from django.db.models.signals import post_save

    post_save.connect(block_after_commit, sender=LogEntry, dispatch_uid="test-block")
    caplog.set_level(logging.INFO, logger="gql_audit.audit")
    try:
        post_graphql(
            client,
            'mutation { updateDocument(id: "%s", title: "renamed") { document { title } } }'
            % to_global_id("DocumentNode", doc.pk),
            token=make_token("alice"),
            headers={"X-Request-ID": "timed-out"},
        )
    finally:
        post_save.disconnect(dispatch_uid="test-block", sender=LogEntry)
        for other in held:
            other.rollback() if connection.vendor in POSTGRES_VENDORS else other.execute("ROLLBACK")
            other.close()
    assert held, "the audit write was not blocked"
    change = LogEntry.objects.filter(cid="timed-out").exclude(action=LogEntry.Action.ACCESS).get()
    # The change committed with the view; its seal did not: a log line names it.
    lines = [r.getMessage() for r in caplog.records if r.name == "gql_audit.audit"]
    assert any("seal_failed" in line and str(change.pk) in line for line in lines), lines
    post_graphql(client, "{ documents { title } }", token=make_token("alice"), headers={"X-Request-ID": "later"})
    found = problems()
    assert ("unsealed", "entry", str(change.pk)) in found, found
    assert not [p for p in found if p[0] == "inserted"], found


@pytest.mark.parametrize("depth", [990, 3000])
def test_a_sealed_record_nested_deeply_is_reported_on_every_python(client, users, sealed, depth):
    """Python 3.13's JSON decoder reads 3,000 levels that the digest's own walk cannot: verify
    died with RecursionError instead of naming the record."""
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = ON")
    sql(
        f"UPDATE {SecurityEvent._meta.db_table} SET details = %s WHERE id = %s",
        ["[" * depth + "]" * depth, db_pk(SecurityEvent, event.pk)],
    )
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = OFF")
    assert ("edited", "event", str(event.pk)) in problems()
