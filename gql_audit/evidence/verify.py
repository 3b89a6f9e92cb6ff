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
from django.db.models import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKey,
    GenericIPAddressField,
    IntegerField,
    JSONField,
    TextField,
    UUIDField,
)
from django.db.models.fields import AutoFieldMixin
from django.db.models.functions import Cast

from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.evidence import sealing, seals
from gql_audit.models import LogLeaf, ReadIndexQueue, ReadObject, Seal, SealChain, SealCounter

CHUNK = 1000
#: Distinct JSON texts whose canonical serialization is kept while reading records.
SERIALIZED = 50_000


@dataclass(frozen=True)
class Problem:
    #: ``edited``, ``deleted``, ``inserted``, ``unsealed`` (records); ``seal missing``,
    #: ``seal forged``, ``chain missing``, ``chain edited``, ``chain counter edited``,
    #: ``unknown key``, ``retired key`` (the seals, their chains and the chain counter).
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
    #: ``(kind, pk) -> why`` of records a seal lists as left unsealed by a failed write.
    unsealed: dict[tuple[str, str], str] = field(default_factory=dict)
    #: ``(kind, pk)`` listed by a seal of their own write.
    on_time: set[tuple[str, str]] = field(default_factory=set)

    def cannot_check(self, entries: list[Any] | None) -> None:
        for entry in entries or ():
            if isinstance(entry, list) and len(entry) in (6, 7):
                self.unverifiable.add((str(entry[0]), str(entry[1])))


def verify(since: datetime.datetime | None = None, using: str = "default", *, all_sealed: bool = False) -> Report:
    """Check every seal and every record written since ``since`` (all when None).

    ``all_sealed``: sealing was on before the first record was written, so a record
    no seal lists is reported as inserted however old it claims to be (otherwise a
    record dated before the first chain is only counted as not covered).
    """
    walk = _Walk(Report(), sealing.keys(), using, since, all_sealed, sealing.retired())
    numbers: list[Any] = []
    known: set[str] = set()
    for chain in SealChain.objects.using(using).order_by("started_at"):
        walk.report.chains += 1
        known.add(chain.chain)
        numbers.append(chain.number)
        started = chain.started_at
        if isinstance(started, datetime.datetime) and (walk.first_start is None or started < walk.first_start):
            walk.first_start = started
        _walk(chain, walk)
    # Seals whose chain row is gone: the chain is reported, each seal still checked on its own.
    for name in Seal.objects.using(using).order_by().values_list("chain", flat=True).distinct():
        if name not in known:
            walk.report.problems.append(Problem("chain missing", "chain", str(name), str(name), None, "its row"))
            _walk_orphan(str(name), walk)
    _check_counter(numbers, walk)
    for name, kind in sealing.record_kinds().items():
        _check_records(name, kind, walk)
    for (name, pk), why in walk.unsealed.items():
        if (name, pk) not in walk.on_time:
            info = walk.sealed[(name, pk)]
            walk.report.problems.append(Problem("unsealed", name, pk, info.chain, info.position, why))
    return walk.report


def _check_counter(numbers: list[Any], walk: _Walk) -> None:
    """Chains are numbered from 1 by the sealed chain counter, with no gap: a number
    missing is a chain deleted whole (its row, its seals, its records). A chain row
    without a number is reported by its own HMAC, which covers the number."""
    report = walk.report
    counter = SealCounter.objects.using(walk.using).filter(name=sealing.CHAINS).first()
    count = counter.value if counter is not None and isinstance(counter.value, int) else 0
    if counter is None:
        if numbers:
            report.problems.append(Problem("chain counter edited", "chain", "counter", detail="missing"))
    elif counter.value or counter.mac:
        key = walk.keys.get(counter.key_id) if isinstance(counter.key_id, str) else None
        if key is None:
            report.problems.append(Problem("unknown key", "chain", "counter", detail=str(counter.key_id)))
        elif not isinstance(counter.mac, str) or not hmac.compare_digest(
            counter.mac, sealing.mac(key, *sealing.counter_text(counter))
        ):
            report.problems.append(Problem("chain counter edited", "chain", "counter"))
        elif counter.restarted_after is not None:
            detail = f"deleted; counted again after chain {counter.restarted_after}: newer chains may be gone"
            report.problems.append(Problem("chain counter edited", "chain", "counter", detail=detail))
    found = sorted({n for n in numbers if isinstance(n, int) and n > 0})
    if found and found[-1] > count:
        # The counter put back to an earlier value of its own.
        report.problems.append(Problem("chain counter edited", "chain", "counter", detail=f"below chain {found[-1]}"))
    following = 1
    for number in [*found, max(count, found[-1] if found else 0) + 1]:
        if number > following:
            last = number - 1
            ident, detail = (
                (f"#{following}", "")
                if last == following
                else (f"#{following}-#{last}", f"{number - following} chains")
            )
            report.problems.append(Problem("chain missing", "chain", ident, detail=detail))
        following = number + 1


