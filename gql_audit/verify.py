"""Verify the sealed trail (``TAMPER_EVIDENCE``): what ``gql_audit_verify`` runs.

Every chain is walked from its anchor (or the point a ``--since`` starts at).
Each seal is checked on its own: its HMAC covers its chain, position, time, key,
entries and the HMAC of the seal before it, which it stores, so a seal next to a
missing one is still checked, and only the entries of a seal that checks are
believed. Each seal must follow the one before it, positions must have no gap
up to the chain's sealed head (checked whatever ``--since`` says), and each
record a seal lists must still be stored as it was. Records the seals do not
list, stored since sealing began (or at any time, with ``all_sealed``), were
inserted. Records a purge checkpoint covers may be gone.

Whatever the tables hold, verification reports and does not crash: a seal whose
entries cannot even be read is forged, a record whose key or time is not one was
inserted.
"""

from __future__ import annotations

import datetime
import hmac
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model
from django.core.exceptions import ValidationError
from django.db import DatabaseError, connections, transaction
from django.db.models import DateTimeField, JSONField, TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gql_audit import sealing
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import Seal, SealChain
from gql_audit.store import index

CHUNK = 1000


@dataclass(frozen=True)
class Problem:
    #: ``edited``, ``deleted``, ``inserted`` (records); ``seal missing``, ``seal forged``,
    #: ``chain edited``, ``unknown key``, ``retired key`` (the seals themselves).
    what: str
    #: ``event``, ``reads``, ``entry`` (a record), or ``seal`` / ``chain``.
    kind: str
    #: The record's key; a seal's position (``first-last`` for a run of missing seals).
    id: str
    chain: str = ""
    position: int | None = None
    detail: str = ""

    def __str__(self) -> str:
        text = f"{self.what}: {self.kind} {self.id}"
        if self.chain:
            text += f" (chain {self.chain}" + (f", position {self.position})" if self.position is not None else ")")
        return text + (f": {self.detail}" if self.detail else "")


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    chains: int = 0
    seals: int = 0
    records: int = 0
    #: Records stored before sealing began (or outside ``--since``): not covered.
    not_covered: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class _Sealed:
    digest: str
    subkind: str
    actor: str | None
    at: str
    chain: str
    position: int


@dataclass
class _Walk:
    """What the walk of the chains collects for the check of the records."""

    report: Report
    keys: dict[str, bytes]
    using: str
    since: datetime.datetime | None
    all_sealed: bool
    #: ``key_id -> until`` of retired keys: nothing they seal may be dated later.
    retired: dict[str, datetime.datetime] = field(default_factory=dict)
    #: When the first chain started (None: no chain).
    first_start: datetime.datetime | None = None
    #: The time of the oldest record a genuine seal lists.
    earliest: datetime.datetime | None = None
    sealed: dict[tuple[str, str], _Sealed] = field(default_factory=dict)
    checkpoints: list[tuple[str, str]] = field(default_factory=list)
    #: ``(kind, pk)`` listed by seals whose key is not known: not checked, and not
    #: reported as inserted either (the ``unknown key`` problem says why).
    unverifiable: set[tuple[str, str]] = field(default_factory=set)

    def cannot_check(self, entries: list[Any] | None) -> None:
        for entry in entries or ():
            if isinstance(entry, list) and len(entry) == 6:
                self.unverifiable.add((str(entry[0]), str(entry[1])))


def verify(since: datetime.datetime | None = None, using: str = "default", *, all_sealed: bool = False) -> Report:
    """Check every seal and every record written since ``since`` (all when None).

    ``all_sealed``: sealing was on before the first record was written, so a record
    no seal lists is reported as inserted however old it claims to be (otherwise a
    record dated before the first chain is only counted as not covered).
    """
    walk = _Walk(Report(), sealing.keys(), using, since, all_sealed, sealing.retired())
    for chain in SealChain.objects.using(using).order_by("started_at"):
        walk.report.chains += 1
        started = chain.started_at
        if isinstance(started, datetime.datetime) and (walk.first_start is None or started < walk.first_start):
            walk.first_start = started
        _walk(chain, walk)
    for name, kind in sealing.record_kinds().items():
        _check_records(name, kind, walk)
    return walk.report


