"""``gql_audit_verify --public-key``: the log checked by someone who holds no secret.

With the log's Ed25519 public keys alone (no ``TAMPER_EVIDENCE`` key, no signing key):

1. every stored checkpoint's signature (a checkpoint no given key signed is reported;
   each says by its key ID which key signed it, so rotated keys verify side by side);
2. every checkpoint's root is the root of the first ``size`` leaves stored, so each
   tree extends the one before (RFC 6962 consistency: the log was only appended to);
3. every logged record is still stored, unchanged (its digest, time and actor), except
   the oldest of each kind that retention purged: a record missing after one of its kind
   that is still stored was deleted, not purged;
4. records dated within the log's span that no leaf names (``unlogged``);
5. with anchors, that the database's newest checkpoint is not older or smaller than the
   newest an anchor kept, and that the log still makes every anchored root (a
   consistency proof from the anchor's tree to the database's newest): a database rolled
   back or truncated is reported.

Heartbeats make silence visible: where no checkpoint was written for more than two
intervals, the report names the gap.
"""

from __future__ import annotations

import collections
import concurrent.futures
import datetime
import multiprocessing
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from django.db import connections
from django.utils import timezone

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import anchors, log, merkle, note, sealing, seals
from gql_audit.evidence.verify import CHUNK, Problem, StoredRecords, stored_keys
from gql_audit.models import Checkpoint, LogLeaf

#: Records dated within this before the newest checkpoint may not be logged yet: a
#: checkpoint holds what was sealed by its time, and a seal is written a moment after its records.
UNLOGGED_MARGIN = datetime.timedelta(minutes=1)
#: A leaf's ``type`` whose records retention never purges.
NEVER_PURGED = "change"


@dataclass(frozen=True)
class Signed:
    """A checkpoint whose signature verified."""

    ident: str
    size: int
    root: bytes
    time: datetime.datetime | None


@dataclass
class AuditReport:
    problems: list[Problem] = field(default_factory=list)
    checkpoints: int = 0
    checkpoints_valid: int = 0
    leaves: int = 0
    records: int = 0
    records_valid: int = 0
    requested: tuple[datetime.datetime | None, datetime.datetime | None] = (None, None)
    #: The oldest and newest time of the logged records found stored.
    found: tuple[datetime.datetime | None, datetime.datetime | None] = (None, None)
    #: ``"kind type" -> [records purged, newest purged record's time]``.
    purged: dict[str, list[Any]] = field(default_factory=dict)
    #: Times between which no checkpoint was written for more than two intervals.
    gaps: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)
    #: Records dated before the oldest logged record: not covered.
    not_covered: int = 0
    #: The time of the oldest logged record.
    began: datetime.datetime | None = None
    newest: Signed | None = None
    anchored: Signed | None = None
    #: Processes that read and digested the records beside the one walking the log (0: none).
    jobs: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def audit(
    public_keys: Iterable[Ed25519PublicKey],
    using: str = "default",
    *,
    since: datetime.datetime | None = None,
    anchor_urls: Iterable[str] = (),
    interval: datetime.timedelta | None = None,
    origin: str | None = None,
    all_logged: bool = False,
    jobs: int = 1,
) -> AuditReport:
    """Check the log, its checkpoints and the records it names with ``public_keys``.

    ``all_logged``: the log began before the first record was written, so a record no leaf
    names is reported however old it claims to be (otherwise one older than every logged
    record is only counted as not covered). ``jobs``: processes that read and digest the
    records while this one walks the log (see :class:`_Verdicts`)."""
    now = timezone.now()
    report = AuditReport(requested=(since, now))
    keys = list(public_keys)
    signed, origin = _checkpoints(report, keys, using, origin)
    report.newest = max(signed, key=lambda c: (c.size, c.time or now), default=None)
    kept = _anchored(report, keys, origin, anchor_urls)
    report.anchored = max(kept, key=lambda c: (c.size, c.time or now), default=None)
    _gaps(report, signed, interval, now)
    tree = _leaves(report, using, {c.size for c in [*signed, *kept]}, since, keep=bool(kept), jobs=jobs)
    for checkpoint in signed:
        _check_root(report, checkpoint, tree.roots, tree.size, "checkpoint")
    for checkpoint in kept:
        if checkpoint.size <= tree.size:  # a larger one: the database is behind (below)
            _check_root(report, checkpoint, tree.roots, tree.size, "anchor")
    if report.anchored is not None:
        _against_anchor(report, report.newest, report.anchored, tree)
    _twice(report, using)
    _unlogged(report, using, signed, since, all_logged)
    return report