def _missing(walk: _Walk, chain: SealChain, first: int, last: int) -> None:
    """One problem for the seals ``first`` to ``last`` (none when ``first > last``)."""
    if first > last:
        return
    ident, detail = (str(first), "") if first == last else (f"{first}-{last}", f"{last - first + 1} seals")
    walk.report.problems.append(Problem("seal missing", "seal", ident, chain.chain, first, detail))


def _walk_orphan(name: str, walk: _Walk) -> None:
    """The seals of a chain whose row is gone, each checked on its own and linked to the one before."""
    chain = SealChain(chain=name, number=None, base_seq=0, base_mac="", head_seq=0, head_mac="", key_id="")
    follows: str | None = None
    expected = 1
    for seq, at, kid, previous, seal_mac, text in seals.seal_rows(
        Seal.objects.using(walk.using).filter(chain=name)
    ).iterator(chunk_size=CHUNK):
        walk.report.seals += 1
        if not isinstance(seq, int):
            walk.report.problems.append(Problem("seal forged", "seal", str(seq), name))
            continue
        _missing(walk, chain, expected, seq - 1)
        follows = follows if seq == expected else None
        genuine = _check_seal(chain, seq, at, kid, previous, seal_mac, seals.read_entries(text), follows, walk)
        follows, expected = (seal_mac if genuine else None), seq + 1


def _walk(chain: SealChain, walk: _Walk) -> None:
    chain_seals = Seal.objects.using(walk.using).filter(chain=chain.chain, seq__gt=chain.base_seq)
    key = walk.keys.get(chain.key_id)
    if key is None:
        walk.report.problems.append(Problem("unknown key", "chain", chain.chain, chain.chain, None, chain.key_id))
        for row in seals.seal_rows(chain_seals):
            walk.cannot_check(seals.read_entries(row[5]))
        return
    if not _sound(chain):
        # Columns that are not what gql_audit writes (SQLite holds any text anywhere).
        walk.report.problems.append(Problem("chain edited", "chain", chain.chain, chain.chain))
        return
    chain_ok = hmac.compare_digest(chain.mac, sealing.mac(key, *sealing.chain_text(chain)))
    if not chain_ok:
        walk.report.problems.append(Problem("chain edited", "chain", chain.chain, chain.chain))
    elif seals.after_retirement(chain.key_id, chain.started_at, walk.retired):
        walk.report.problems.append(Problem("retired key", "chain", chain.chain, chain.chain, None, chain.key_id))
    start: int | None = chain.base_seq + 1
    #: The HMAC the next seal must name as its previous one (None: cannot be known).
    follows: str | None = chain.base_mac
    if walk.since is not None:
        first = chain_seals.filter(at__gte=walk.since).order_by("seq").values_list("seq", flat=True).first()
        if first is None or (isinstance(first, int) and first > chain.base_seq + 1):
            # The window starts after a seal dated before it: believed only if that seal is
            # genuine (its time is in its HMAC). Otherwise the whole chain is walked.
            boundary = seals.seal_rows(
                chain_seals.filter(seq=first - 1) if first is not None else chain_seals.order_by("-seq")
            ).first()
            if boundary is None and first is None:
                start = None  # no seal at all after the chain's base
            elif boundary is not None and _genuine(chain, boundary, walk) and boundary[1] < walk.since:
                start, follows = first, boundary[4]
    last_seq, last_mac = chain.base_seq, chain.base_mac
    if start is None:
        newest = chain_seals.order_by("-seq").values_list("seq", "mac").first()
        if newest is not None:
            last_seq, last_mac = newest
    else:
        expected = start
        for seq, at, kid, previous, seal_mac, text in seals.seal_rows(chain_seals.filter(seq__gte=start)).iterator(
            chunk_size=CHUNK
        ):
            walk.report.seals += 1
            if not isinstance(seq, int):
                walk.report.problems.append(Problem("seal forged", "seal", str(seq), chain.chain))
                continue
            _missing(walk, chain, expected, seq - 1)
            if seq != expected:
                follows = None
            genuine = _check_seal(chain, seq, at, kid, previous, seal_mac, seals.read_entries(text), follows, walk)
            # After a forged seal the next one's link cannot be checked: its stored HMAC may be the forger's.
            follows, expected = (seal_mac if genuine else None), seq + 1
            last_seq, last_mac = seq, seal_mac
    _missing(walk, chain, last_seq + 1, chain.head_seq)
    if chain_ok and last_seq == chain.head_seq and last_mac != chain.head_mac:
        walk.report.problems.append(
            Problem("seal forged", "seal", str(last_seq), chain.chain, last_seq, "not the sealed head")
        )