def _missing(walk: _Walk, chain: SealChain, first: int, last: int) -> None:
    """One problem for the seals ``first`` to ``last`` (none when ``first > last``)."""
    if first > last:
        return
    ident, detail = (str(first), "") if first == last else (f"{first}-{last}", f"{last - first + 1} seals")
    walk.report.problems.append(Problem("seal missing", "seal", ident, chain.chain, first, detail))


def _entries(text: str | None) -> list[Any] | None:
    """A seal's entries from their stored text, or None when they cannot be read."""
    try:
        entries = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    return entries if isinstance(entries, list) else None


def _walk(chain: SealChain, walk: _Walk) -> None:
    seals = Seal.objects.using(walk.using).filter(chain=chain.chain, seq__gt=chain.base_seq)
    key = walk.keys.get(chain.key_id)
    if key is None:
        walk.report.problems.append(Problem("unknown key", "chain", chain.chain, chain.chain, None, chain.key_id))
        for row in _rows(seals):
            walk.cannot_check(_entries(row[5]))
        return
    if not _sound(chain):
        # Columns that are not what gql_audit writes (SQLite holds any text anywhere).
        walk.report.problems.append(Problem("chain edited", "chain", chain.chain, chain.chain))
        return
    chain_ok = hmac.compare_digest(chain.mac, sealing.mac(key, *sealing.chain_text(chain)))
    if not chain_ok:
        walk.report.problems.append(Problem("chain edited", "chain", chain.chain, chain.chain))
    elif _after_retirement(chain.key_id, chain.started_at, walk):
        walk.report.problems.append(Problem("retired key", "chain", chain.chain, chain.chain, None, chain.key_id))
    start: int | None = chain.base_seq + 1
    #: The HMAC the next seal must name as its previous one (None: cannot be known).
    follows: str | None = chain.base_mac
    if walk.since is not None:
        first = seals.filter(at__gte=walk.since).order_by("seq").values_list("seq", flat=True).first()
        if first is None or (isinstance(first, int) and first > chain.base_seq + 1):
            # The window starts after a seal dated before it: believed only if that seal is
            # genuine (its time is in its HMAC). Otherwise the whole chain is walked.
            boundary = _rows(seals.filter(seq=first - 1) if first is not None else seals.order_by("-seq")).first()
            if boundary is None and first is None:
                start = None  # no seal at all after the chain's base
            elif boundary is not None and _genuine(chain, boundary, walk) and boundary[1] < walk.since:
                start, follows = first, boundary[4]
    last_seq, last_mac = chain.base_seq, chain.base_mac
    if start is None:
        newest = seals.order_by("-seq").values_list("seq", "mac").first()
        if newest is not None:
            last_seq, last_mac = newest
    else:
        expected = start
        for seq, at, kid, previous, seal_mac, text in _rows(seals.filter(seq__gte=start)).iterator(chunk_size=CHUNK):
            walk.report.seals += 1
            if not isinstance(seq, int):
                walk.report.problems.append(Problem("seal forged", "seal", str(seq), chain.chain))
                continue
            _missing(walk, chain, expected, seq - 1)
            if seq != expected:
                follows = None
            genuine = _check_seal(chain, seq, at, kid, previous, seal_mac, _entries(text), follows, walk)
            # After a forged seal the next one's link cannot be checked: its stored HMAC may be the forger's.
            follows, expected = (seal_mac if genuine else None), seq + 1
            last_seq, last_mac = seq, seal_mac
    _missing(walk, chain, last_seq + 1, chain.head_seq)
    if chain_ok and last_seq == chain.head_seq and last_mac != chain.head_mac:
        walk.report.problems.append(
            Problem("seal forged", "seal", str(last_seq), chain.chain, last_seq, "not the sealed head")
        )


