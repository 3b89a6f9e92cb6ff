"""Evidence: what seals and signed checkpoints cost, against the goals of docs/performance.md.

    BENCH_DB=postgres PGHOST=... python bench/evidence.py request [--objects 20] [--rounds 15] [--requests 40]
    BENCH_DB=postgres PGHOST=... python bench/evidence.py log [--records 1000000] [--batches 5]

``request``: a page of ``--objects`` records read through the full Django WSGI stack,
``TAMPER_EVIDENCE`` and ``CHECKPOINTS`` on (a checkpointer process running beside it,
``gql_audit_checkpoint --every``) against the same service with neither, the two
taking turns request by request in one process; the median round's ratio.

``log``: a trail of ``--records`` reads rows (a 20-object page each), each sealed as a
request seals it, written in ``--batches`` batches. After each batch the checkpointer
logs and signs what is new (records per second); then ``gql_audit_verify
--public-key`` checks the whole trail (seconds, several runs), and one record's
inclusion proof is made and checked offline (hashes, microseconds).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from harness import ROOT, audited_handler, environ, measure_rounds, settings_db, with_settings  # noqa: I001

SEAL_KEY = "benchmark sealing key, long enough for HMAC-SHA256"
ORIGIN = "bench.example/audit"


def keys(directory: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    private_path, public_path = directory / "log.pem", directory / "log.pub.pem"
    private_path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    public_path.write_bytes(
        private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private_path, public_path


def checkpoints_setting(directory: Path) -> dict[str, Any]:
    private_path, public_path = keys(directory)
    anchor = directory / "anchor"
    anchor.mkdir(exist_ok=True)
    return {
        "origin": ORIGIN,
        "signing_key": str(private_path),
        "public_keys": [str(public_path)],
        "interval": "60s",
        "anchors": [f"file://{anchor}/"],
    }


# --- request overhead ------------------------------------------------------------------------------


def request(args: argparse.Namespace) -> None:
    from django.db import connection

    from bench.models import Record
    from bench.schema import RECORD_FIELDS

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    Record.objects.bulk_create(
        Record(
            name=f"name {i}",
            email=f"u{i}@example.org",
            phone=f"+1 555 {i:04}",
            city="Lisbon",
            country="PT",
            status="active",
            score=i,
        )
        for i in range(args.objects)
    )
    directory = Path(tempfile.mkdtemp(prefix="gql-audit-bench-"))
    checkpoints = checkpoints_setting(directory)
    audited = audited_handler()

    def configured(sealed: bool) -> Any:
        overrides = {"ACCESS_STORE": "gql_audit"}
        if sealed:
            overrides.update(TAMPER_EVIDENCE={"key": SEAL_KEY}, CHECKPOINTS=checkpoints)
        return with_settings(audited, overrides)

    checkpointer = start_checkpointer(connection, checkpoints, args.every)
    query = "{ records { %s } }" % RECORD_FIELDS
    try:
        samples = measure_rounds(
            {
                "neither": (configured(False), environ("/records/audit/", query)),
                "TAMPER_EVIDENCE + CHECKPOINTS": (configured(True), environ("/records/audit/", query)),
            },
            args.rounds,
            args.requests,
            warmup=10,
            interleave=True,
        )
    finally:
        checkpointer.terminate()
        output = checkpointer.communicate(timeout=60)[0]
    ratios = [s / n for s, n in zip(samples["TAMPER_EVIDENCE + CHECKPOINTS"], samples["neither"], strict=True)]
    ran = output.count("Checkpoint ")
    print(
        f"evidence request overhead ({connection.vendor}, {settings_db()}): {args.objects} objects, "
        f"{args.rounds} rounds x {args.requests} requests; checkpointer every {args.every}, {ran} checkpoints"
    )
    for name, values in samples.items():
        print(f"  {name:<32} {statistics.median(values) * 1e3:8.3f} ms/request (median round)")
    print(
        f"  ratio (goal <= 1.10): median {statistics.median(ratios):.3f}, rounds {min(ratios):.3f} - {max(ratios):.3f}"
    )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


def start_checkpointer(connection: Any, checkpoints: dict[str, Any], every: str) -> subprocess.Popen[str]:
    """``gql_audit_checkpoint --every`` as a process of its own, on the benchmark's database."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_service"), str(ROOT / "bench")]),
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "GQA_BENCH_DB_NAME": str(connection.settings_dict["NAME"]),
        "GQA_BENCH_GQL_AUDIT": json.dumps({"TAMPER_EVIDENCE": {"key": SEAL_KEY}, "CHECKPOINTS": checkpoints}),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "django", "gql_audit_checkpoint", "--every", every],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


# --- the log at scale -------------------------------------------------------------------------------


