"""``CHECKPOINTS``: every record appended to an append-only Merkle tree, and the tree signed.

``gql_audit_checkpoint`` runs :func:`append`: in one transaction it appends every record
not yet logged to the tree (:class:`~gql_audit.models.LogLeaf`, hashed as RFC 6962 does),
then signs a checkpoint (:class:`~gql_audit.models.Checkpoint`, a C2SP signed note) of the
new size and root, also when nothing new was written (a heartbeat: a gap in the
checkpoints' times shows when the log stopped). Only that command reads the signing key.

Which records are new:

- with ``TAMPER_EVIDENCE`` on, those listed by seals the log has not taken yet, chain
  by chain from where it stopped (:class:`~gql_audit.models.LogCursor`). Each seal is
  checked by its HMAC first: a seal that does not check, or does not follow the one
  before it, is reported and its records are not admitted. A record's leaf carries the
  digest its seal made when it was written;
- otherwise, records dated since shortly before the newest checkpoint (``SCAN_MARGIN``)
  that no leaf names, digested as they are stored.

A leaf is the JSON text of ``{"kind", "id", "at", "actor", "digest", "type"}``: which
record, when, whose, the SHA-256 of its stored content and its event kind (or
``access``, ``change``, ``reads``). With the public key alone an auditor can check
that every logged record is still stored, unchanged.
"""

from __future__ import annotations

import datetime
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connections, transaction
from django.db.models import F
from django.utils import timezone

from gql_audit.conf import conf
from gql_audit.durations import parse_duration
from gql_audit.evidence import merkle, note, sealing, seals
from gql_audit.models import Checkpoint, LogCursor, LogLeaf, Seal, SealChain, SealCounter

#: The :class:`~gql_audit.models.SealCounter` row a run of the checkpointer locks (value:
#: the tree's size): two checkpointers never extend the tree at once.
LOG = "log"
#: Without seals, records dated this long before the newest checkpoint are looked at again:
#: a record committed later than that after its own time is not logged.
SCAN_MARGIN = datetime.timedelta(minutes=5)
DEFAULT_INTERVAL = "60s"
#: Leaves inserted per statement at most.
BATCH = 5000
#: Kinds of leaf that name a record (the others name what a purge removed).
RECORD_KINDS = (sealing.READS, sealing.ENTRY, sealing.EVENT)
#: Keys of ``CHECKPOINTS``.
SETTING_KEYS = ("origin", "signing_key", "public_keys", "interval", "anchors")


class LogError(Exception):
    """The log cannot be extended or proved from: what the database holds does not check."""


@dataclass(frozen=True)
class LogSettings:
    """``CHECKPOINTS``, checked."""

    origin: str
    signing_key: str | None
    public_keys: tuple[str, ...]
    interval: datetime.timedelta
    anchors: tuple[str, ...]