def _sound(chain: SealChain) -> bool:
    """Whether a chain row's columns hold what gql_audit writes there."""
    ints = isinstance(chain.base_seq, int) and isinstance(chain.head_seq, int)
    texts = all(isinstance(v, str) for v in (chain.base_mac, chain.head_mac, chain.key_id, chain.mac))
    return ints and texts and isinstance(chain.started_at, datetime.datetime)


def _genuine(chain: SealChain, row: tuple[Any, ...], walk: _Walk) -> bool:
    """Whether a seal checks (nothing reported: the walk reports what is wrong)."""
    seq, at, kid, previous, seal_mac, text = row
    return (
        seals.verdict(chain.chain, seq, at, kid, previous, seal_mac, seals.read_entries(text), walk.keys, walk.retired)
        is None
    )


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
    wrong = seals.verdict(chain.chain, seq, at, kid, previous, seal_mac, entries, walk.keys, walk.retired)
    if wrong is not None:
        detail = "" if wrong == "seal forged" else kid
        walk.report.problems.append(Problem(wrong, "seal", str(seq), chain.chain, seq, detail))
        if wrong == "unknown key":
            walk.cannot_check(entries)
        return False
    assert entries is not None  # checked by the HMAC
    for entry in entries:
        if not isinstance(entry, list) or len(entry) not in (6, 7):
            continue  # never written so: the HMAC checked
        name, pk, digest, subkind, actor, stamp = entry[:6]
        if name == sealing.PURGE:
            walk.checkpoints.append((str(pk), str(digest)))
            continue
        actor_text = None if actor is None else str(actor)
        walk.sealed[(str(name), str(pk))] = _Sealed(str(digest), str(subkind), actor_text, str(stamp), chain.chain, seq)
        if len(entry) == 7:
            # Listed by a later seal: its own write's seal failed (the fallback log says why).
            walk.unsealed[(str(name), str(pk))] = str(entry[6])
        else:
            walk.on_time.add((str(name), str(pk)))
        when = seals.when(stamp, at)
        if when is not None and (walk.earliest is None or when < walk.earliest):
            walk.earliest = when
    if follows is not None and previous != follows:
        # Genuine, but not after the seal stored before it: that one was replaced.
        walk.report.problems.append(
            Problem("seal forged", "seal", str(seq - 1), chain.chain, seq - 1, "not the seal its successor follows")
        )
    return True


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


#: What reading a stored row can raise when its content is not what gql_audit wrote:
#: JSON nested past the decoder, a time PostgreSQL cannot give Python ("infinity").
_UNREADABLE = (RecursionError, ValueError, TypeError, DatabaseError)


