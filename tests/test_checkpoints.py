"""``CHECKPOINTS``: the append-only log, its signed checkpoints, anchors, proofs, and the
check an auditor runs with the public key alone.

The oracles are independent of the code under test: the C2SP signed-note format and
its spec's own example, RFC 6962's recursive definitions and RFC 9162's verification
algorithms written out here again, and ``cryptography`` alone for the signature.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from auditlog.models import LogEntry
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection, connections

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing, verify_proof
from gql_audit.models import Checkpoint, LogLeaf, RequestReads, Seal, SecurityEvent
from tests.conftest import ACCESS_STORES, make_token, post_graphql
from tests.test_tamper import KEY, sql, traffic

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "example.com/audit"
ROOT = Path(__file__).resolve().parent.parent


# --- an independent oracle: RFC 6962 definitions, RFC 9162 verification --------------------------


def rfc_leaf(data: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + data).digest()


def rfc_node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def rfc_split(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def rfc_mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1: MTH of the leaves' data."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return rfc_leaf(leaves[0])
    k = rfc_split(len(leaves))
    return rfc_node(rfc_mth(leaves[:k]), rfc_mth(leaves[k:]))


def rfc9162_root_from_inclusion(index: int, size: int, leaf_hash: bytes, path: list[bytes]) -> bytes | None:
    """RFC 9162 section 2.1.3.2, step by step."""
    if index >= size:
        return None
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return None
        if fn % 2 == 1 or fn == sn:
            r = rfc_node(p, r)
            if fn % 2 == 0:
                while fn % 2 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = rfc_node(r, p)
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


# --- keys, settings, helpers ------------------------------------------------------------------------


def write_key(directory: Path, name: str) -> tuple[Path, Path, Ed25519PublicKey]:
    private = Ed25519PrivateKey.generate()
    private_path, public_path = directory / f"{name}.pem", directory / f"{name}.pub.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path, private.public_key()


@pytest.fixture
def keys(tmp_path):
    return write_key(tmp_path, "log")


@pytest.fixture
def anchor_dir(tmp_path):
    directory = tmp_path / "anchor"
    directory.mkdir()
    return directory


def configure(settings, keys, anchor_dir, *, store="gql_audit", sealed=True, public_keys=None):
    private_path, public_path, _ = keys
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "ACCESS_STORE": store,
        "TAMPER_EVIDENCE": {"key": KEY} if sealed else None,
        "CHECKPOINTS": {
            "origin": ORIGIN,
            "signing_key": str(private_path),
            "public_keys": [str(p) for p in (public_keys or [public_path])],
            "interval": "60s",
            "anchors": [f"file://{anchor_dir}/"],
        },
    }
    sealing.forget()


@pytest.fixture(params=ACCESS_STORES)
def logged(request, settings, keys, anchor_dir):
    """Sealed and logged, in each access store."""
    configure(settings, keys, anchor_dir, store=request.param)
    return request.param


def checkpoint(*args):
    out = io.StringIO()
    call_command("gql_audit_checkpoint", *args, stdout=out, stderr=out)
    return out.getvalue()


def public_verify(keys, *args, expect_ok=True):
    """``gql_audit_verify --public-key ... --format json``: the parsed JSON."""
    out = io.StringIO()
    try:
        call_command("gql_audit_verify", "--public-key", str(keys[1]), "--format", "json", *args, stdout=out)
    except CommandError as failed:
        assert not expect_ok, (failed, out.getvalue())
        assert failed.returncode == 1
    else:
        assert expect_ok, out.getvalue()
    return json.loads(out.getvalue())


def command_env(tmp_path, settings):
    """The environment of a management command run as a process of its own, on this
    test's database with this test's ``GQL_AUDIT``."""
    (tmp_path / "command_settings.py").write_text(
        "import json, os\n"
        "from tests.settings import *  # noqa: F403\n"
        "for _alias in DATABASES:  # noqa: F405\n"
        "    DATABASES[_alias]['NAME'] = os.environ['GQA_TEST_DB_NAME']  # noqa: F405\n"
        "GQL_AUDIT = json.loads(os.environ['GQA_SETTINGS'])\n"
    )
    return {
        **os.environ,
        "PYTHONPATH": f"{tmp_path}:{ROOT}:{ROOT / 'example_service'}",
        "DJANGO_SETTINGS_MODULE": "command_settings",
        "GQA_TEST_DB_NAME": str(connection.settings_dict["NAME"]),
        "GQA_SETTINGS": json.dumps({k: v for k, v in settings.GQL_AUDIT.items() if k != "AUTHENTICATOR"}),
    }


def found(report):
    return {(p["what"], p["kind"], p["id"]) for p in report["problems"]}


def prove(kind, pk):
    out = io.StringIO()
    call_command("gql_audit_prove", f"{kind}:{pk}", stdout=out)
    return json.loads(out.getvalue())


def reads_record(store):
    """``(kind, pk)`` of the reads of request ``r-1`` in either store."""
    if store == "gql_audit":
        return "reads", str(RequestReads.objects.get(request_id="r-1").pk)
    return "entry", str(LogEntry.objects.filter(cid="r-1", action=LogEntry.Action.ACCESS).first().pk)


# --- the checkpoint: C2SP format, Ed25519 by cryptography alone, RFC 6962 root ----------------------


def test_a_signed_checkpoint_verifies_with_cryptography_and_the_c2sp_format(client, users, logged, keys):
    traffic(client, users)
    assert "Checkpoint" in checkpoint()
    stored = Checkpoint.objects.get()
    note = stored.note
    # The signed note: text, a blank line, one signature line "— <name> <base64(key ID || sig)>".
    text, signatures = note[: note.rindex("\n\n") + 1], note[note.rindex("\n\n") + 2 :]
    assert signatures.endswith("\n") and signatures.count("\n") == 1
    prefix, name, signature = signatures[:-1].split(" ")
    assert prefix == "\u2014" and name == ORIGIN
    raw = keys[2].public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    data = base64.b64decode(signature, validate=True)
    assert data[:4] == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + raw).digest()[:4]
    Ed25519PublicKey.from_public_bytes(raw).verify(data[4:], text.encode())  # raises if it does not verify
    # The text: origin, size, base64 root, the time line, each ending in a newline.
    origin, size, root, when, empty = text.split("\n")
    assert (origin, empty) == (ORIGIN, "")
    assert size == str(LogLeaf.objects.count()) and int(size) >= 5
    assert when.startswith("time ") and when.endswith("Z") and len(when) == len("time 2026-12-02T10:00:00Z")
    leaves = [leaf.encode() for leaf in LogLeaf.objects.order_by("index").values_list("leaf", flat=True)]
    assert base64.b64decode(root) == rfc_mth(leaves)
    # Every record written is logged, by kind and key, with the digest its seal made.
    listed = {tuple(json.loads(leaf)[k] for k in ("kind", "id")) for leaf in leaves}
    event = SecurityEvent.objects.get(request_id="r-3")
    assert ("event", str(event.pk)) in listed and reads_record(logged) in listed


def test_the_spec_s_own_example_opens_and_a_tampered_one_does_not():
    """C2SP signed-note's example key and note, as the spec prints them."""
    from gql_audit.evidence import note

    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    name, key_id, encoded = vkey.split("+")
    raw = base64.b64decode(encoded)
    key = note.public_key(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
    assert raw[0] == 1 and key.key_id.hex() == key_id
    signed = (
        "This is an example message.\n\n\u2014 example.com/foo "
        "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    )
    assert note.open_note(signed, [key])[0] == "This is an example message.\n"
    with pytest.raises(ValueError, match="does not verify"):
        note.open_note(signed.replace("example message", "example massage"), [key])
    with pytest.raises(ValueError, match="no known key"):
        note.open_note(signed.replace("example.com/foo U", "example.com/bar U"), [key])


# --- proofs ------------------------------------------------------------------------------------------


def test_a_proof_folds_to_the_checkpoint_s_root_and_a_flipped_byte_anywhere_fails(
    client, users, logged, keys, tmp_path
):
    other_key = write_key(tmp_path, "other")[1].read_text()
    traffic(client, users)
    checkpoint()
    public_pem = keys[1].read_text()
    kind, pk = reads_record(logged)
    for record in [("event", SecurityEvent.objects.get(request_id="r-3").pk), (kind, pk)]:
        proof = prove(*record)
        assert verify_proof(proof, public_pem) is True
        assert verify_proof(proof, public_pem.encode()) is True
        # Folded here again by RFC 9162's algorithm, to the root the checkpoint signs.
        text = proof["checkpoint"]
        root = base64.b64decode(text.split("\n")[2])
        folded = rfc9162_root_from_inclusion(
            proof["leaf_index"],
            proof["tree_size"],
            rfc_leaf(proof["leaf"].encode()),
            [bytes.fromhex(h) for h in proof["proof"]],
        )
        assert folded == root
        assert len(proof["proof"]) <= proof["tree_size"].bit_length()
        assert json.loads(proof["leaf"])["id"] == str(record[1])
        # A byte flipped anywhere: the note, the leaf, any hash, the index, the size.
        for field_name in ("checkpoint", "leaf"):
            value = proof[field_name]
            for position in range(len(value)):
                flipped = chr(ord(value[position]) ^ 1)
                with pytest.raises(ValueError):
                    verify_proof({**proof, field_name: value[:position] + flipped + value[position + 1 :]}, public_pem)
        for number, value in enumerate(proof["proof"]):
            for position in range(0, len(value), 2):
                byte = int(value[position : position + 2], 16) ^ 0x80
                bad = [*proof["proof"]]
                bad[number] = value[:position] + f"{byte:02x}" + value[position + 2 :]
                with pytest.raises(ValueError):
                    verify_proof({**proof, "proof": bad}, public_pem)
        for field_name in ("leaf_index", "tree_size"):
            for delta in (-1, 1):
                with pytest.raises(ValueError):
                    verify_proof({**proof, field_name: proof[field_name] + delta}, public_pem)
        with pytest.raises(ValueError, match="no known key"):
            verify_proof(proof, other_key)  # another log's key


def test_verify_proof_runs_with_no_django_and_no_database(client, users, logged, keys, tmp_path):
    traffic(client, users)
    checkpoint()
    proof = prove("event", SecurityEvent.objects.get(request_id="r-3").pk)
    (tmp_path / "proof.json").write_text(json.dumps(proof))
    script = (
        "import json, sys; from gql_audit.evidence import verify_proof; "
        "proof = json.load(open(sys.argv[1])); pem = open(sys.argv[2]).read(); "
        "assert verify_proof(proof, pem) is True; "
        "assert not [m for m in sys.modules if m == 'django' or m.startswith('django.')], 'django imported'; "
        "print('verified')"
    )
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "proof.json"), str(keys[1])],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "verified", done.stderr