def fill(count: int, start: int, chains: list[Any], key: bytes, kid: str) -> None:
    """``count`` reads rows (20 objects each, no two requests the same objects), each
    sealed in a seal of its own as a request seals it
    (the same functions ``gql_audit.evidence.sealing.append`` uses), round robin over ``chains``."""
    from django.db import connection
    from django.utils import timezone

    from gql_audit.evidence import sealing
    from gql_audit.models import RequestReads, Seal, SealChain

    kind = sealing.record_kinds()[sealing.READS]
    shapes = [{"fields": ["city", "country", "email", "name", "phone", "score", "status"], "paths": ["records"]}]
    batch = 5000
    for offset in range(0, count, batch):
        rows, seals = [], []
        now = timezone.now()
        for n in range(offset, min(count, offset + batch)):
            row = RequestReads(
                id=uuid.uuid4(),
                at=now,
                request_id=f"bench-{start + n}",
                actor_id="1",
                actor={"id": 1, "username": "alice"},
                remote_addr="127.0.0.1",
                operation={"type": "query", "name": None, "sha256": "0" * 64},
                context={"database": {"vendor": connection.vendor, "alias": "default"}},
                # Each request reads objects of its own; its actor, operation and page shape
                # are those of many others.
                keys=[f"bench.record:{(start + n) * 20 + i}" for i in range(20)],
                shape_of=[0] * 20,
                shapes=shapes,
            )
            rows.append(row)
            chain = chains[n % len(chains)]
            seq, previous = chain["head"]
            seq += 1
            entries = [sealing.entry_for(kind, kind.row_of(row))]
            seal_mac = sealing.mac(
                key, *sealing.seal_text(chain["row"].chain, seq, previous, sealing._plain(now), kid, entries)
            )
            seals.append(
                Seal(
                    chain=chain["row"].chain,
                    seq=seq,
                    at=now,
                    key_id=kid,
                    entries=entries,
                    previous=previous,
                    mac=seal_mac,
                )
            )
            chain["head"] = (seq, seal_mac)
        RequestReads.objects.bulk_create(rows)
        Seal.objects.bulk_create(seals)
    for chain in chains:
        row = chain["row"]
        row.head_seq, row.head_mac = chain["head"]
        row.mac = sealing.mac(key, *sealing.chain_text(row))
        SealChain.objects.filter(chain=row.chain).update(head_seq=row.head_seq, head_mac=row.head_mac, mac=row.mac)


def log(args: argparse.Namespace) -> None:
    import io

    from django.core.management import call_command
    from django.db import connection, transaction
    from django.utils import timezone

    from gql_audit.conf import conf
    from gql_audit.evidence import log as evidence_log
    from gql_audit.evidence import sealing, verify_proof
    from gql_audit.models import LogLeaf, RequestReads

    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    directory = Path(tempfile.mkdtemp(prefix="gql-audit-bench-"))
    checkpoints = checkpoints_setting(directory)
    conf._cache["TAMPER_EVIDENCE"] = {"key": SEAL_KEY}
    conf._cache["CHECKPOINTS"] = checkpoints
    sealing.forget()
    kid, key = sealing.current_key()
    chains = []
    for _ in range(8):  # eight writers
        with transaction.atomic():
            started = sealing._start("default", timezone.now(), kid, key)
        chains.append({"row": started.row, "head": started.head})
    signer = evidence_log.read_signing_key(checkpoints["signing_key"])
    public = evidence_log.read_public_keys(ORIGIN, checkpoints["public_keys"])
    per_batch = args.records // args.batches
    rates = []
    for number in range(args.batches):
        begun = time.perf_counter()
        fill(per_batch, number * per_batch, chains, key, kid)
        filled = time.perf_counter() - begun
        begun = time.perf_counter()
        done = evidence_log.append("default", signer, ORIGIN, public)
        elapsed = time.perf_counter() - begun
        assert not done.refused, done.refused[:3]
        rates.append(done.appended / elapsed)
        print(
            f"  batch {number + 1}: {per_batch} records written and sealed in {filled:.1f} s; "
            f"logged and signed {done.appended} in {elapsed:.2f} s = {rates[-1]:,.0f} records/s"
        )
        time.sleep(1)  # a checkpoint's time has one-second resolution
    total = LogLeaf.objects.count()
    print(f"evidence log benchmark ({connection.vendor}, {settings_db()}): {total} records in {args.batches} batches")
    print(
        f"  checkpointer (goal >= 20,000 records/s): median {statistics.median(rates):,.0f}/s, "
        f"batches {min(rates):,.0f} - {max(rates):,.0f}/s"
    )
    times = []
    for _ in range(args.verify_runs):
        out = io.StringIO()
        begun = time.perf_counter()
        call_command("gql_audit_verify", "--public-key", checkpoints["public_keys"][0], "--format", "json", stdout=out)
        times.append(time.perf_counter() - begun)
        report = json.loads(out.getvalue())
        assert report["ok"] and report["records"] == total, report["problems"][:3]
    print(
        f"  gql_audit_verify --public-key over {total} records (goal <= 60 s): "
        f"median {statistics.median(times):.1f} s, runs {min(times):.1f} - {max(times):.1f} s"
    )
    record = RequestReads.objects.order_by("?").first()
    begun = time.perf_counter()
    proof = evidence_log.prove("reads", str(record.pk), "default")
    made = time.perf_counter() - begun
    pem = Path(checkpoints["public_keys"][0]).read_text()
    checks = []
    for _ in range(1000):
        begun = time.perf_counter()
        verify_proof(proof, pem)
        checks.append(time.perf_counter() - begun)
    print(
        f"  inclusion proof in a tree of {proof['tree_size']}: {len(proof['proof'])} hashes "
        f"({len(json.dumps(proof))} bytes of JSON), made in {made:.2f} s; checked offline (goal <= 5 ms): "
        f"median {statistics.median(checks) * 1e3:.3f} ms, p99 {sorted(checks)[989] * 1e3:.3f} ms"
    )
    connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("request")
    one.add_argument("--objects", type=int, default=20)
    one.add_argument("--rounds", type=int, default=15)
    one.add_argument("--requests", type=int, default=40)
    one.add_argument("--every", default="10s", help="the checkpointer's interval during the run")
    two = sub.add_parser("log")
    two.add_argument("--records", type=int, default=1_000_000)
    two.add_argument("--batches", type=int, default=5)
    two.add_argument("--verify-runs", type=int, default=3)
    args = parser.parse_args()
    request(args) if args.what == "request" else log(args)


if __name__ == "__main__":
    main()