def _rows(seals: Any) -> Any:
    """Seals as tuples, by position unless ordered otherwise, their entries as stored
    text (read guarded: see :func:`_entries`)."""
    seals = seals if seals.query.order_by else seals.order_by("seq")
    return seals.annotate(entries_text=Cast("entries", TextField())).values_list(
        "seq", "at", "key_id", "previous", "mac", "entries_text"
    )


def _verdict(
    chain: SealChain, seq: int, at: Any, kid: str, previous: Any, seal_mac: Any, entries: list[Any] | None, walk: _Walk
) -> str | None:
    """What is wrong with one seal on its own (``unknown key``, ``seal forged``,
    ``retired key``), or None when its stored HMAC is the one its content makes."""
    key = walk.keys.get(kid)
    if key is None:
        return "unknown key"
    if (
        entries is None
        or not isinstance(at, datetime.datetime)
        or not isinstance(seq, int)
        or not isinstance(previous, str)
        or not isinstance(seal_mac, str)
    ):
        return "seal forged"
    expected = sealing.mac(key, *sealing.seal_text(chain.chain, seq, previous, sealing._plain(at), kid, entries))
    if not hmac.compare_digest(seal_mac, expected):
        return "seal forged"
    return "retired key" if _after_retirement(kid, at, walk, entries) else None


def _sound(chain: SealChain) -> bool:
    """Whether a chain row's columns hold what gql_audit writes there."""
    ints = isinstance(chain.base_seq, int) and isinstance(chain.head_seq, int)
    texts = all(isinstance(v, str) for v in (chain.base_mac, chain.head_mac, chain.key_id, chain.mac))
    return ints and texts and isinstance(chain.started_at, datetime.datetime)


def _genuine(chain: SealChain, row: tuple[Any, ...], walk: _Walk) -> bool:
    """Whether a seal checks (nothing reported: the walk reports what is wrong)."""
    seq, at, kid, previous, seal_mac, text = row
    return _verdict(chain, seq, at, kid, previous, seal_mac, _entries(text), walk) is None


def _check_seal(
    chain: SealChain,
    seq: int,
    at: datetime.datetime,
    kid: str,
    previous: str,
    seal_mac: str,
    entries: list[Any] | None,
    follows: str | None,
    walk: _Walk,
) -> bool:
    """Check one seal on its own and its link to the one before; believe its entries
    only when its HMAC checks. True when it does."""
    wrong = _verdict(chain, seq, at, kid, previous, seal_mac, entries, walk)
    if wrong is not None:
        detail = "" if wrong == "seal forged" else kid
        walk.report.problems.append(Problem(wrong, "seal", str(seq), chain.chain, seq, detail))
        if wrong == "unknown key":
            walk.cannot_check(entries)
        return False
    assert entries is not None  # checked by the HMAC
    for entry in entries:
        if not isinstance(entry, list) or len(entry) != 6:
            continue  # never written so: the HMAC checked
        name, pk, digest, subkind, actor, stamp = entry
        if name == sealing.PURGE:
            walk.checkpoints.append((str(pk), str(digest)))
            continue
        actor_text = None if actor is None else str(actor)
        walk.sealed[(str(name), str(pk))] = _Sealed(str(digest), str(subkind), actor_text, str(stamp), chain.chain, seq)
        when = _when(stamp, at)
        if when is not None and (walk.earliest is None or when < walk.earliest):
            walk.earliest = when
    if follows is not None and previous != follows:
        # Genuine, but not after the seal stored before it: that one was replaced.
        walk.report.problems.append(
            Problem("seal forged", "seal", str(seq - 1), chain.chain, seq - 1, "not the seal its successor follows")
        )
    return True


