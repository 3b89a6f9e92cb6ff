"""Attacks on ``TAMPER_EVIDENCE`` by someone who can write to the database but has no key.

Each test tampers the way such an attacker would (SQL, or the ORM's ``update``, which is
one UPDATE statement and sends no signal) and asserts what ``gql_audit_verify`` should
then report. The SHA-256 of a record is computed with ``RecordKind.digest``: it takes no
key, so an attacker can compute it too.
"""

from __future__ import annotations

import json
import uuid

import pytest
from django.core.management.base import CommandError
from django.db import connection

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.models import RequestReads, Seal, SecurityEvent
from gql_audit.store import index
from tests.conftest import sized
from tests.test_tamper import KEY, SECOND_KEY, problems, sealed, sql, traffic  # noqa: F401 - sealed is a fixture

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sealed_reads(settings):
    """Sealing on, reads in the ``gql_audit`` store (one ``RequestReads`` row a request)."""
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit", "TAMPER_EVIDENCE": {"key": KEY}}
    sealing.forget()
    return "gql_audit"


def seal_listing(kind: str, pk) -> Seal:
    """The seal whose entries list the record ``(kind, pk)``."""
    for seal in Seal.objects.order_by("chain", "seq"):
        if any(isinstance(e, list) and e[:2] == [kind, str(pk)] for e in seal.entries):
            return seal
    raise AssertionError(f"no seal lists {kind} {pk}")


def redigest(seal: Seal, kind_name: str, pk) -> None:
    """Rewrite ``seal``'s entry for a record with the digest of the record as it is now
    (the attacker's own computation: no key involved)."""
    kind = sealing.record_kinds()[kind_name]
    (row,) = kind.rows(connection.alias, [pk])
    entries = [[*e[:2], kind.digest(row), *e[3:]] if e[:2] == [kind_name, str(pk)] else e for e in seal.entries]
    Seal.objects.filter(chain=seal.chain, seq=seal.seq).update(entries=entries)


def delete_seal(chain: str, seq: int) -> None:
    sql(f"DELETE FROM {Seal._meta.db_table} WHERE chain = %s AND seq = %s", [chain, seq])


def event_pk_param(pk: uuid.UUID):
    return pk if connection.vendor in POSTGRES_VENDORS else pk.hex


# --- (a) tampering that goes unreported ----------------------------------------------------


@pytest.mark.usefixtures("sealed")
def test_a_seal_after_a_gap_is_trusted_unchecked_so_the_record_edit_it_hides_is_not_named(client, users):
    """Deleting seal N leaves seal N+1's HMAC unchecked (its ``previous`` is unknown), yet
    its entries are still believed: the attacker rewrites them to match an edited record."""
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    seal = seal_listing("event", event.pk)
    assert seal.seq > 1
    sql(f"UPDATE {SecurityEvent._meta.db_table} SET message = %s WHERE id = %s", ["nothing", event_pk_param(event.pk)])
    redigest(seal, "event", event.pk)
    delete_seal(seal.chain, seal.seq - 1)
    found = problems()
    assert ("seal missing", "seal", str(seal.seq - 1)) in found  # reported today
    # The edited event (or the rewritten seal that vouches for it) must be reported too.
    assert any(p[2] == str(event.pk) for p in found) or ("seal forged", "seal", str(seal.seq)) in found, found


@pytest.mark.usefixtures("sealed")
def test_since_an_edit_is_hidden_by_deleting_the_seal_before_the_window(client, users):
    """``--since``: the first seal in the window is checked against the seal before it;
    with that one deleted (outside the window) it is not checked at all, and nothing is said."""
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    seal = seal_listing("event", event.pk)
    since = seal.at
    sql(f"UPDATE {SecurityEvent._meta.db_table} SET message = %s WHERE id = %s", ["nothing", event_pk_param(event.pk)])
    redigest(seal, "event", event.pk)
    delete_seal(seal.chain, seal.seq - 1)
    assert problems(since=since) != [], "an edited event inside the --since window verified clean"