def test_prove_names_what_is_not_logged(client, users, logged):
    with pytest.raises(CommandError, match="KIND:ID"):
        call_command("gql_audit_prove", "nothing")
    with pytest.raises(CommandError, match="not a key"):
        call_command("gql_audit_prove", "event:not-a-uuid")
    with pytest.raises(CommandError, match="not in the log"):
        call_command("gql_audit_prove", f"event:{uuid.uuid4()}")


# --- the auditor's check with the public key alone --------------------------------------------------


def test_an_untouched_log_verifies_with_the_public_key_alone(client, users, logged, keys, settings):
    traffic(client, users)
    checkpoint()
    traffic(client, users, prefix="s")
    checkpoint()
    # The auditor holds no secret: neither TAMPER_EVIDENCE's key nor the signing key.
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "TAMPER_EVIDENCE": None, "CHECKPOINTS": None}
    report = public_verify(keys)
    assert report["ok"] is True and report["problems"] == []
    assert report["checkpoints"] == report["checkpoints_valid"] == 2
    assert report["records"] == report["records_valid"] == LogLeaf.objects.exclude(kind="purge").count() >= 10
    assert report["range_found"]["from"] and report["range_found"]["to"]
    out = io.StringIO()
    call_command("gql_audit_verify", "--public-key", str(keys[1]), stdout=out)
    text = out.getvalue()
    assert "Results requested for" in text and "2/2 checkpoints valid" in text and text.rstrip().endswith(".")