# --- checkpoints ---------------------------------------------------------------------------------


def _open(text: Any, keys: list[Ed25519PublicKey], origin: str | None) -> note.Checkpoint:
    """A checkpoint's note, its signature checked; ValueError saying what is wrong."""
    if not isinstance(text, str):
        raise ValueError("not a note")
    first = text.split("\n", 1)[0]
    if origin is not None and first != origin:
        raise ValueError(f"origin {first!r} is not the log's ({origin!r})")
    if not note.valid_name(first):
        raise ValueError("origin is not a key name")
    body, _ = note.open_note(text, [note.public_key(first, key) for key in keys])
    return note.parse_checkpoint(body)


def _checkpoints(
    report: AuditReport, keys: list[Ed25519PublicKey], using: str, origin: str | None
) -> tuple[list[Signed], str | None]:
    signed: list[Signed] = []
    rows = Checkpoint.objects.using(using).order_by("tree_size", "created_at", "id")
    for pk, created_at, size, root_hash, text in rows.values_list(
        "id", "created_at", "tree_size", "root_hash", "note"
    ).iterator(chunk_size=CHUNK):
        report.checkpoints += 1
        ident = str(pk)
        try:
            checkpoint = _open(text, keys, origin)
        except ValueError as exc:
            what = "unknown key" if "no known key" in str(exc) else "checkpoint forged"
            report.problems.append(Problem(what, "checkpoint", ident, detail=str(exc)))
            continue
        origin = origin or checkpoint.origin
        report.checkpoints_valid += 1
        signed.append(Signed(ident, checkpoint.size, checkpoint.root, checkpoint.time))
        if (size, root_hash, created_at) != (checkpoint.size, checkpoint.root.hex(), checkpoint.time):
            # The note is what counts; its columns were changed beside it.
            report.problems.append(Problem("checkpoint edited", "checkpoint", ident, detail="columns beside the note"))
    by_time = sorted((c for c in signed if c.time is not None), key=lambda c: (c.time, c.size))
    for earlier, later in zip(by_time, by_time[1:], strict=False):
        if later.size < earlier.size:
            report.problems.append(
                Problem(
                    "checkpoint inconsistent",
                    "checkpoint",
                    later.ident,
                    detail=f"{later.size} leaves, after a checkpoint of {earlier.size} ({earlier.ident})",
                )
            )
    return signed, origin


def _anchored(
    report: AuditReport, keys: list[Ed25519PublicKey], origin: str | None, urls: Iterable[str]
) -> list[Signed]:
    kept: list[Signed] = []
    for url in urls:
        try:
            notes = anchors.kept(url)
        except (anchors.AnchorError, ValueError) as exc:
            report.problems.append(Problem("anchor unreadable", "anchor", url, detail=str(exc)))
            continue
        for number, text in enumerate(notes):
            try:
                checkpoint = _open(text, keys, origin)
            except ValueError as exc:
                report.problems.append(Problem("checkpoint forged", "anchor", f"{url}#{number}", detail=str(exc)))
                continue
            kept.append(Signed(f"{url}#{number}", checkpoint.size, checkpoint.root, checkpoint.time))
    return kept


def _gaps(
    report: AuditReport, signed: list[Signed], interval: datetime.timedelta | None, now: datetime.datetime
) -> None:
    """Where no checkpoint was written for more than two intervals, up to now: a
    checkpointer stopped, or checkpoints deleted (an anchor tells which)."""
    if interval is None:
        return
    times = sorted({c.time for c in signed if c.time is not None})
    if not times:
        return
    for earlier, later in zip(times, [*times[1:], now], strict=True):
        if later - earlier > 2 * interval:
            report.gaps.append((earlier, later))


# --- leaves and the records they name ----------------------------------------------------------


class _Tree(list[bytes]):
    """Leaf hashes as they stream by, and the roots at the sizes asked for."""

    def __init__(self, keep: bool) -> None:
        super().__init__()
        self.keep = keep
        self.frontier = merkle.Frontier()
        self.roots: dict[int, bytes] = {0: merkle.EMPTY_ROOT}

    @property
    def size(self) -> int:
        return self.frontier.size