def _after_retirement(kid: str, at: Any, walk: _Walk, entries: list[Any] | None = None) -> bool:
    """Whether something sealed with key ``kid`` is dated after that key was retired, or
    lists a record that is: only someone who kept the retired key can have made it."""
    until = walk.retired.get(kid)
    if until is None:
        return False
    stamps = [at, *(e[5] for e in entries or () if isinstance(e, list) and len(e) == 6 and e[5])]
    for stamp in stamps:
        when = _when(stamp, until)
        if when is None or when > until:
            return True
    return False


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise _DuplicateKey
    return found


def _respelled(field: Any, row: dict[str, Any], connection: Any) -> bool:
    """Whether a column's stored text says more than its value: a JSON key twice (Python
    keeps the last value, SQLite's JSON functions the first), JSON that is none, a time
    spelled with another offset (the same instant, but SQLite compares times as text)."""
    text, value = row[f"raw_{field.attname}"], row[field.attname]
    if not isinstance(text, str):
        return False
    if isinstance(field, DateTimeField):
        return value is None or text != str(field.get_db_prep_value(value, connection))
    try:
        json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError):
        return True
    return False


def _pk_text(pk_field: Any, raw: Any, connection: Any) -> tuple[str, bool]:
    """A primary key as a seal names it, from its stored text, and whether that text is how
    Django stores it: SQLite takes ``ABCD...`` beside ``abcd...`` as another key, which
    Django's lookups may still find."""
    try:
        value = pk_field.to_python(raw)
        return str(value), str(pk_field.get_db_prep_value(value, connection)) == raw
    except (ValidationError, ValueError, TypeError):
        return str(raw), False


def _when(raw: Any, reference: datetime.datetime | None) -> datetime.datetime | None:
    """A stored time, comparable with ``reference``; None when it is not a time."""
    try:
        at = raw if isinstance(raw, datetime.datetime) else parse_datetime(raw) if isinstance(raw, str) else None
    except ValueError:  # the form of a time, not one (February 30th)
        return None
    if at is not None and reference is not None and (at.tzinfo is None) != (reference.tzinfo is None):
        # Stored naive in UTC (USE_TZ), or compared with an aware ``until`` without USE_TZ.
        at = at.replace(tzinfo=reference.tzinfo) if at.tzinfo is None else timezone.make_naive(at, datetime.UTC)
    return at


#: What reading a stored row can raise when its content is not what gql_audit wrote:
#: JSON nested past the decoder, a time PostgreSQL cannot give Python ("infinity").
_UNREADABLE = (RecursionError, ValueError, TypeError, DatabaseError)


def _check_records(name: str, kind: sealing.RecordKind, walk: _Walk) -> None:
    report, using = walk.report, walk.using
    connection = connections[using]
    fields = [*kind.columns(), *([kind.actor] if kind.actor else [])]
    # SQLite keeps JSON and times as text: their spelling is checked too, not only their value.
    spelled = (
        [f for f in kind.model._meta.concrete_fields if isinstance(f, (JSONField, DateTimeField))]
        if connection.vendor == "sqlite"
        else []
    )
    manager = kind.model._default_manager.using(using)
    pk_field = kind.model._meta.pk
    mine = [pk for (kind_name, pk) in walk.sealed if kind_name == name]
    seen: set[str] = set()
    indexed: dict[str, tuple[Any, Any]] = {}
    users = get_user_model()._default_manager.db_manager(using)

    def stored(pks: list[str]) -> list[dict[str, Any]]:
        rows = manager.filter(pk__in=pks).annotate(
            **{f"raw_{f.attname}": Cast(f.attname, TextField()) for f in spelled}
        )
        with transaction.atomic(using=using):  # a savepoint when inside a transaction
            return list(rows.values(*fields, *(f"raw_{f.attname}" for f in spelled)))

    for chunk in _chunks(mine):
        try:
            rows = stored(chunk)
        except _UNREADABLE:
            rows = []
            for pk in chunk:  # one by one: the rows that cannot be read are edited
                try:
                    rows.extend(stored([pk]))
                except _UNREADABLE:
                    seen.add(pk)
                    info = walk.sealed[(name, pk)]
                    report.problems.append(Problem("edited", name, pk, info.chain, info.position, "unreadable"))
        for row in rows:
            pk = str(row[pk_field.attname])
            seen.add(pk)
            report.records += 1
            info = walk.sealed[(name, pk)]
            if kind.digest(row) != info.digest or any(_respelled(f, row, connection) for f in spelled):
                report.problems.append(Problem("edited", name, pk, info.chain, info.position))
                continue
            actor = sealing.actor_text(kind, row)
            gone = actor is None and info.actor is not None and not users.filter(pk=info.actor).exists()
            if actor != info.actor and not gone:
                report.problems.append(Problem("edited", name, pk, info.chain, info.position, "actor"))
            elif name == sealing.READS and connection.vendor not in POSTGRES_VENDORS:
                indexed[pk] = (row["keys"], row["at"])
    for pk in mine:
        if pk in seen:
            continue
        info = walk.sealed[(name, pk)]
        if not any(_purged(info, scope, cutoff) for scope, cutoff in walk.checkpoints):
            report.problems.append(Problem("deleted", name, pk, info.chain, info.position))
    if indexed:
        _check_object_index(indexed, walk)
    _find_inserted(name, kind, seen, walk)