def test_records_checked_in_forked_processes_give_the_same_report(client, users, logged, keys, settings, tmp_path):
    """``--jobs 2`` on PostgreSQL: the records are read and digested in two processes forked
    for the check (the command run on its own, with no other thread); the report is the one
    a single process makes, problems and counts alike."""
    if connection.vendor not in POSTGRES_VENDORS:
        pytest.skip("needs PostgreSQL: runs in the PostgreSQL pass of tests/run.sh (forked readers: PostgreSQL only)")
    for prefix in ("r", "s", "t"):
        traffic(client, users, prefix=prefix)
    checkpoint()
    event = SecurityEvent.objects.order_by("created_at").last()
    SecurityEvent.objects.filter(pk=event.pk).update(message="nothing happened")
    shell = LogEntry.objects.exclude(action=LogEntry.Action.ACCESS).order_by("-timestamp").first()
    LogEntry.objects.filter(pk=shell.pk).delete()
    kind, pk = reads_record(logged)
    model = RequestReads if kind == "reads" else LogEntry
    model.objects.filter(pk=pk).update(**({"operation": {"forged": 1}} if kind == "reads" else {"object_repr": "x"}))
    alone = public_verify(keys, "--jobs", "1", expect_ok=False)
    assert alone["jobs"] == 0
    # Batches of four records: several in flight at once, their verdicts applied in order.
    script = (
        "import sys, django; django.setup(); from gql_audit.evidence import log; log.BATCH = 4; "
        "from django.core.management import execute_from_command_line; execute_from_command_line(sys.argv)"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, "gql_audit_verify", "--public-key", str(keys[1]), "--format", "json"]
        + ["--jobs", "2"],
        cwd=ROOT,
        env=command_env(tmp_path, settings),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stderr
    forked = json.loads(run.stdout)
    assert forked["jobs"] == 2
    expected = {("edited", "event", str(event.pk)), ("deleted", "entry", str(shell.pk)), ("edited", kind, pk)}
    assert found(forked) == found(alone) == expected
    counts = ("records", "records_valid", "leaves", "checkpoints_valid", "range_found")
    assert {k: forked[k] for k in counts} == {k: alone[k] for k in counts}
    assert forked["records"] == LogLeaf.objects.exclude(kind="purge").count() >= 15
    with pytest.raises(CommandError, match="--jobs must be 1 or more"):
        call_command("gql_audit_verify", "--public-key", str(keys[1]), "--jobs", "0")