def parse_settings(value: Any) -> LogSettings | None:
    """``CHECKPOINTS`` as :class:`LogSettings` (None when off); ValueError saying what is wrong."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError("must be None or a dict with 'origin', 'signing_key', 'public_keys', 'interval', 'anchors'")
    unknown = sorted(set(value) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"has an unknown key {unknown[0]!r}")
    origin = value.get("origin")
    if not isinstance(origin, str) or not note.valid_name(origin):
        raise ValueError("['origin'] must be a name with no spaces and no '+', such as 'example.com/audit'")
    signing_key = value.get("signing_key")
    if signing_key is not None and not isinstance(signing_key, (str, Path)):
        raise ValueError("['signing_key'] must be the path of an Ed25519 private key (PEM)")
    public_keys = value.get("public_keys") or ()
    if isinstance(public_keys, (str, Path)) or not all(isinstance(p, (str, Path)) for p in public_keys):
        raise ValueError("['public_keys'] must be a list of paths of Ed25519 public keys (PEM)")
    interval = parse_duration(value.get("interval", DEFAULT_INTERVAL), "['interval']")
    anchors = value.get("anchors") or ()
    if isinstance(anchors, str) or not all(isinstance(a, str) for a in anchors):
        raise ValueError("['anchors'] must be a list of URLs")
    return LogSettings(
        origin,
        None if signing_key is None else str(signing_key),
        tuple(map(str, public_keys)),
        interval,
        tuple(anchors),
    )


def log_settings() -> LogSettings | None:
    """The ``CHECKPOINTS`` setting, checked (system check ``gql_audit.E031`` reports it malformed)."""
    return parse_settings(conf.CHECKPOINTS)


def read_public_keys(origin: str, paths: tuple[str, ...] | list[str]) -> list[note.PublicKey]:
    """The public keys in the PEM files ``paths``, each signing under ``origin``."""
    keys = []
    for path in paths:
        try:
            pem = Path(path).read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read public key {path}: {exc.strerror}") from None
        try:
            keys.append(note.public_key(origin, note.load_public_key(pem)))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
    return keys


def read_signing_key(path: str) -> Ed25519PrivateKey:
    try:
        pem = Path(path).read_bytes()
    except OSError as exc:
        raise ValueError(f"cannot read the signing key {path}: {exc.strerror}") from None
    try:
        return note.load_private_key(pem)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None


# --- leaves ---------------------------------------------------------------------------------


def leaf_text(kind: str, record_id: str, at: Any, actor: Any, digest: Any, type_: Any) -> str:
    """The text of a leaf: one JSON object, keys sorted, ASCII (its UTF-8 is what is hashed)."""
    data = {"kind": kind, "id": record_id, "at": at, "actor": actor, "digest": digest, "type": type_}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


#: A new leaf: ``(kind, record id, type, time as text, leaf text)``.
NewLeaf = tuple[str, str, str, Any, str]


def leaf_of_entry(entry: list[Any]) -> NewLeaf:
    """The leaf of a seal's entry (``[kind, pk, digest, subkind, actor, time]``; a purge's
    ``[purge, scope, cutoff, ...]``)."""
    kind, pk, digest, subkind, actor, at = entry[:6]
    if kind == sealing.PURGE:
        return (
            sealing.PURGE,
            str(pk),
            sealing.PURGE,
            digest,
            leaf_text(sealing.PURGE, str(pk), digest, None, None, sealing.PURGE),
        )
    return str(kind), str(pk), str(subkind), at, leaf_text(str(kind), str(pk), at, actor, digest, subkind)


def read_leaf(text: Any) -> dict[str, Any] | None:
    """A stored leaf's fields, or None when it is not a leaf gql_audit writes."""
    try:
        data = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or set(data) != {"kind", "id", "at", "actor", "digest", "type"}:
        return None
    return data if isinstance(data["kind"], str) and isinstance(data["id"], str) else None


def leaf_hashes(using: str, size: int) -> Iterator[tuple[int, Any]]:
    """``(index, text)`` of the leaves ``0 .. size - 1`` as stored, by index."""
    return stored_leaves(using, size)


def stored_leaves(using: str, size: int | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, text)`` of every stored leaf (below ``size``), by index, read with one
    statement in batches, unconverted (a million of them are read for one verification)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    sql = f"SELECT {quote('index')}, {quote('leaf')} FROM {quote(LogLeaf._meta.db_table)}"
    params: list[Any] = []
    if size is not None:
        sql += f" WHERE {quote('index')} < %s"
        params.append(size)
    sql += f" ORDER BY {quote('index')}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(BATCH):
            yield from rows


# --- appending and signing ---------------------------------------------------------------------


@dataclass
class Run:
    """What one run of the checkpointer did."""

    checkpoint: Checkpoint
    appended: int
    #: Seals not admitted, and why (each also a line of the command's output).
    refused: list[str] = field(default_factory=list)


def newest(using: str) -> Checkpoint | None:
    """The checkpoint of the largest tree, the latest of those."""
    return Checkpoint.objects.using(using).order_by("-tree_size", "-created_at", "-id").first()