@pytest.mark.usefixtures("sealed")
def test_since_a_chain_s_newest_seals_dropped_with_their_records_go_unreported(client, users):
    """``--since``: a chain with no seal left in the window is skipped whole, its sealed
    head unchecked: deleting the window's seals and records leaves nothing to report."""
    traffic(client, users)
    newest = Seal.objects.order_by("-at").first()
    assert newest.seq > 1
    kinds = sealing.record_kinds()
    for entry in newest.entries:
        model = kinds[entry[0]].model
        hex_key = connection.vendor not in POSTGRES_VENDORS and model is SecurityEvent
        pk = uuid.UUID(entry[1]).hex if hex_key else entry[1]
        sql(f"DELETE FROM {model._meta.db_table} WHERE id = %s", [pk])
    delete_seal(newest.chain, newest.seq)
    assert ("seal missing", "seal", str(newest.seq)) in problems()  # reported without --since
    assert ("seal missing", "seal", str(newest.seq)) in problems(since=newest.at)


def test_a_forged_record_backdated_before_the_first_chain_is_reported_when_all_is_sealed(
    client, users, sealed_reads, capsys
):
    """An INSERT of a forged event dated before the first chain cannot be told from a
    record written before sealing began: it is counted as such, and the command says how
    many. Where sealing was on from the first record, ``--all-sealed`` names it."""
    from auditlog.models import LogEntry
    from django.core.management import call_command

    LogEntry.objects.all().delete()  # the fixtures' own: as if sealing had been on from the start
    traffic(client, users)
    forged = uuid.uuid4()
    sql(
        f"INSERT INTO {SecurityEvent._meta.db_table} (id, created_at, kind, severity, request_id, path, message,"
        " sqlstate, details) SELECT %s, %s, kind, severity, 'forged', path, 'alice logged in from the office',"
        f" sqlstate, details FROM {SecurityEvent._meta.db_table} WHERE request_id = %s",
        [event_pk_param(forged), "2001-01-01 00:00:00+00:00", "r-3"],
    )
    report = verify()
    assert report.problems == [] and report.not_covered == 1
    call_command("gql_audit_verify")
    assert "1 written before sealing began" in capsys.readouterr().out
    report = verify(all_sealed=True)
    assert [(p.what, p.kind, p.id) for p in report.problems] == [("inserted", "event", str(forged))]
    with pytest.raises(CommandError, match="^1 problem: "):
        call_command("gql_audit_verify", "--all-sealed")


def test_sqlite_a_duplicate_json_key_changes_what_sql_sees_and_verify_says_nothing(client, users, sealed_reads):
    """SQLite keeps JSON as text: a duplicate key is read as its last value by Python (the
    digest) and as its first by SQLite's JSON functions (every ``__key`` lookup)."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's jsonb keeps one value per key")
    traffic(client, users)
    row = RequestReads.objects.get(request_id="r-1")
    assert RequestReads.objects.filter(actor__username="alice", request_id="r-1").exists()
    actor = row.actor
    forged = '{"username": "bob", ' + json.dumps(actor)[1:]  # bob first, alice last
    sql(f"UPDATE {RequestReads._meta.db_table} SET actor = %s WHERE id = %s", [forged, row.pk.hex])
    assert RequestReads.objects.get(pk=row.pk).actor == actor  # Python reads the same value ...
    assert RequestReads.objects.filter(actor__username="bob", request_id="r-1").exists()  # ... SQL does not
    assert not RequestReads.objects.filter(actor__username="alice", request_id="r-1").exists()
    assert ("edited", "reads", str(row.pk)) in problems()


def test_sqlite_the_object_index_of_reads_is_not_sealed(client, users, sealed_reads):
    """On SQLite ``reads_of`` answers "who read this object" from ``ReadObject`` rows,
    which no seal covers: deleting them hides a read and verify says OK."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL answers from the sealed row's own keys")
    from example_service.models import Document
    from gql_audit.history import reads_of
    from gql_audit.models import ReadObject

    traffic(client, users)
    index.catch_up("default")
    doc = Document.objects.get(title="alice secret")
    assert any(read.request_id == "r-1" for read in reads_of(doc))
    sql(f"DELETE FROM {ReadObject._meta.db_table}")
    assert reads_of(doc) == []  # alice's read of her secret document is gone from the answer
    assert problems() != [], "the reads index was emptied and the trail verified clean"