def test_each_change_to_the_records_or_the_log_is_named(client, users, logged, keys):
    traffic(client, users)
    checkpoint()
    assert public_verify(keys)["ok"]
    event = SecurityEvent.objects.get(request_id="r-3")
    kind, pk = reads_record(logged)
    model = RequestReads if kind == "reads" else LogEntry
    # Edit two records, delete a change entry (never purged).
    SecurityEvent.objects.filter(pk=event.pk).update(message="nothing happened")
    shell = LogEntry.objects.exclude(action=LogEntry.Action.ACCESS).order_by("-timestamp").first()
    LogEntry.objects.filter(pk=shell.pk).delete()
    model.objects.filter(pk=pk).update(**({"operation": {"forged": 1}} if kind == "reads" else {"object_repr": "x"}))
    report = public_verify(keys, expect_ok=False)
    assert {("edited", "event", str(event.pk)), ("deleted", "entry", str(shell.pk)), ("edited", kind, pk)} <= found(
        report
    ), report
    # The log itself: a leaf rewritten, a checkpoint's note rewritten.
    leaf = LogLeaf.objects.order_by("index").first()
    LogLeaf.objects.filter(index=leaf.index).update(leaf=leaf.leaf.replace('"digest":"', '"digest":"0'))
    note = Checkpoint.objects.get()
    Checkpoint.objects.filter(pk=note.pk).update(note=note.note.replace("\n", "\n\n", 1))
    problems = found(public_verify(keys, expect_ok=False))
    assert ("checkpoint forged", "checkpoint", str(note.pk)) in problems
    Checkpoint.objects.filter(pk=note.pk).update(note=note.note)
    assert ("log edited", "checkpoint", str(note.pk)) in found(public_verify(keys, expect_ok=False))


