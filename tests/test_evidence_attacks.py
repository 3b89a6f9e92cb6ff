"""An insider with SQL access and no key attacks seals and signed checkpoints together.

Each test does what such an insider would (delete, rewrite, put back old rows, roll
back, truncate) and asserts what the checks then say, including where one layer alone
cannot tell and the other must.
"""

from __future__ import annotations

import io
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from gql_audit.evidence import sealing
from gql_audit.evidence.verify import verify
from gql_audit.models import Checkpoint, LogCursor, LogLeaf, Seal, SealChain, SealCounter, SecurityEvent
from tests import test_checkpoints
from tests.test_checkpoints import checkpoint, found, public_verify, sealed_event
from tests.test_tamper import traffic

pytestmark = pytest.mark.django_db(transaction=True)

#: Fixtures: keys, an anchor directory, sealing and the log on in each access store.
keys = test_checkpoints.keys
anchor_dir = test_checkpoints.anchor_dir
logged = test_checkpoints.logged


def hmac_problems():
    return {(p.what, p.kind, p.id) for p in verify().problems}


def copy_of(model, **filters):
    """An old copy of a row, as an insider who kept one has it."""
    return dict(model.objects.filter(**filters).values().get())


def put_back(model, row):
    model.objects.filter(pk=row[model._meta.pk.attname]).delete()
    model.objects.create(**row)


def delete_chain_and_records(chain):
    for seal in Seal.objects.filter(chain=chain):
        for entry in seal.entries:
            if entry[0] in sealing.record_kinds():
                sealing.record_kinds()[entry[0]].model._default_manager.filter(pk=entry[1]).delete()
    Seal.objects.filter(chain=chain).delete()
    SealChain.objects.filter(chain=chain).delete()


def test_the_chain_counter_deleted_with_the_newest_chain_still_shows(client, users, logged, keys):
    traffic(client, users, prefix="a")
    sealing.forget()
    traffic(client, users, prefix="b")
    newest = SealChain.objects.order_by("-number").first()
    delete_chain_and_records(newest.chain)
    SealCounter.objects.filter(name=sealing.CHAINS).delete()
    sealing.forget()
    traffic(client, users, prefix="c")  # the next chain: the counter is made again, marked
    assert ("chain counter edited", "chain", "counter") in hmac_problems()


def test_an_old_chain_row_and_counter_put_back_hide_from_the_seals_not_from_the_log(client, users, logged, keys):
    """The limit of the seals alone (a genuine old row put back), closed by the log."""
    traffic(client, users, prefix="a")
    counter = copy_of(SealCounter, name=sealing.CHAINS)
    chain = SealChain.objects.get()
    old_row = copy_of(SealChain, chain=chain.chain)
    old_head = chain.head_seq
    traffic(client, users, prefix="b")  # the same chain goes on
    sealing.forget()
    traffic(client, users, prefix="c")  # and a second chain starts
    time.sleep(1)
    checkpoint()
    # The tail of the first chain and the whole second chain deleted, old rows put back.
    for seal in Seal.objects.filter(chain=chain.chain, seq__gt=old_head):
        for entry in seal.entries:
            sealing.record_kinds()[entry[0]].model._default_manager.filter(pk=entry[1]).delete()
    Seal.objects.filter(chain=chain.chain, seq__gt=old_head).delete()
    delete_chain_and_records(SealChain.objects.exclude(chain=chain.chain).get().chain)
    put_back(SealChain, old_row)
    put_back(SealCounter, counter)
    assert hmac_problems() == set()  # the seals cannot tell: every row left is genuine
    report = public_verify(keys, expect_ok=False)
    assert {p["what"] for p in report["problems"]} == {"deleted"}
    assert SecurityEvent.objects.filter(request_id="c-3").count() == 0