def test_sqlite_a_row_taken_out_of_the_index_queue_is_reported(client, users, sealed_reads):
    """A row not yet indexed is found by its place in ``ReadIndexQueue``: removing it
    from there hides its reads from ``reads_of`` as surely as deleting index rows."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL answers from the sealed row's own keys")
    from example_service.models import Document
    from gql_audit.history import reads_of
    from gql_audit.models import ReadIndexQueue

    traffic(client, users)
    doc = Document.objects.get(title="alice secret")
    assert any(read.request_id == "r-1" for read in reads_of(doc))
    assert problems() == []  # queued rows are not yet indexed: nothing wrong
    sql(f"DELETE FROM {ReadIndexQueue._meta.db_table}")
    assert reads_of(doc) == []
    assert ("edited", "reads") in {(kind, name) for kind, name, _ in problems()}
    index.catch_up("default")  # and nothing brings them back: the rows are no longer queued
    assert reads_of(doc) == []


# --- (b) crashes and false positives ------------------------------------------------------


def test_a_seal_entry_naming_a_malformed_key_is_reported_not_a_crash(client, users, sealed_reads):
    """A seal whose entries are rewritten to name a key the column cannot hold: verify
    must report the forged seal, not die with a traceback (and no report at all)."""
    traffic(client, users)
    seal = Seal.objects.order_by("seq").first()
    Seal.objects.filter(chain=seal.chain, seq=seal.seq).update(
        entries=[["event", "not-a-uuid", "0" * 64, "db_error", None, "2001-01-01T00:00:00+00:00"]]
    )
    found = problems()  # raises django.core.exceptions.ValidationError today
    assert ("seal forged", "seal", str(seal.seq)) in found


def test_a_deeply_nested_seal_is_reported_not_a_crash(client, users, sealed_reads):
    """Entries nested deeper than Python's JSON decoder goes: verify must report, not crash."""
    traffic(client, users)
    seal = Seal.objects.order_by("seq").first()
    depth = 5000
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = ON")  # past JSON_VALID(), which stops at depth 1000
    sql(
        f"UPDATE {Seal._meta.db_table} SET entries = %s WHERE chain = %s AND seq = %s",
        ["[" * depth + "]" * depth, seal.chain, seal.seq],
    )
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = OFF")
    found = problems()  # RecursionError today
    assert ("seal forged", "seal", str(seal.seq)) in found