def _leaves(
    report: AuditReport, using: str, sizes: set[int], since: datetime.datetime | None, keep: bool, jobs: int = 1
) -> _Tree:
    """Stream the leaves by index: the roots at ``sizes``, and each record checked."""
    tree = _Tree(keep)
    checker = _Records(report, using, since, _Verdicts.start(using, jobs))
    report.jobs = jobs if checker.verdicts.pool is not None else 0
    try:
        _walk(report, using, sizes, tree, checker)
    finally:
        checker.verdicts.close()
    newest = report.newest.size if report.newest is not None else 0
    if tree.size > newest:
        report.problems.append(
            Problem("inserted", "leaf", str(newest), detail=f"{tree.size - newest} leaves no checkpoint signs")
        )
    return tree


def _walk(report: AuditReport, using: str, sizes: set[int], tree: _Tree, checker: _Records) -> None:
    """The leaves by index into ``tree``, and their records to ``checker`` in batches."""
    batch: list[tuple[int, dict[str, Any] | None]] = []
    missing_reported = False
    for index, text in log.stored_leaves(using):
        if index != tree.size:
            if not missing_reported:
                detail = f"leaf {tree.size} missing" if index > tree.size else "leaf out of place"
                report.problems.append(Problem("log edited", "leaf", str(tree.size), detail=detail))
                missing_reported = True
            continue  # the roots from here cannot match: each checkpoint after says so
        report.leaves += 1
        value = merkle.leaf_hash(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else b"")
        tree.frontier.append(value)
        if tree.keep:
            tree.append(value)
        if tree.size in sizes:
            tree.roots[tree.size] = tree.frontier.root()
        batch.append((index, log.read_leaf(text)))
        if len(batch) >= log.BATCH:
            checker.check(batch)
            batch = []
    checker.check(batch)
    checker.finish()


def _check_root(report: AuditReport, checkpoint: Signed, roots: dict[int, bytes], size: int, kind: str) -> None:
    found = roots.get(checkpoint.size)
    if found is None:
        report.problems.append(
            Problem(
                "log edited", kind, checkpoint.ident, detail=f"signs {checkpoint.size} leaves; the log holds {size}"
            )
        )
    elif found != checkpoint.root:
        report.problems.append(
            Problem(
                "log edited", kind, checkpoint.ident, detail=f"the first {checkpoint.size} leaves make another root"
            )
        )


class _Records:
    """Logged records checked against what is stored, leaf by leaf, in the log's order.

    A logged record that is gone was purged only if it is among the oldest of its kind
    (no record of its kind logged before it is still stored), and, where the log holds
    purges' own records (``TAMPER_EVIDENCE`` seals each purge before it deletes, and the
    log takes that seal before the purge goes on), only if it is older than the cut-off of
    a purge of its kind. Otherwise it was deleted.
    """

    def __init__(self, report: AuditReport, using: str, since: datetime.datetime | None, verdicts: _Verdicts) -> None:
        self.report, self.using, self.since, self.verdicts = report, using, since, verdicts
        self.names = set(sealing.record_kinds())
        #: Classes (``kind type``) of which a logged record was found stored: a later one
        #: missing was deleted, not purged.
        self.present: set[str] = set()
        #: Gone, among the oldest of their kind: ``(class, kind, pk, time, leaf index)``.
        self.gone: list[tuple[str, str, str, Any, int]] = []
        #: ``(scope, cut-off)`` of the purges the log holds.
        self.purges: list[tuple[str, datetime.datetime]] = []
        #: Batches whose records are being read, oldest first, with their verdicts to come.
        self.pending: collections.deque[tuple[list[tuple[int, dict[str, Any]]], dict[str, Any]]] = collections.deque()

    def check(self, batch: list[tuple[int, dict[str, Any] | None]]) -> None:
        wanted: dict[str, list[tuple[str, str, str | None]]] = {}
        mine: list[tuple[int, dict[str, Any]]] = []
        for index, leaf in batch:
            if leaf is None:
                self.report.problems.append(Problem("log edited", "leaf", str(index), detail="not a leaf"))
            elif leaf["kind"] == sealing.PURGE:
                cutoff = seals.when(leaf["at"], timezone.now())
                if cutoff is not None:
                    self.purges.append((leaf["id"], cutoff))
            elif leaf["kind"] in self.names and self._in_range(leaf):
                actor = None if leaf["actor"] is None else str(leaf["actor"])
                wanted.setdefault(leaf["kind"], []).append((leaf["id"], str(leaf["digest"]), actor))
                mine.append((index, leaf))
        self.pending.append((mine, {name: self.verdicts.submit(name, items) for name, items in wanted.items()}))
        while len(self.pending) > self.verdicts.ahead:
            self._judge(*self.pending.popleft())

    def _judge(self, batch: list[tuple[int, dict[str, Any]]], submitted: dict[str, Any]) -> None:
        """The verdicts on a batch's records, applied in the log's order."""
        found: dict[tuple[str, str], str | None] = {}
        for name, job in submitted.items():
            found.update(((name, pk), verdict) for pk, verdict in self.verdicts.result(job))
        for index, leaf in batch:
            self._one(index, leaf, found)

    def _in_range(self, leaf: dict[str, Any]) -> bool:
        if self.since is None:
            return True
        at = seals.when(leaf["at"], self.since)
        return at is None or at >= self.since

    def _one(self, index: int, leaf: dict[str, Any], found: dict[tuple[str, str], str | None]) -> None:
        name, pk, report = leaf["kind"], leaf["id"], self.report
        report.records += 1
        kind_class = f"{name} {leaf['type']}"
        at = seals.when(leaf["at"], timezone.now())
        if at is not None and (report.began is None or at < report.began):
            report.began = at
        verdict = found[(name, pk)]
        if verdict == MISSING:
            if leaf["type"] != NEVER_PURGED and kind_class not in self.present:
                self.gone.append((kind_class, name, pk, at, index))
            else:
                report.problems.append(Problem("deleted", name, pk, detail=f"leaf {index}"))
            return
        self.present.add(kind_class)
        if verdict is not None:
            report.problems.append(Problem("edited", name, pk, detail=verdict or f"leaf {index}"))
            return
        report.records_valid += 1
        if at is not None:
            first, last = report.found
            report.found = (at if first is None or at < first else first, at if last is None or at > last else last)

    def finish(self) -> None:
        """Judge what is gone from among the oldest of each kind, now that every purge the
        log holds is known."""
        while self.pending:
            self._judge(*self.pending.popleft())
        for kind_class, name, pk, at, index in self.gone:
            if self.purges and not any(
                _covers(scope, kind_class) and at is not None and at < cutoff for scope, cutoff in self.purges
            ):
                self.report.problems.append(
                    Problem("deleted", name, pk, detail=f"leaf {index}: newer than every purge of its kind")
                )
                continue
            purged = self.report.purged.setdefault(kind_class, [0, None])
            purged[0] += 1
            purged[1] = note.format_time(at) if at is not None else None
            self.report.records_valid += 1