@pytest.mark.parametrize("sealed", [False, True], ids=["unsealed", "sealed"])
def test_a_record_nobody_logged_is_named_and_json_says_what_the_contract_says(settings, keys, anchor_dir, sealed):
    """A record dated within the log's span that no leaf names (forged, or written while its
    seal failed) is reported; one older than every logged record is only counted."""
    from django.db import transaction
    from django.utils import timezone

    configure(settings, keys, anchor_dir, sealed=sealed)
    now = timezone.now()
    old = SecurityEvent.objects.create(created_at=now - timedelta(days=2), kind="db_error", severity="error")
    if sealed:  # sealed as it would have been when written
        sealing.prepare("default")
        with transaction.atomic():
            sealing.seal("default", {"event": [old.pk]})
    checkpoint()
    forged = SecurityEvent.objects.create(created_at=now - timedelta(days=1), kind="db_error", severity="error")
    older = SecurityEvent.objects.create(created_at=now - timedelta(days=3), kind="db_error", severity="error")
    report = public_verify(keys, expect_ok=False)
    assert set(report) >= {"ok", "checkpoints", "records", "problems"} and report["ok"] is False
    assert all(set(p) >= {"kind", "id"} for p in report["problems"])
    assert found(report) == {("unlogged", "event", str(forged.pk))}
    assert report["not_covered"] == 1 and str(older.pk) not in json.dumps(report["problems"])


# --- anchors: a database restored or truncated shows ----------------------------------------------