def append(using: str, signer: Ed25519PrivateKey, origin: str, keys: list[note.PublicKey], *, now: Any = None) -> Run:
    """Append every record not yet logged and sign a checkpoint of the tree, in one
    transaction (run it again after a serialization failure). ``keys``: the public keys
    checkpoints may be signed with (the signer's is added)."""
    now_aware = timezone.now()
    with transaction.atomic(using=using):
        _lock(using)
        last = newest(using)
        # The checkpoint's time is when its content is taken: what was sealed by then is in it.
        when = _time_after(last)
        signer_key = note.public_key(origin, signer.public_key())
        frontier = _resume(using, last, [signer_key, *keys])
        refused: list[str] = []
        if sealing.enabled():
            new, cursors = _from_seals(using, refused)
        else:
            since = last.created_at - SCAN_MARGIN if last is not None else None
            new, cursors = _from_tables(using, since, refused), {}
        # In time order: a purge, which removes the oldest records, then removes a prefix.
        new.sort(key=lambda leaf: (str(leaf[3]), leaf[0], leaf[1]))
        start = frontier.size
        rows = []
        for offset, (kind, record_id, type_, at, text) in enumerate(new):
            frontier.append(merkle.leaf_hash(text.encode()))
            rows.append((start + offset, kind, record_id[:255], type_[:32], seals.when(at, now_aware), text))
        _insert_leaves(using, rows)
        if cursors:
            LogCursor.objects.using(using).bulk_create(
                [LogCursor(chain=chain, seq=seq, mac=mac) for chain, (seq, mac) in cursors.items()],
                update_conflicts=True,
                unique_fields=["chain"],
                update_fields=["seq", "mac"],
                batch_size=BATCH,
            )
        text = note.checkpoint_text(origin, frontier.size, frontier.root(), when)
        checkpoint = Checkpoint.objects.using(using).create(
            created_at=when,
            tree_size=frontier.size,
            root_hash=frontier.root().hex(),
            key_id=signer_key.key_id.hex(),
            note=note.sign_note(text, origin, signer),
            frontier=[value.hex() for value in frontier.hashes()],
        )
        SealCounter.objects.using(using).filter(name=LOG).update(value=frontier.size)
    return Run(checkpoint, len(new), refused)