def test_sqlite_a_forged_record_with_a_timestamp_that_is_not_one_is_reported_not_a_crash(client, users, sealed_reads):
    """SQLite stores a datetime as text and reads text it cannot parse as None: a forged
    row with such a ``created_at`` makes the search for inserted records compare None."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's timestamptz holds only timestamps")
    traffic(client, users)
    forged = uuid.uuid4()
    sql(
        f"INSERT INTO {SecurityEvent._meta.db_table} (id, created_at, kind, severity, request_id, path, message,"
        " sqlstate, details) SELECT %s, 'x', kind, severity, 'forged', path, message, sqlstate, details"
        f" FROM {SecurityEvent._meta.db_table} WHERE request_id = %s",
        [forged.hex, "r-3"],
    )
    found = problems()  # TypeError: '>=' not supported between 'NoneType' and 'datetime.datetime' today
    assert ("inserted", "event", str(forged)) in found


@pytest.mark.postgres
@pytest.mark.parametrize("value", [1e16, -0.0])
def test_a_float_jsonb_respells_is_not_tampering(users, sealed_reads, value):
    """Reads sealed as written (not read back) on PostgreSQL: jsonb stores 1e16 as
    10000000000000000 and -0.0 as 0.0, so an untouched row no longer matches its digest."""
    from auditlog.context import set_extra_data
    from auditlog.signals import accessed

    from example_service.models import Document
    from tests.test_access_log import service_code

    doc = users["alice"].documents.first()
    with service_code("float", users["alice"]):
        with set_extra_data({"ratio": value}):
            accessed.send(sender=Document, instance=doc)
    assert RequestReads.objects.filter(request_id="float").exists()
    assert problems() == []


def test_a_key_retired_by_rotation_seals_no_forgery_dated_after(client, users, sealed_reads, settings):
    """The old key stays in ``previous_keys`` for the retention period. Someone who kept
    it forges, after the rotation, a new chain sealed with it, vouching for a forged
    event. Given with the time it was retired, anything it seals dated later is refused."""
    from django.utils import timezone

    from gql_audit.models import SealChain

    traffic(client, users, prefix="k1")
    previous = {"key": KEY, "until": timezone.now().isoformat()}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": {"key": SECOND_KEY, "previous_keys": [previous]}}
    sealing.forget()
    traffic(client, users, prefix="k2")
    # The leaver, with the old key and database access only: a forged event, and a chain that seals it.
    old_key, old_id = KEY.encode(), sealing.key_id(KEY)
    forged = uuid.uuid4()
    sql(
        f"INSERT INTO {SecurityEvent._meta.db_table} (id, created_at, kind, severity, request_id, path, message,"
        " sqlstate, details) SELECT %s, created_at, kind, severity, 'forged', path, 'forged', sqlstate, details"
        f" FROM {SecurityEvent._meta.db_table} WHERE request_id = %s",
        [event_pk_param(forged), "k2-3"],
    )
    assert ("inserted", "event", str(forged)) in problems()  # unsealed, it shows
    row = sealing.record_kinds()["event"].rows(connection.alias, [forged])[0]
    now = timezone.now()
    chain = SealChain(chain=f"{uuid.uuid4().hex[:20]}-{now:%Y%m%d}", started_at=now, key_id=old_id)
    chain.base_mac = sealing.anchor(old_key, chain)
    entries = [sealing.entry_for(sealing.record_kinds()["event"], row)]
    seal_mac = sealing.mac(
        old_key, *sealing.seal_text(chain.chain, 1, chain.base_mac, sealing._plain(now), old_id, entries)
    )
    chain.head_seq, chain.head_mac = 1, seal_mac
    chain.mac = sealing.mac(old_key, *sealing.chain_text(chain))
    chain.save()
    Seal.objects.create(
        chain=chain.chain, seq=1, at=now, key_id=old_id, entries=entries, previous=chain.base_mac, mac=seal_mac
    )
    found = problems()
    assert ("retired key", "chain", chain.chain) in found and ("retired key", "seal", "1") in found
    assert ("inserted", "event", str(forged)) in found


def test_an_on_commit_callback_that_raises_does_not_break_sealing_for_the_thread(users, sealed_reads):
    """Django stops running a transaction's on_commit callbacks at the first that raises:
    the writer never learns its seal committed and reuses the position, every later seal of
    the thread is refused (duplicate key) and its records are reported 'inserted'."""
    from django.db import transaction

    from gql_audit.events import record_event

    record_event("db_error", message="a chain starts")
    with pytest.raises(ZeroDivisionError):
        with transaction.atomic():
            transaction.on_commit(lambda: 1 / 0)  # the service's own callback, registered first
            record_event("db_error", message="inside the service's transaction")
    record_event("db_error", message="afterwards")
    assert problems() == []


def test_a_huge_gap_in_a_chain_is_one_problem_not_one_per_position(client, users, sealed_reads):
    """One forged seal far ahead in a chain (or a chain row whose head_seq is rewritten) makes
    verify list every position in between: 10**15 of them exhausts memory, the command never
    ends. Bounded here to 10**6 so that the test ends."""
    import time

    traffic(client, users)
    seal = Seal.objects.order_by("seq").last()
    Seal.objects.create(chain=seal.chain, seq=seal.seq + 10**6, at=seal.at, key_id=seal.key_id, entries=[], mac="0")
    started = time.monotonic()
    report = verify()
    assert len(report.problems) < 100, f"{len(report.problems)} problems in {time.monotonic() - started:.1f}s"


def test_sqlite_a_forged_record_whose_key_is_no_uuid_is_reported_not_a_crash(client, users, sealed_reads):
    """SQLite holds any text in a UUID column: a forged event whose key is no UUID makes
    verify die reading the table (and so report nothing)."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's uuid column refuses such a key")
    traffic(client, users)
    sql(
        f"INSERT INTO {SecurityEvent._meta.db_table} (id, created_at, kind, severity, request_id, path, message,"
        " sqlstate, details) SELECT 'not-a-uuid', created_at, kind, severity, 'forged', path, message, sqlstate,"
        f" details FROM {SecurityEvent._meta.db_table} WHERE request_id = %s",
        ["r-3"],
    )
    report = verify()  # ValueError: badly formed hexadecimal UUID string, today
    assert [(p.what, p.kind) for p in report.problems] == [("inserted", "event")]