def backup():
    """A copy of the audit trail as it is now (SQLite: the database file; PostgreSQL: its tables)."""
    connections.close_all()
    if connection.vendor == "sqlite":
        name = connection.settings_dict["NAME"]
        shutil.copyfile(name, f"{name}.backup")
        return name
    tables = [m._meta.db_table for m in (Checkpoint, LogLeaf, Seal, SecurityEvent, RequestReads, LogEntry)]
    tables += ["gql_audit_sealchain", "gql_audit_sealcounter", "gql_audit_logcursor", "gql_audit_readobject"]
    params = connection.get_connection_params()
    env = {**os.environ, "PGPASSWORD": str(params.get("password") or os.environ.get("PGPASSWORD", ""))}
    args = ["-h", str(params.get("host") or "127.0.0.1"), "-p", str(params.get("port") or 5432)]
    args += ["-U", str(params.get("user")), "-d", str(params["dbname"])]
    dump = subprocess.run(
        ["pg_dump", "--data-only", *args, *(f"--table={t}" for t in tables)],
        env=env,
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    return (args, env, tables, dump)


def restore(saved):
    """The trail put back as it was at :func:`backup`, as an operator restoring a backup would."""
    connections.close_all()
    if connection.vendor == "sqlite":
        shutil.copyfile(f"{saved}.backup", saved)
        return
    args, env, tables, dump = saved
    sql(f"TRUNCATE {', '.join(tables)}")
    subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", *args], input=dump, env=env, check=True, timeout=120)


def test_a_database_restored_to_an_older_state_fails_against_the_anchor(client, users, logged, keys, anchor_dir):
    traffic(client, users)
    checkpoint()
    saved = backup()
    traffic(client, users, prefix="later")
    time.sleep(1)
    checkpoint()
    anchor = f"file://{anchor_dir}/"
    assert len(list(anchor_dir.iterdir())) == 2
    assert public_verify(keys, "--anchor", anchor)["ok"]
    restore(saved)
    # On its own the restored database checks: it is an older, honest state.
    assert public_verify(keys)["ok"]
    report = public_verify(keys, "--anchor", anchor, expect_ok=False)
    assert [p["what"] for p in report["problems"]] == ["behind the anchor"], report
    assert report["anchored"]["tree_size"] > report["newest_checkpoint"]["tree_size"]


def test_a_truncated_log_and_a_rewritten_one_fail_against_the_anchor(client, users, logged, keys, anchor_dir):
    traffic(client, users)
    checkpoint()
    traffic(client, users, prefix="later")
    time.sleep(1)
    checkpoint()
    anchor = f"file://{anchor_dir}/"
    newest = Checkpoint.objects.order_by("-tree_size").first()
    first_size = Checkpoint.objects.order_by("tree_size").first().tree_size
    # The newest checkpoint, the leaves it added and their records, deleted.
    for leaf in LogLeaf.objects.filter(index__gte=first_size).exclude(kind="purge"):
        model = sealing.record_kinds()[leaf.kind].model
        model._default_manager.filter(pk=leaf.record_id).delete()
    LogLeaf.objects.filter(index__gte=first_size).delete()
    Checkpoint.objects.filter(pk=newest.pk).delete()
    assert public_verify(keys)["ok"]  # a log that stops early is still a log
    assert "behind the anchor" in [
        p["what"] for p in public_verify(keys, "--anchor", anchor, expect_ok=False)["problems"]
    ]


def test_anchors_are_never_overwritten(client, users, logged, keys, anchor_dir):
    from gql_audit.evidence.anchors import FileAnchor

    traffic(client, users)
    checkpoint()
    (written,) = anchor_dir.iterdir()
    stored = Checkpoint.objects.get()
    assert written.read_text() == stored.note and written.name == FileAnchor.name(stored.tree_size, stored.created_at)
    assert written.stat().st_mode & 0o222 == 0  # read-only
    anchor = FileAnchor(f"file://{anchor_dir}/")
    anchor.write(stored.note, stored.tree_size, stored.created_at)  # the same again: nothing to do
    from gql_audit.evidence.anchors import AnchorError

    with pytest.raises(AnchorError, match="nothing was overwritten"):
        anchor.write(stored.note.replace(ORIGIN, "other.example"), stored.tree_size, stored.created_at)
    assert written.read_text() == stored.note


def test_an_anchor_that_cannot_be_written_is_reported_and_the_checkpoint_kept(client, users, settings, keys, tmp_path):
    configure(settings, keys, tmp_path / "missing")
    traffic(client, users)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("gql_audit_checkpoint", stdout=out, stderr=out)
    assert "anchor not written" in out.getvalue() and Checkpoint.objects.count() == 1


# --- the checkpointer --------------------------------------------------------------------------------


def test_every_writes_checkpoints_while_no_request_arrives(users, logged, keys, anchor_dir, tmp_path, settings):
    """``gql_audit_checkpoint --every 1s`` as its own process: a heartbeat each second, the
    same size, no request needed."""
    post_graphql(
        __import__("django.test", fromlist=["Client"]).Client(), "{ documents { title } }", token=make_token("alice")
    )
    env = command_env(tmp_path, settings)
    process = subprocess.Popen(
        [sys.executable, "-m", "django", "gql_audit_checkpoint", "--every", "1s"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while Checkpoint.objects.count() < 4 and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0]
    assert process.returncode == 0, output
    times = list(Checkpoint.objects.order_by("created_at").values_list("tree_size", "created_at"))
    assert len(times) >= 4, output
    assert len({size for size, _ in times}) == 1 and times[0][0] > 0  # nothing new: the same tree, again
    assert all(later > earlier for (_, earlier), (_, later) in zip(times, times[1:], strict=False))
    assert public_verify(keys)["ok"]


def test_the_web_processes_run_with_no_access_to_the_signing_key(client, users, settings, keys, anchor_dir, tmp_path):
    """The signing key's path names nothing the service can read: requests are served and
    sealed, system checks pass, and nothing in the request path opens that path (an audit
    hook watches every open); only the checkpointer needs it, and says so."""
    configure(settings, keys, anchor_dir)
    unreadable = tmp_path / "not-here" / "signing.pem"
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "CHECKPOINTS": {**settings.GQL_AUDIT["CHECKPOINTS"], "signing_key": str(unreadable)},
    }
    from django.core import checks

    assert [e for e in checks.run_checks() if e.id.startswith("gql_audit.")] == []
    opened: list[str] = []
    watching = [True]

    def hook(event, args):
        if watching[0] and event == "open" and args and str(args[0]).startswith(str(unreadable.parent)):
            opened.append(str(args[0]))

    sys.addaudithook(hook)
    try:
        traffic(client, users)
        response = post_graphql(client, "{ documents { title } }", token=make_token("alice"))
        assert response.status_code == 200 and "errors" not in response.json()
    finally:
        watching[0] = False
    assert opened == []
    assert Seal.objects.exists()
    with pytest.raises(CommandError, match="cannot read the signing key"):
        call_command("gql_audit_checkpoint")


def test_a_rotated_signing_key_verifies_beside_the_old_one(client, users, settings, keys, anchor_dir, tmp_path):
    configure(settings, keys, anchor_dir)
    traffic(client, users)
    checkpoint()
    new_private, new_public, _ = write_key(tmp_path, "next")
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "CHECKPOINTS": {
            **settings.GQL_AUDIT["CHECKPOINTS"],
            "signing_key": str(new_private),
            "public_keys": [str(keys[1]), str(new_public)],
        },
    }
    traffic(client, users, prefix="after")
    time.sleep(1)
    checkpoint()
    key_ids = list(Checkpoint.objects.order_by("created_at").values_list("key_id", flat=True))
    assert len(set(key_ids)) == 2  # each checkpoint says which key signed it
    out = io.StringIO()
    call_command(
        "gql_audit_verify",
        "--public-key",
        str(keys[1]),
        "--public-key",
        str(new_public),
        "--format",
        "json",
        stdout=out,
    )
    assert json.loads(out.getvalue())["ok"]
    # The old key alone: the new checkpoint is unknown, and the leaves only it signs are not vouched for.
    report = public_verify(keys, expect_ok=False)
    assert {p["what"] for p in report["problems"]} == {"unknown key", "inserted"}