def test_a_deleted_log_cursor_does_not_log_records_twice(client, users, logged, keys):
    traffic(client, users)
    checkpoint()
    size = LogLeaf.objects.count()
    LogCursor.objects.all().delete()
    traffic(client, users, prefix="s")
    time.sleep(1)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("gql_audit_checkpoint", stdout=out, stderr=out)
    assert "logged already" in out.getvalue()
    assert LogLeaf.objects.values("kind", "record_id").distinct().count() == LogLeaf.objects.count() > size
    assert public_verify(keys)["ok"]


def test_a_log_cursor_moved_back_shows_as_records_logged_twice(client, users, logged, keys):
    traffic(client, users)
    checkpoint()
    cursor = LogCursor.objects.first()
    LogCursor.objects.filter(chain=cursor.chain).update(seq=0, mac="")
    time.sleep(1)
    out = io.StringIO()
    call_command("gql_audit_checkpoint", stdout=out, stderr=out)
    report = public_verify(keys, expect_ok=False)
    assert report["problems"] and {p["what"] for p in report["problems"]} == {"log edited"}
    assert all("logged 2 times" in p["detail"] for p in report["problems"])


def test_the_tree_edge_rewritten_is_built_again_and_a_leaf_rewritten_stops_the_log(client, users, logged, keys):
    traffic(client, users)
    checkpoint()
    stored = Checkpoint.objects.get()
    Checkpoint.objects.filter(pk=stored.pk).update(frontier=["00" * 32] * len(stored.frontier))
    time.sleep(1)
    checkpoint()  # the edge is built again from the leaves, which make the signed root
    assert public_verify(keys)["ok"]
    newest = Checkpoint.objects.order_by("-created_at").first()
    Checkpoint.objects.filter(pk=newest.pk).update(frontier=["00" * 32] * len(newest.frontier))
    leaf = LogLeaf.objects.order_by("index").first()
    LogLeaf.objects.filter(index=leaf.index).update(leaf=leaf.leaf.replace('"at":"', '"at":"1'))
    time.sleep(1)
    with pytest.raises(CommandError, match="does not match the leaves"):
        checkpoint()


def test_the_newest_checkpoints_deleted_leave_a_gap_up_to_now(client, users, logged, keys, settings):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "CHECKPOINTS": {**settings.GQL_AUDIT["CHECKPOINTS"], "interval": "1s"},
    }
    traffic(client, users)
    checkpoint()
    time.sleep(3)
    report = public_verify(keys)  # no problem: a gap is named, for the reader to judge
    assert report["gaps"] and report["gaps"][-1]["from"] == report["newest_checkpoint"]["time"]


def test_a_record_dated_before_the_log_began_is_named_when_all_was_logged(settings, keys, anchor_dir):
    test_checkpoints.configure(settings, keys, anchor_dir)
    sealed_event(timedelta(days=1))
    checkpoint()
    forged = SecurityEvent.objects.create(
        created_at=timezone.now() - timedelta(days=9), kind="db_error", severity="error"
    )
    report = public_verify(keys)
    assert report["not_covered"] == 1 and report["ok"], report
    report = public_verify(keys, "--all-sealed", expect_ok=False)
    assert found(report) == {("unlogged", "event", str(forged.pk))}


def test_leaf_columns_rewritten_cannot_steer_a_purge_into_newer_records(client, users, logged, keys):
    """``LogLeaf.at`` (a copy of the leaf's time, for the purge's queries) moved back: the
    purge still goes by each record's own time, so nothing newer than its cut-off goes."""
    from tests.test_checkpoints import purge_beside_checkpointer

    old = sealed_event(timedelta(days=3))
    checkpoint()
    traffic(client, users)
    time.sleep(1)
    checkpoint()
    LogLeaf.objects.filter(kind="event").update(at=timezone.now() - timedelta(days=5))
    before = set(SecurityEvent.objects.exclude(pk=old.pk).values_list("pk", flat=True))
    purge_beside_checkpointer("--older-than", "1d")
    assert not SecurityEvent.objects.filter(pk=old.pk).exists()
    assert set(SecurityEvent.objects.values_list("pk", flat=True)) == before
    assert public_verify(keys)["ok"]