class StoredRecords:
    """The stored records of one kind, read however their columns were tampered with and
    compared with what was recorded of them when written (their digest and actor): what
    the check of the seals and the check with the public key share."""

    def __init__(self, name: str, kind: sealing.RecordKind, using: str) -> None:
        self.name, self.kind, self.using = name, kind, using
        self.connection = connections[using]
        self.fields = [*kind.columns(), *([kind.actor] if kind.actor else [])]
        # SQLite keeps JSON and times as text: their spelling is checked too, not only their value.
        self.spelled = (
            [f for f in kind.model._meta.concrete_fields if isinstance(f, (JSONField, DateTimeField))]
            if self.connection.vendor == "sqlite"
            else []
        )
        self.manager = kind.model._default_manager.using(using)
        self.pk_name = kind.model._meta.pk.attname
        self.users = get_user_model()._default_manager.db_manager(using)
        self.raw = _raw_select(kind, self.fields, self.connection)
        #: Whether rows come with their JSON serialized canonically already (the raw read).
        self.serialized_json = False
        #: Stored JSON text -> its canonical serialization: the actor, operation and context
        #: of one request are those of many others, each parsed once.
        self.serialized: dict[str, sealing.CanonicalJSON] = {}

    def _stored(self, pks: list[str]) -> list[dict[str, Any]]:
        if self.raw is not None:
            return self._stored_raw(pks)
        rows = self.manager.filter(pk__in=pks).annotate(
            **{f"raw_{f.attname}": Cast(f.attname, TextField()) for f in self.spelled}
        )
        with transaction.atomic(using=self.using):  # a savepoint when inside a transaction
            return list(rows.values(*self.fields, *(f"raw_{f.attname}" for f in self.spelled)))

    def _stored_raw(self, pks: list[str]) -> list[dict[str, Any]]:
        """On PostgreSQL: one statement, the values as the driver gives them (what Django's
        own conversions would give for these columns) and JSON parsed straight into the
        digest's canonical form: several times faster than a queryset, for millions of rows."""
        assert self.raw is not None
        sql, names, json_columns = self.raw
        pk_field = self.kind.model._meta.pk
        keys = []
        for pk in pks:
            try:
                keys.append(pk_field.to_python(pk))
            except (ValidationError, ValueError, TypeError):
                continue  # no such key can be stored
        with transaction.atomic(using=self.using), self.connection.cursor() as cursor:
            cursor.execute(sql, [keys])
            fetched = cursor.fetchall()
        rows = []
        serialized = self.serialized
        for values in fetched:
            row = dict(zip(names, values, strict=True))
            for name in json_columns:
                text = row[name]
                if isinstance(text, str):
                    found = serialized.get(text)
                    if found is None:
                        found = sealing.canonical_json(text)
                        if len(serialized) >= SERIALIZED:
                            serialized.clear()
                        serialized[text] = found
                    row[name] = found
            rows.append(row)
        self.serialized_json = True
        return rows

    def read(self, pks: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
        """The rows of ``pks`` that are stored, and the keys of those that cannot be read
        (JSON nested past the decoder, a time PostgreSQL cannot give Python)."""
        try:
            return self._stored(pks), []
        except _UNREADABLE:
            rows, unreadable = [], []
            for pk in pks:  # one by one: the rows that cannot be read are edited
                try:
                    rows.extend(self._stored([pk]))
                except _UNREADABLE:
                    unreadable.append(pk)
            return rows, unreadable

    def key(self, row: dict[str, Any]) -> str:
        return str(row[self.pk_name])

    def compare(self, row: dict[str, Any], digest: str, actor: str | None) -> str | None:
        """None when the row is what was recorded; else why not (``""``: its content,
        ``"unreadable"``, ``"actor"``). A deleted user's records lose their actor: not tampering."""
        try:
            found = self.kind.digest_stored(row) if self.serialized_json else self.kind.digest(row)
        except _UNREADABLE:  # JSON nested past what the digest's walk goes (Python 3.13 reads it)
            return "unreadable"
        if found != digest or any(_respelled(f, row, self.connection) for f in self.spelled):
            return ""
        stored_actor = sealing.actor_text(self.kind, row)
        gone = stored_actor is None and actor is not None and not self.users.filter(pk=actor).exists()
        if stored_actor != actor and not gone:
            return "actor"
        return None


#: Field classes whose raw PostgreSQL value is what Django's queryset gives (JSON: text,
#: parsed here). A model with any other column (a swapped ``LogEntry``) is read by queryset.
_RAW_FIELDS = (
    AutoFieldMixin,
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKey,
    GenericIPAddressField,
    IntegerField,
    JSONField,
    TextField,
    UUIDField,
)


def _raw_select(kind: sealing.RecordKind, names: list[str], connection: Any) -> tuple[str, list[str], list[str]] | None:
    """``(sql, column names, JSON columns)`` reading ``names`` of records by key, on
    PostgreSQL when every column allows it; None to read by queryset."""
    if connection.vendor != "postgresql":
        return None
    meta = kind.model._meta
    by_name = {f.attname: f for f in meta.concrete_fields}
    fields = [by_name[name] for name in names]
    for column in fields:
        if not isinstance(column, _RAW_FIELDS) or (isinstance(column, JSONField) and column.decoder is not None):
            return None
        if not isinstance(column, JSONField) and type(column).__dict__.get("from_db_value") is not None:
            return None
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(f.column)) for f in fields)
    sql = f"SELECT {columns} FROM {quote(meta.db_table)} WHERE {quote(str(meta.pk.column))} = ANY(%s)"
    return sql, names, [f.attname for f in fields if isinstance(f, JSONField)]