def test_a_record_whose_actor_key_is_a_uuid_can_be_sealed(users, sealed_reads):
    """A project whose user model has a UUID key (a common choice): ``entry_for`` puts the
    actor's key in the entry as it is, and ``Seal.entries`` (no JSON encoder) cannot store
    a UUID, so every seal naming an actor fails and its records are reported 'inserted'.
    The user model cannot be swapped inside a test run: the row is the one such a project's
    SecurityEvent would give."""
    from gql_audit.events import record_event

    record_event("db_error", message="an event")
    kind = sealing.record_kinds()["event"]
    (row,) = kind.rows(connection.alias, [SecurityEvent.objects.get().pk])
    row["actor_id"] = uuid.uuid4()  # what the actor column holds with a UUID-keyed user model
    sealing.append(connection.alias, [sealing.entry_for(kind, row)])  # TypeError today


# --- the --since window, retired keys, values Python cannot read, SQLite spellings -------


def _everything_moved_before(since):
    """Every seal's and record's time moved before ``since`` (seal times are in their HMACs)."""
    import datetime

    from auditlog.models import LogEntry

    old = since - datetime.timedelta(days=1)
    Seal.objects.update(at=old)
    RequestReads.objects.update(at=old)
    SecurityEvent.objects.update(created_at=old)
    LogEntry.objects.update(timestamp=old)


@pytest.mark.parametrize("tampering", ["edit", "delete"])
def test_since_a_window_emptied_by_moving_seal_times_is_reported(client, users, sealed_reads, tampering):
    import datetime

    traffic(client, users)
    since = Seal.objects.order_by("at").first().at - datetime.timedelta(microseconds=1)
    assert problems(since=since) == []
    if tampering == "edit":
        RequestReads.objects.filter(request_id="r-1").update(operation={"forged": True})
    else:
        RequestReads.objects.all().delete()
        SecurityEvent.objects.all().delete()
    _everything_moved_before(since)
    assert problems(since=since) != [], f"--since verified clean after the window was emptied ({tampering})"


def test_a_retired_key_cannot_seal_a_record_dated_after_it_was_retired(client, users, settings):
    import datetime

    from django.utils import timezone

    from gql_audit.models import SealChain
    from tests.test_tamper import SECOND_KEY

    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit", "TAMPER_EVIDENCE": {"key": KEY}}
    sealing.forget()
    traffic(client, users)
    until = timezone.now()
    rotated = {"key": SECOND_KEY, "previous_keys": [{"key": KEY, "until": until.isoformat()}]}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": rotated}
    sealing.forget()
    traffic(client, users, prefix="s")
    assert problems() == []
    # With the retired key: a chain and seal dated just before `until`, listing a record written after it.
    forged = SecurityEvent.objects.filter(request_id="s-3").first()
    forged.pk, forged.request_id = uuid.uuid4(), "forged"
    forged.save(force_insert=True)
    kid, key = sealing.key_id(KEY), KEY.encode()
    kind = sealing.record_kinds()["event"]
    entries = [sealing.entry_for(kind, kind.rows(connection.alias, [forged.pk])[0])]
    chain = SealChain(chain=f"{uuid.uuid4().hex[:20]}-x", started_at=until - datetime.timedelta(microseconds=500))
    chain.base_seq = chain.head_seq = 0
    chain.key_id, chain.base_mac = kid, sealing.anchor(key, chain)
    at = until - datetime.timedelta(microseconds=100)
    seal_mac = sealing.mac(key, *sealing.seal_text(chain.chain, 1, chain.base_mac, sealing._plain(at), kid, entries))
    chain.head_seq, chain.head_mac = 1, seal_mac
    chain.mac = sealing.mac(key, *sealing.chain_text(chain))
    chain.save(force_insert=True)
    Seal.objects.create(
        chain=chain.chain, seq=1, at=at, key_id=kid, entries=entries, previous=chain.base_mac, mac=seal_mac
    )
    found = problems()
    assert ("retired key", "seal", "1") in found and ("inserted", "event", str(forged.pk)) in found