def test_the_checkpointer_admits_no_record_of_a_forged_seal(client, users, logged, keys):
    traffic(client, users)
    event = SecurityEvent.objects.get(request_id="r-3")
    seal = next(s for s in Seal.objects.all() if any(e[:2] == ["event", str(event.pk)] for e in s.entries))
    entries = [[*e[:2], "0" * 64, *e[3:]] if e[:2] == ["event", str(event.pk)] else e for e in seal.entries]
    Seal.objects.filter(chain=seal.chain, seq=seal.seq).update(entries=entries)
    out = io.StringIO()
    with pytest.raises(CommandError):
        call_command("gql_audit_checkpoint", stdout=out, stderr=out)
    assert f"seal forged: chain {seal.chain}, position {seal.seq}" in out.getvalue()
    assert not LogLeaf.objects.filter(kind="event", record_id=str(event.pk)).exists()
    assert LogLeaf.objects.exists() and Checkpoint.objects.count() == 1  # the others are logged
    with pytest.raises(CommandError, match="not in the log"):
        call_command("gql_audit_prove", f"event:{event.pk}")


def test_the_checkpointer_will_not_extend_a_log_whose_newest_checkpoint_does_not_check(client, users, logged, keys):
    traffic(client, users)
    checkpoint()
    stored = Checkpoint.objects.get()
    Checkpoint.objects.filter(pk=stored.pk).update(note=stored.note.replace("\n", " \n", 1))
    with pytest.raises(CommandError, match="does not check"):
        checkpoint()
    # A leaf gone and the tree's edge stored beside the checkpoint rewritten: the edge cannot
    # be built again from the leaves (with the edge intact, the log goes on: verification names the leaf).
    LogLeaf.objects.filter(index=0).delete()
    Checkpoint.objects.filter(pk=stored.pk).update(note=stored.note, frontier=["00" * 32] * len(stored.frontier))
    with pytest.raises(CommandError, match="does not match the leaves"):
        checkpoint()
    assert Checkpoint.objects.count() == 1


@pytest.mark.parametrize("store", ["gql_audit", "auditlog"])
def test_without_seals_the_checkpointer_logs_what_is_stored(client, users, settings, keys, anchor_dir, store):
    configure(settings, keys, anchor_dir, store=store, sealed=False)
    traffic(client, users)
    checkpoint()
    traffic(client, users, prefix="s")
    time.sleep(1)
    checkpoint()
    logged_ids = set(LogLeaf.objects.values_list("kind", "record_id"))
    assert ("event", str(SecurityEvent.objects.get(request_id="s-3").pk)) in logged_ids
    assert LogLeaf.objects.count() == len(logged_ids)  # each record once
    assert public_verify(keys)["ok"]
    event = SecurityEvent.objects.get(request_id="r-3")
    SecurityEvent.objects.filter(pk=event.pk).update(message="nothing happened")
    assert ("edited", "event", str(event.pk)) in found(public_verify(keys, expect_ok=False))