def _check_records(name: str, kind: sealing.RecordKind, walk: _Walk) -> None:
    report = walk.report
    records = StoredRecords(name, kind, walk.using)
    mine = [pk for (kind_name, pk) in walk.sealed if kind_name == name]
    seen: set[str] = set()
    indexed: dict[str, tuple[Any, Any]] = {}
    for chunk in _chunks(mine):
        rows, unreadable = records.read(chunk)
        for pk in unreadable:
            seen.add(pk)
            info = walk.sealed[(name, pk)]
            report.problems.append(Problem("edited", name, pk, info.chain, info.position, "unreadable"))
        for row in rows:
            pk = records.key(row)
            seen.add(pk)
            report.records += 1
            info = walk.sealed[(name, pk)]
            wrong = records.compare(row, info.digest, info.actor)
            if wrong is not None:
                report.problems.append(Problem("edited", name, pk, info.chain, info.position, wrong))
            elif name == sealing.READS and records.connection.vendor not in POSTGRES_VENDORS:
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
    for pk in _misindexed(walk.using, indexed):
        info = walk.sealed[(sealing.READS, pk)]
        walk.report.problems.append(Problem("edited", sealing.READS, pk, info.chain, info.position, "object index"))


def stored_keys(
    kind: sealing.RecordKind, using: str, since: datetime.datetime | None = None, unlogged: str | None = None
) -> Iterator[list[tuple[str, bool, Any]]]:
    """Every stored record's key and time, in chunks: ``(key, canonical, time text)``,
    read as the database returns them, unconverted: a forged row need not hold a key or a
    time the model could read. ``canonical``: the key is spelled as Django stores it.
    ``unlogged``: on PostgreSQL, only the records no leaf of that kind names (one
    anti-join in the database; elsewhere the caller looks them up)."""
    connection = connections[using]
    quote = connection.ops.quote_name
    meta = kind.model._meta
    at_field: Any = meta.get_field(kind.at)
    # As text: a forged row need not hold a key or time Python can be given ("infinity").
    pk_text = f"CAST(r.{quote(str(meta.pk.column))} AS TEXT)"
    columns = f"{pk_text}, CAST(r.{quote(str(at_field.column))} AS TEXT)"
    sql = f"SELECT {columns} FROM {quote(meta.db_table)} r WHERE 1 = 1"
    params: list[Any] = []
    if since is not None:
        sql += f" AND r.{quote(str(at_field.column))} >= %s"
        params.append(at_field.get_db_prep_value(since, connection))
    if unlogged is not None and connection.vendor == "postgresql":
        # A UUID or an integer as PostgreSQL spells it as text is how the log names it.
        leaves = quote(LogLeaf._meta.db_table)
        sql += f" AND NOT EXISTS (SELECT 1 FROM {leaves} l WHERE l.kind = %s AND l.record_id = {pk_text})"
        params.append(unlogged)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(CHUNK):
            chunk = []
            for raw_pk, raw_at in rows:
                pk, canonical = _pk_text(meta.pk, raw_pk, connection)
                chunk.append((pk if canonical else str(raw_pk), canonical, raw_at))
            yield chunk


def _find_inserted(name: str, kind: sealing.RecordKind, seen: set[str], walk: _Walk) -> None:
    """Stored records no seal lists."""
    for chunk in stored_keys(kind, walk.using, walk.since):
        for pk, canonical, raw_at in chunk:
            if canonical and (pk in seen or (name, pk) in walk.unverifiable):
                continue
            at = seals.when(raw_at, walk.first_start)
            # A key Django would not have written was never gql_audit's, whatever its date.
            if not canonical or walk.all_sealed or at is None or _after_sealing_began(at, walk):
                walk.report.problems.append(Problem("inserted", name, pk))
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


def _misindexed(alias: str, rows: dict[str, tuple[list[Any], Any]]) -> list[str]:
    """Where reads are found through :class:`ReadObject` rows built off the request path
    (SQLite, ``gql_audit.store.index``): of ``rows`` (``{pk: (keys, at)}``, read from the
    table), those neither queued nor indexed exactly by their keys: an index row deleted
    or moved hides a read from ``reads_of``. Empty where the rows index themselves
    (PostgreSQL, CockroachDB)."""
    if connections[alias].vendor in POSTGRES_VENDORS or not rows:
        return []
    wrong: list[str] = []
    pks = list(rows)
    for start in range(0, len(pks), 500):
        chunk = pks[start : start + 500]
        # The queue first: a row that leaves it is indexed by then.
        waiting = {
            str(pk)
            for pk in ReadIndexQueue.objects.using(alias).filter(reads_id__in=chunk).values_list("reads_id", flat=True)
        }
        found: dict[str, set[tuple[str, Any]]] = {pk: set() for pk in chunk}
        index = ReadObject.objects.using(alias).filter(reads_id__in=chunk)
        for reads_id, key, at in index.values_list("reads_id", "key", "at"):
            found[str(reads_id)].add((key, at))
        for pk in chunk:
            keys, at = rows[pk]
            if pk in waiting and not found[pk]:
                continue
            if found[pk] != {(key, at) for key in keys}:
                wrong.append(pk)
    return wrong