#: The verdict on a logged record that is not stored.
MISSING = "missing"


def verdicts(name: str, using: str, items: list[tuple[str, str, str | None]]) -> list[tuple[str, str | None]]:
    """``(pk, verdict)`` of each logged record ``(pk, digest, actor)`` of kind ``name``:
    None when it is stored as logged, :data:`MISSING`, or why it is not what was logged
    (:meth:`StoredRecords.compare`; ``"unreadable"``)."""
    records = _stored_records(name, using)
    rows, unreadable = records.read([pk for pk, _, _ in items])
    stored = {records.key(row): row for row in rows}
    gone = set(unreadable)
    out: list[tuple[str, str | None]] = []
    for pk, digest, actor in items:
        row = stored.get(pk)
        if row is not None:
            out.append((pk, records.compare(row, digest, actor)))
        else:
            out.append((pk, "unreadable" if pk in gone else MISSING))
    return out


#: This process's readers of stored records, one a kind and database (their caches kept
#: from batch to batch); emptied when a check ends.
_readers: dict[tuple[str, str], StoredRecords] = {}


def _stored_records(name: str, using: str) -> StoredRecords:
    found = _readers.get((name, using))
    if found is None:
        found = _readers[(name, using)] = StoredRecords(name, sealing.record_kinds()[name], using)
    return found


def _in_child() -> None:
    """In a process forked to read records: the database connections are the parent's, to
    be left to it (psycopg closes nothing a process did not open): each opens its own."""
    for connection in connections.all(initialized_only=True):
        connection.connection = None