def test_checkpoints_settings_are_checked(settings, keys, tmp_path):
    from django.core import checks

    def errors(value):
        settings.GQL_AUDIT = {**settings.GQL_AUDIT, "CHECKPOINTS": value}
        return [e.msg for e in checks.run_checks() if e.id == "gql_audit.E031"]

    good = {"origin": ORIGIN, "signing_key": "/nowhere.pem", "public_keys": [str(keys[1])]}
    assert errors(good) == [] and errors(None) == []
    assert errors({**good, "origin": "two words"})
    assert errors({**good, "interval": "5m"})  # minutes or months?
    assert errors({**good, "public_keys": [str(keys[0])]})  # a private key is no public key
    assert errors({**good, "public_keys": [str(tmp_path / "missing.pem")]})
    assert errors({**good, "anchors": ["s3://bucket/"]})
    assert errors({**good, "colour": "blue"})


def purge_beside_checkpointer(*args):
    """``gql_audit_purge`` in a thread, and the checkpointer running beside it until it ends:
    the purge waits for the log to take its own record before it deletes anything."""
    import threading

    out = io.StringIO()
    errors = []

    def run():
        try:
            call_command("gql_audit_purge", *args, "--wait", "60s", stdout=out)
        except BaseException as exc:  # noqa: BLE001 - raised again below, in the test's thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    while thread.is_alive():
        time.sleep(1.05)
        checkpoint()
    thread.join()
    if errors:
        raise errors[0]
    return out.getvalue()


def test_a_purge_waits_for_the_log_and_deletes_nothing_without_it(client, users, logged, keys):
    traffic(client, users)
    with pytest.raises(CommandError, match="nothing was deleted"):
        call_command("gql_audit_purge", "--older-than", "1s", "--wait", "2s", stdout=io.StringIO())
    assert SecurityEvent.objects.filter(request_id="r-3").exists()


def sealed_event(age: timedelta, **fields):
    """A ``db_error`` event dated ``age`` ago, sealed as its write would have sealed it."""
    from django.db import transaction
    from django.utils import timezone

    event = SecurityEvent.objects.create(created_at=timezone.now() - age, kind="db_error", severity="error", **fields)
    sealing.prepare("default")
    with transaction.atomic():
        sealing.seal("default", {"event": [event.pk]})
    return event


def test_a_purge_removes_only_the_oldest_of_each_kind_and_verification_still_passes(client, users, logged, keys):
    from gql_audit.evidence.verify import verify

    LogEntry.objects.all().delete()  # the fixtures' own, written before sealing began
    oldest = [sealed_event(timedelta(days=3), request_id=f"old-{n}") for n in range(3)]
    checkpoint()
    traffic(client, users, prefix="new")
    time.sleep(1)
    checkpoint()
    # Logged after the new records, though dated long before them: kept, so that what goes is a prefix.
    late = sealed_event(timedelta(days=2), request_id="late")
    time.sleep(1)
    checkpoint()
    output = purge_beside_checkpointer("--older-than", "1d")
    assert output.index("Logged.") < output.index("security events: deleted 3 of 3")
    assert not SecurityEvent.objects.filter(pk__in=[e.pk for e in oldest]).exists()
    assert SecurityEvent.objects.filter(pk=late.pk).exists()
    time.sleep(1)
    checkpoint()
    report = public_verify(keys)
    assert report["ok"] and [(r["kind"], r["records"]) for r in report["purged"]] == [("event db_error", 3)]
    assert verify().problems == []
    # Records deleted that are not the oldest of their kind, or newer than any purge: deleted, not purged.
    newer = SecurityEvent.objects.get(request_id="new-3")
    cron = SecurityEvent.objects.get(message="from a cron job")
    SecurityEvent.objects.filter(pk__in=[newer.pk, cron.pk]).delete()
    problems = found(public_verify(keys, expect_ok=False))
    assert {("deleted", "event", str(newer.pk)), ("deleted", "event", str(cron.pk))} <= problems