def test_a_retired_key_without_use_tz_verifies(client, users, settings):
    settings.USE_TZ = False
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "ACCESS_STORE": "gql_audit", "TAMPER_EVIDENCE": {"key": KEY}}
    sealing.forget()
    traffic(client, users)
    from tests.test_tamper import SECOND_KEY

    retired = {"key": KEY, "until": "2099-01-01T00:00:00+00:00"}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": {"key": SECOND_KEY, "previous_keys": [retired]}}
    assert problems() == []


def _reads_pk():
    row = RequestReads.objects.get(request_id="r-1")
    return row, (row.pk if connection.vendor in POSTGRES_VENDORS else row.pk.hex)


#: Tampering that makes the stored values unreadable, and what verify must say instead of crashing.
UNREADABLE = {
    "record JSON nested past the decoder": (
        "both",
        lambda table, pk: sql(f"UPDATE {table} SET context = %s WHERE id = %s", ["[" * 3000 + "]" * 3000, pk]),
        ("edited", "reads"),
    ),
    "a sealed record's time 'infinity'": (
        "postgresql",
        lambda table, pk: sql(f"UPDATE {table} SET at = 'infinity' WHERE id = %s", [pk]),
        ("edited", "reads"),
    ),
    "a forged record in the year 20000": (
        "postgresql",
        lambda table, pk: sql(
            f"INSERT INTO {table} SELECT %s, '20000-01-01 00:00:00+00', request_id, actor_id, actor, remote_addr,"
            f" operation, context, keys, shape_of, shapes FROM {table} WHERE id = %s",
            [uuid.uuid4(), pk],
        ),
        ("inserted", "reads"),
    ),
    "a sealed record's time that is none": (
        "sqlite",
        lambda table, pk: sql(f"UPDATE {table} SET at = '2024-02-30 00:00:00' WHERE id = %s", [pk]),
        ("edited", "reads"),
    ),
    "a seal's position as text": (
        "sqlite",
        lambda table, pk: sql(f"UPDATE {Seal._meta.db_table} SET seq = 'abc' WHERE seq = 1"),
        ("seal forged", "seal"),
    ),
    "a chain's start as text": (
        "sqlite",
        lambda table, pk: sql(f"UPDATE {sealing.SealChain._meta.db_table} SET started_at = 'x'"),
        ("chain edited", "chain"),
    ),
}


@pytest.mark.parametrize("case", list(UNREADABLE))
def test_values_no_python_can_read_are_reported_not_a_crash(client, users, sealed_reads, case):
    vendor, tamper, expected = UNREADABLE[case]
    if vendor != "both" and ("postgresql" if connection.vendor in POSTGRES_VENDORS else connection.vendor) != vendor:
        pytest.skip(f"{vendor} only: the other database refuses such a value")
    traffic(client, users)
    _, pk = _reads_pk()
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = ON")
    tamper(RequestReads._meta.db_table, pk)
    if connection.vendor == "sqlite":
        sql("PRAGMA ignore_check_constraints = OFF")
    assert expected in [(p.what, p.kind) for p in verify().problems]