def _insert_leaves(using: str, rows: list[tuple[Any, ...]]) -> None:
    """``(index, kind, record_id, type, at, leaf)`` rows, appended: by ``COPY`` on
    PostgreSQL (several times faster than INSERTs for the backlog of a busy hour), else
    by ``INSERT``s of many rows."""
    if not rows:
        return
    connection = connections[using]
    names = ["index", "kind", "record_id", "type", "at", "leaf"]
    if connection.vendor == "postgresql":
        quote = connection.ops.quote_name
        columns = ", ".join(quote(name) for name in names)  # the fields' own names
        with connection.cursor() as cursor:
            driver = cursor.cursor
            if hasattr(driver, "copy"):  # psycopg 3
                with driver.copy(f"COPY {quote(LogLeaf._meta.db_table)} ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
                return
    leaves = [LogLeaf(**dict(zip(names, row, strict=True))) for row in rows]
    LogLeaf.objects.using(using).bulk_create(leaves, batch_size=BATCH)


def _lock(using: str) -> None:
    """Lock the log's counter row until the transaction ends (made on first use)."""
    counters = SealCounter.objects.using(using)
    if not counters.filter(name=LOG).update(value=F("value")):
        counters.bulk_create([SealCounter(name=LOG, value=0)], ignore_conflicts=True)
        counters.filter(name=LOG).update(value=F("value"))


def _time_after(last: Checkpoint | None) -> datetime.datetime:
    """Now, to the second (a checkpoint's time line), later than the newest checkpoint's."""
    now = timezone.now().replace(microsecond=0)
    if last is not None and isinstance(last.created_at, datetime.datetime) and now <= last.created_at:
        wait = (last.created_at - now).total_seconds() + 1
        if wait > 2:
            raise LogError(f"the newest checkpoint is dated {last.created_at:%Y-%m-%dT%H:%M:%SZ}, later than now")
        time.sleep(wait - (timezone.now() - now).total_seconds())
        now = last.created_at + datetime.timedelta(seconds=1)
    return now


def _resume(using: str, last: Checkpoint | None, keys: list[note.PublicKey]) -> merkle.Frontier:
    """The tree's right edge where the newest checkpoint left it, after checking that
    checkpoint's signature and that the edge folds to its root: a log whose newest
    checkpoint does not check is not extended (it would sign over what it cannot vouch for)."""
    if last is None:
        if LogLeaf.objects.using(using).exists():
            raise LogError("the log holds leaves but no checkpoint")
        return merkle.Frontier()
    try:
        signed = note.parse_checkpoint(note.open_note(last.note, keys)[0])
        frontier = merkle.Frontier(signed.size, [bytes.fromhex(h) for h in last.frontier])
    except (ValueError, TypeError) as exc:
        raise LogError(f"the newest checkpoint ({last.pk}) does not check: {exc}") from None
    if frontier.root() != signed.root:
        # The edge stored beside it was changed (the signed note was not): built again from
        # the leaves, which must make the signed root.
        frontier = merkle.Frontier()
        for _, text in leaf_hashes(using, signed.size):
            frontier.append(merkle.leaf_hash(text.encode("utf-8", "surrogatepass")))
        if frontier.size != signed.size or frontier.root() != signed.root:
            raise LogError(f"the newest checkpoint ({last.pk}) does not match the leaves stored before it")
    if LogLeaf.objects.using(using).filter(index__gte=signed.size).exists():
        raise LogError(f"the log holds leaves beyond its newest checkpoint ({signed.size})")
    return frontier


def _from_seals(using: str, refused: list[str]) -> tuple[list[NewLeaf], dict[str, tuple[int, str]]]:
    """The records listed by seals the log has not taken yet, chain by chain, each seal
    checked by its HMAC and its link to the one before; the new cursors."""
    keys, retired = sealing.keys(), sealing.retired()
    cursors = {c.chain: (c.seq, c.mac) for c in LogCursor.objects.using(using)}
    new: list[NewLeaf] = []
    #: Of chains the log has no cursor for: new ones, or ones whose cursor was deleted.
    unseen: list[NewLeaf] = []
    moved: dict[str, tuple[int, str]] = {}
    chains = (
        SealChain.objects.using(using)
        .order_by("number", "started_at")
        .values_list("chain", "head_seq", "base_seq", "base_mac")
    )
    for chain, head, base_seq, base_mac in chains:
        if not isinstance(head, int):
            continue  # not a head gql_audit wrote: gql_audit_verify reports the chain
        fresh = chain not in cursors
        done, known = cursors.get(chain, (base_seq, base_mac))
        # "": the seal logged last was refused, so the next one's link cannot be checked.
        follows: str | None = known or None
        if head <= done:
            continue
        expected: int = done + 1
        last = (done, known)
        rows = Seal.objects.using(using).filter(chain=chain, seq__gt=done, seq__lte=head)
        for seq, at, kid, previous, seal_mac, text in seals.seal_rows(rows).iterator(chunk_size=BATCH):
            if seq != expected:
                refused.append(f"seal missing: chain {chain}, positions {expected}-{seq - 1}")
                follows = None
            entries = seals.read_entries(text)
            wrong = seals.verdict(chain, seq, at, kid, previous, seal_mac, entries, keys, retired)
            if wrong is None and follows is not None and previous != follows:
                wrong = "seal forged (not after the seal before it)"
            if wrong is not None:
                refused.append(f"{wrong}: chain {chain}, position {seq}: its records are not logged")
            else:
                assert entries is not None  # checked by the HMAC
                leaves = [leaf_of_entry(e) for e in entries if isinstance(e, list) and len(e) in (6, 7)]
                (unseen if fresh else new).extend(leaves)
            follows, expected = (seal_mac if wrong is None else None), seq + 1
            last = (seq, seal_mac if wrong is None else "")
        if last[0] < head:
            refused.append(f"seal missing: chain {chain}, positions {last[0] + 1}-{head}")
        moved[chain] = last
    new.extend(_not_logged(using, unseen, refused))
    return new, moved


def _not_logged(using: str, leaves: list[NewLeaf], refused: list[str]) -> list[NewLeaf]:
    """``leaves`` less those of records the log holds already: a chain without a cursor is
    new, or its cursor was deleted, which would log its records twice."""
    found = []
    for start in range(0, len(leaves), BATCH):
        chunk = leaves[start : start + BATCH]
        logged: set[tuple[str, str]] = set()
        for kind in {leaf[0] for leaf in chunk}:
            ids = [leaf[1] for leaf in chunk if leaf[0] == kind]
            rows = LogLeaf.objects.using(using).filter(kind=kind, record_id__in=ids).values_list("record_id", flat=True)
            logged.update((kind, record_id) for record_id in rows)
        for leaf in chunk:
            if (leaf[0], leaf[1]) in logged:
                refused.append(f"logged already: {leaf[0]} {leaf[1]} (a seal chain's log cursor was missing)")
            else:
                found.append(leaf)
    return found


def _from_tables(using: str, since: datetime.datetime | None, refused: list[str]) -> list[NewLeaf]:
    """Records dated from ``since`` (all when None) that no leaf names, as they are stored."""
    new: list[NewLeaf] = []
    for name, kind in sealing.record_kinds().items():
        fields = [*kind.columns(), *([kind.actor] if kind.actor else [])]
        rows = kind.model._default_manager.using(using).order_by()
        if since is not None:
            rows = rows.filter(**{f"{kind.at}__gte": since})
        pk_name = kind.model._meta.pk.attname
        chunk: list[dict[str, Any]] = []
        for row in rows.values(*fields).iterator(chunk_size=BATCH):
            chunk.append(row)
            if len(chunk) >= BATCH:
                new.extend(_unlogged(using, name, kind, pk_name, chunk, refused))
                chunk = []
        new.extend(_unlogged(using, name, kind, pk_name, chunk, refused))
    return new


def _unlogged(
    using: str, name: str, kind: sealing.RecordKind, pk_name: str, rows: list[dict[str, Any]], refused: list[str]
) -> list[NewLeaf]:
    if not rows:
        return []
    ids = [str(row[pk_name]) for row in rows]
    logged = set(LogLeaf.objects.using(using).filter(kind=name, record_id__in=ids).values_list("record_id", flat=True))
    found = []
    for row, record_id in zip(rows, ids, strict=True):
        if record_id in logged:
            continue
        try:
            found.append(leaf_of_entry(sealing.entry_for(kind, row)))
        except (RecursionError, ValueError, TypeError):
            refused.append(f"unreadable: {name} {record_id} is not logged")
    return found


# --- proofs ---------------------------------------------------------------------------------------


def prove(kind: str, record_id: str, using: str) -> dict[str, Any]:
    """The inclusion proof of a record's leaf in the newest checkpoint: what
    ``gql_audit_prove`` prints. LookupError when the record is not in a checkpoint yet;
    :class:`LogError` when the stored leaves do not make the checkpoint's root."""
    leaf = LogLeaf.objects.using(using).filter(kind=kind, record_id=record_id).order_by("index").first()
    if leaf is None:
        raise LookupError(f"{kind}:{record_id} is not in the log (not yet checkpointed, or never written)")
    checkpoint = newest(using)
    if checkpoint is None or checkpoint.tree_size <= leaf.index:
        raise LookupError(f"{kind}:{record_id} is in the log, not yet in a checkpoint: run gql_audit_checkpoint")
    hashes: list[bytes] = []
    for index, text in leaf_hashes(using, checkpoint.tree_size):
        if index != len(hashes):
            raise LogError(f"the log has no leaf {len(hashes)}: run gql_audit_verify --public-key")
        hashes.append(merkle.leaf_hash(text.encode("utf-8", "surrogatepass")))
    signed = note.parse_checkpoint(checkpoint.note[: checkpoint.note.rfind("\n\n") + 1])
    if len(hashes) != checkpoint.tree_size or merkle.root(hashes) != signed.root:
        raise LogError("the log's leaves do not make its newest checkpoint's root: run gql_audit_verify --public-key")
    return {
        "checkpoint": checkpoint.note,
        "leaf": leaf.leaf,
        "leaf_index": leaf.index,
        "tree_size": checkpoint.tree_size,
        "proof": [value.hex() for value in merkle.inclusion_proof(leaf.index, hashes)],
    }