def _check_object_index(indexed: dict[str, tuple[Any, Any]], walk: _Walk) -> None:
    """Where reads are found through an object index apart from their rows (SQLite), a
    sealed row must be in it whole, or wait to be: an index row deleted or moved hides
    a read from ``reads_of``."""
    for pk in index.misindexed(walk.using, indexed):
        info = walk.sealed[(sealing.READS, pk)]
        walk.report.problems.append(Problem("edited", sealing.READS, pk, info.chain, info.position, "object index"))


def _find_inserted(name: str, kind: sealing.RecordKind, seen: set[str], walk: _Walk) -> None:
    """Stored records no seal lists. Read as the database returns them, unconverted: a
    forged row need not hold a key or a time the model could read."""
    connection = connections[walk.using]
    quote = connection.ops.quote_name
    meta = kind.model._meta
    at_field: Any = meta.get_field(kind.at)
    # As text: a forged row need not hold a key or time Python can be given ("infinity").
    columns = f"CAST({quote(str(meta.pk.column))} AS TEXT), CAST({quote(str(at_field.column))} AS TEXT)"
    sql = f"SELECT {columns} FROM {quote(meta.db_table)}"
    params: list[Any] = []
    if walk.since is not None:
        sql += f" WHERE {quote(str(at_field.column))} >= %s"
        params.append(at_field.get_db_prep_value(walk.since, connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            for raw_pk, raw_at in rows:
                pk, canonical = _pk_text(meta.pk, raw_pk, connection)
                if canonical and (pk in seen or (name, pk) in walk.unverifiable):
                    continue
                at = _when(raw_at, walk.first_start)
                # A key Django would not have written was never gql_audit's, whatever its date.
                if not canonical or walk.all_sealed or at is None or _after_sealing_began(at, walk):
                    walk.report.problems.append(Problem("inserted", name, pk if canonical else str(raw_pk)))
                else:
                    walk.report.not_covered += 1


def _after_sealing_began(at: datetime.datetime, walk: _Walk) -> bool:
    """Whether a record's time is one sealing covers: from the first chain's start, or
    from the oldest record a seal lists (a chain starts as its first records are sealed,
    a moment after they were written)."""
    began = walk.first_start
    if began is None:
        return False
    if walk.earliest is not None and walk.earliest < began:
        began = walk.earliest
    return at >= began


def _purged(info: _Sealed, scope: str, cutoff: str) -> bool:
    """Whether a purge checkpoint (``scope`` before ``cutoff``) explains the record's absence."""
    if info.at >= cutoff:
        return False
    if scope == "all":
        return info.subkind != "change"
    if scope == "access":
        return info.subkind in ("access", sealing.READS)
    return scope == f"event:{info.subkind}"