def test_sqlite_a_twin_of_a_record_spelled_in_capitals_is_reported(client, users, sealed_reads):
    """SQLite takes ``ABCD...`` beside ``abcd...`` as another key; Django's lookups by the
    index find it: a fabricated read of another object."""
    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's uuid column has one spelling")
    from example_service.models import Document
    from gql_audit.history import reads_of
    from gql_audit.models import ReadObject

    traffic(client, users)
    doc = Document.objects.get(title="bob secret")
    row, pk = _reads_pk()
    twin, key = pk.upper(), f"example_service.document:{doc.pk}"
    table = RequestReads._meta.db_table
    columns = ", ".join(f.column for f in RequestReads._meta.concrete_fields if f.column != "id")
    sql(f"INSERT INTO {table} (id, {columns}) SELECT %s, {columns} FROM {table} WHERE id = %s", [twin, pk])
    sql(
        f"UPDATE {table} SET keys = %s, shape_of = '[0]', request_id = 'fabricated' WHERE id = %s",
        [json.dumps([key]), twin],
    )
    sql(
        f"INSERT INTO {ReadObject._meta.db_table} (reads_id, key, at) SELECT id, %s, at FROM {table} WHERE id = %s",
        [key, twin],
    )
    assert "fabricated" in [read.request_id for read in reads_of(doc)]
    assert ("inserted", "reads", twin) in problems()


def test_sqlite_a_time_respelled_with_another_offset_is_reported(client, users, sealed_reads):
    """The same instant, so the same digest; but SQLite compares times as text, so every
    ``at >=`` filter moves by up to a day."""
    import datetime

    if connection.vendor != "sqlite":
        pytest.skip("PostgreSQL's timestamptz has one spelling")
    traffic(client, users)
    row, pk = _reads_pk()
    shifted = row.at.astimezone(datetime.timezone(datetime.timedelta(hours=-23, minutes=-59)))
    spelled = shifted.replace(tzinfo=None).isoformat(sep=" ") + "-23:59"
    sql(f"UPDATE {RequestReads._meta.db_table} SET at = %s WHERE id = %s", [spelled, pk])
    assert RequestReads.objects.get(pk=row.pk).at == row.at
    assert ("edited", "reads", str(row.pk)) in problems()