class _Verdicts:
    """Where the records' verdicts are worked out: in this process, or, with ``jobs`` > 1 on
    PostgreSQL (or CockroachDB), in ``jobs`` processes forked for the check, each reading and digesting a
    batch while this one walks the log and hashes the tree (the digests are most of a
    check's work). Forked only from a process with no other thread, outside a transaction
    (a child's own connection sees only what is committed)."""

    def __init__(self, using: str, pool: concurrent.futures.ProcessPoolExecutor | None, ahead: int) -> None:
        self.using, self.pool, self.ahead = using, pool, ahead

    @classmethod
    def start(cls, using: str, jobs: int) -> _Verdicts:
        connection = connections[using]
        _readers.clear()
        if (
            jobs <= 1
            or connection.vendor not in POSTGRES_VENDORS
            or connection.in_atomic_block
            or threading.active_count() > 1
            or "fork" not in multiprocessing.get_all_start_methods()
        ):
            return cls(using, None, 0)
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=jobs, mp_context=multiprocessing.get_context("fork"), initializer=_in_child
        )
        return cls(using, pool, 2 * jobs)

    def submit(self, name: str, items: list[tuple[str, str, str | None]]) -> Any:
        if self.pool is None:
            return verdicts(name, self.using, items)
        return self.pool.submit(verdicts, name, self.using, items)

    def result(self, job: Any) -> list[tuple[str, str | None]]:
        return job.result() if self.pool is not None else job  # type: ignore[no-any-return]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
            self.pool = None
        _readers.clear()


def _covers(scope: str, kind_class: str) -> bool:
    """Whether a purge of ``scope`` (``all``, ``access``, ``event:<kind>``) deletes ``kind type`` records."""
    name, type_ = kind_class.split(" ", 1)
    if scope == "all":
        return type_ != NEVER_PURGED
    if scope == "access":
        return type_ in ("access", sealing.READS)
    return name == sealing.EVENT and scope == f"event:{type_}"


def _against_anchor(report: AuditReport, newest: Signed | None, anchored: Signed, tree: _Tree) -> None:
    """The database's newest checkpoint against the newest an anchor kept."""
    if (
        newest is None
        or newest.size < anchored.size
        or (newest.time is not None and anchored.time is not None and newest.time < anchored.time)
    ):
        have = f"{newest.size} leaves at {_text(newest.time)}" if newest is not None else "no checkpoint"
        report.problems.append(
            Problem(
                "behind the anchor",
                "checkpoint",
                anchored.ident,
                detail=f"the anchor holds {anchored.size} leaves at {_text(anchored.time)}; the database {have} "
                "(restored from an older copy, or truncated)",
            )
        )
        return
    if len(tree) < newest.size:
        return  # the log edited: reported by its roots
    proof = merkle.consistency_proof(anchored.size, tree[: newest.size])
    if not merkle.verify_consistency(anchored.size, newest.size, anchored.root, newest.root, proof):
        report.problems.append(
            Problem(
                "checkpoint inconsistent",
                "checkpoint",
                newest.ident,
                detail=f"not an extension of the anchored tree of {anchored.size} ({anchored.ident})",
            )
        )


def _text(when: datetime.datetime | None) -> str:
    return note.format_time(when) if when is not None else "an unknown time"


def _twice(report: AuditReport, using: str) -> None:
    """A record logged twice: the checkpointer was led back over seals it had taken (its
    cursors moved back behind its back)."""
    from django.db.models import Count

    twice = (
        LogLeaf.objects.using(using)
        .exclude(kind=sealing.PURGE)
        .values("kind", "record_id")
        .annotate(times=Count("index"))
        .filter(times__gt=1)
        .order_by()
    )
    for row in twice.iterator(chunk_size=CHUNK):
        report.problems.append(
            Problem("log edited", row["kind"], row["record_id"], detail=f"logged {row['times']} times")
        )


def _unlogged(
    report: AuditReport, using: str, signed: list[Signed], since: datetime.datetime | None, all_logged: bool
) -> None:
    """Stored records dated within the log's span that no leaf names."""
    times = [c.time for c in signed if c.time is not None]
    if not times or report.began is None:
        return
    began, until = report.began, max(times) - UNLOGGED_MARGIN
    in_database = connections[using].vendor == "postgresql"  # the anti-join leaves only the unlogged
    for name, kind in sealing.record_kinds().items():
        for chunk in stored_keys(kind, using, since, unlogged=name):
            logged: set[str] = set()
            if not in_database:
                ids = [pk for pk, _, _ in chunk]
                logged.update(
                    LogLeaf.objects.using(using)
                    .filter(kind=name, record_id__in=ids)
                    .values_list("record_id", flat=True)
                )
            for pk, canonical, raw_at in chunk:
                if canonical and pk in logged:
                    continue
                at = seals.when(raw_at, until)
                if at is not None and at > until:
                    continue  # not logged yet
                if canonical and at is not None and at < began and not all_logged:
                    report.not_covered += 1
                    continue
                report.problems.append(Problem("unlogged", name, pk, detail=f"dated {raw_at}"))