def test_json_parsed_canonically_is_what_the_digest_makes_of_parsed_json():
    """The public-key check reads JSON straight into the digest's canonical form
    (``load_json``): for any JSON value, the same as parsing it then canonicalising it."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=20,
    )

    @settings(max_examples=300, deadline=None)
    @given(values)
    def check(value):
        text = json.dumps(value)
        expected = sealing._json(json.loads(text))
        assert json.dumps(sealing.load_json(text), sort_keys=True) == json.dumps(expected, sort_keys=True)

    check()


def test_a_stored_row_read_with_its_json_serialized_digests_as_the_row_itself():
    """The public-key check hands the digest each JSON column serialized already
    (``canonical_json`` of the stored text, ``digest_stored``): for any row of any kind,
    the same digest as the row's values, so no genuine record reads as edited, and a
    changed JSON value changes it."""
    import datetime

    from hypothesis import given, settings
    from hypothesis import strategies as st

    json_values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
        max_leaves=12,
    )
    plain_values = (
        st.none()
        | st.text()
        | st.integers()
        | st.booleans()
        | st.uuids()
        | st.datetimes(timezones=st.just(datetime.UTC))
        | st.floats(allow_nan=False, allow_infinity=False)
        | st.sampled_from(["::ffff:10.0.0.1", "2001:DB8::1", "10.0.0.1", "not an address"])
    )

    def check_kind(kind):
        is_json = {name: convert is sealing._json for name, convert in sealing._converters(kind)}

        @settings(max_examples=sized(400, 60), deadline=None)
        @given(st.fixed_dictionaries({n: json_values if j else plain_values for n, j in is_json.items()}))
        def check(row):
            stored = {
                n: sealing.canonical_json(json.dumps(v)) if is_json[n] and v is not None else v for n, v in row.items()
            }
            assert kind.digest_stored(stored) == kind.digest(row)
            for name in (n for n, j in is_json.items() if j):
                edited = {**stored, name: sealing.canonical_json(json.dumps([row[name]]))}
                assert kind.digest_stored(edited) != kind.digest(row)

        check()

    for kind in sealing.record_kinds().values():
        check_kind(kind)


def test_a_row_sealed_as_written_has_the_entry_of_the_row_the_database_returns():
    """A request's row is sealed from the instance gql_audit writes, never read back
    (``row_of``): its entry must be the one verification makes from the stored row,
    whatever its JSON values hold (tuples, keys that are not text, floats PostgreSQL
    respells, text beyond ASCII), else a genuine record reads as edited."""
    from django.utils import timezone

    kind = sealing.record_kinds()[sealing.READS]
    row = RequestReads(
        at=timezone.now(),
        request_id="r-1",
        actor_id="7",
        actor={"id": 7, "username": "zoë", 1: ("a", 2.5)},
        remote_addr="2001:DB8::1",
        operation={"type": "query", "name": "Ünïcode ✓", "hash": "ab" * 32, "cost": 1e16, "neg": -0.0},
        context={"db": {"retries": (0, 1)}, "nested": [{"b": 1, "a": [True, None]}]},
        keys=("app.model:1", "app.model:2"),
        shape_of=(0, 0),
        shapes=[{"fields": ("id", "title"), "paths": ["items"]}],
    )
    written = sealing.entry_for(kind, kind.row_of(row))
    sealing.insert(connection.alias, row)
    [stored] = kind.rows(connection.alias, [row.pk])
    assert written == sealing.entry_for(kind, stored)
    assert written[2] == kind.digest(stored)


@pytest.mark.parametrize("name", ["plain ascii", "Ünïcode ✓"])
def test_json_sent_as_the_digest_wrote_it_is_stored_as_django_stores_it(sealed_reads, name):
    """A sealed row's JSON columns go to PostgreSQL as the text the seal's digest made
    (not serialized a second time): stored, they must be the values Django stores for the
    same row written its own way, and the seal must verify."""
    from django.utils import timezone

    def row(request_id):
        return RequestReads(
            at=timezone.now(),
            request_id=request_id,
            actor={"id": 7, "username": name, 1: ("a", 2.5)},
            operation={"type": "query", "name": name, "cost": 1e16, "neg": -0.0, "small": 1e-7},
            context={"z": 1, "a": {"y": [True, None, "\\u00e9"], "b": 'quote " and \\ backslash'}},
            keys=("app.model:1", "app.model:2"),
            shape_of=(0, 0),
            shapes=[{"fields": ("id", "title"), "paths": ["items"]}],
        )

    sealed_row, django_row = row("as-sealed"), row("as-django")
    assert sealing.seal(connection.alias, {sealing.READS: [sealed_row]}, insert=[sealed_row]) == 1
    django_row.save(force_insert=True)
    columns = ["actor", "operation", "context", "keys", "shape_of", "shapes"]
    stored = {r["request_id"]: r for r in RequestReads.objects.values("request_id", *columns)}
    assert {c: stored["as-sealed"][c] for c in columns} == {c: stored["as-django"][c] for c in columns}
    assert stored["as-sealed"]["operation"]["name"] == name
    assert (
        seal_listing(sealing.READS, sealed_row.pk).entries[0][2]
        == sealing.entry_for(
            sealing.record_kinds()[sealing.READS], RequestReads.objects.values().get(pk=sealed_row.pk)
        )[2]
    )
    django_row.delete()  # written unsealed, as a comparison
    assert problems() == []


@pytest.mark.postgres
def test_the_seal_is_inserted_as_its_model_would_insert_it():
    """The seal's INSERT is written out for speed on PostgreSQL: the same statement as the
    model's own columns make, the same values as its fields adapt them."""
    from django.utils import timezone

    entries = [["reads", "1", "ab" * 32, "reads", None, "2026-01-01T00:00:00+00:00"]]
    seal = Seal(chain="c" * 32, seq=2**40, at=timezone.now(), key_id="k", entries=entries, previous="p", mac="m")
    text = json.dumps(entries, separators=(",", ":"))
    values = tuple(getattr(seal, column) for column in sealing._SEAL_COLUMNS)
    fast, fast_params = sealing._seal_clause(connection, values, text)
    generic, generic_params = sealing.insert_clause(connection, seal)
    assert fast == generic
    columns = [f.attname for f in Seal._meta.concrete_fields]
    entries_at = columns.index("entries")
    assert [p for n, p in enumerate(fast_params) if n != entries_at] == [
        p for n, p in enumerate(generic_params) if n != entries_at
    ]
    assert [type(p) for p in fast_params] == [type(p) for p in generic_params]
    assert json.loads(fast_params[entries_at].dumps(fast_params[entries_at].obj)) == entries
