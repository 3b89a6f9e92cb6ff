"""``TAMPER_EVIDENCE``: every record sealed with a keyed hash, in chains a verifier walks.

What a seal is
    One :class:`~gql_audit.models.Seal` row per request (per write outside a
    request) lists each record the request left: its kind, primary key and the
    SHA-256 of its stored content as the database returns it, read back in the
    same transaction. The row's HMAC (SHA-256, keyed by ``TAMPER_EVIDENCE["key"]``)
    covers that list, its position in its chain and the HMAC of the seal before
    it, so a seal cannot be edited, dropped, reordered or forged without the key.

Chains
    Each writer (a thread of a process) keeps its own chain per UTC day, whose
    head it holds in memory: sealing a request is one INSERT of the seal and one
    UPDATE of the writer's own :class:`~gql_audit.models.SealChain` row (one
    INSERT more when a chain starts), with no read of a shared head and no lock
    another writer waits for. The chain row is sealed too: it anchors the chain
    (its first seal follows a value only the key can make) and names its last
    seal, so dropping a chain's newest seals shows.

A database writer without the key can change nothing unnoticed. What it does not
protect against is said in ``docs/evidence.md``.
"""

from __future__ import annotations

import datetime
import decimal
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connections, models, transaction
from django.db.models import Model
from django.utils import timezone

from gql_audit.compat import pending_on_commit
from gql_audit.conf import conf
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.logging import log_payload
from gql_audit.models import RequestReads, Seal, SealChain, SealCounter, SecurityEvent

audit_logger = logging.getLogger("gql_audit.audit")

#: Record kinds a seal names.
EVENT = "event"
READS = "reads"
ENTRY = "entry"
#: A seal left by ``gql_audit_purge``: what it deleted, so that their absence verifies.
PURGE = "purge"


def enabled() -> bool:
    return bool(conf.TAMPER_EVIDENCE)


def key_id(key: str) -> str:
    """A key's public name: the first 16 hex digits of its SHA-256."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def keys() -> dict[str, bytes]:
    """``key_id -> key`` of the current key and every previous one."""
    return {kid: key for kid, (key, _) in _known_keys().items()}


def retired() -> dict[str, datetime.datetime]:
    """``key_id -> until`` of the previous keys given with the time they were retired:
    nothing sealed with one of them may be dated later."""
    return {kid: until for kid, (_, until) in _known_keys().items() if until is not None}


def retirement(value: Any) -> datetime.datetime | None:
    """A previous key's ``until``: an aware datetime, or ISO 8601 text with its offset;
    None when it is neither (system check ``gql_audit.E002`` says so)."""
    from django.utils.dateparse import parse_datetime

    when = value if isinstance(value, datetime.datetime) else None
    if isinstance(value, str):
        try:
            when = parse_datetime(value)
        except ValueError:
            when = None
    return when if when is not None and timezone.is_aware(when) else None


def _known_keys() -> dict[str, tuple[bytes, datetime.datetime | None]]:
    settings = conf.TAMPER_EVIDENCE or {}
    found: dict[str, tuple[bytes, datetime.datetime | None]] = {}
    for entry in [settings.get("key"), *(settings.get("previous_keys") or ())]:
        key, until = (entry.get("key"), retirement(entry.get("until"))) if isinstance(entry, dict) else (entry, None)
        if isinstance(key, str) and key and key_id(key) not in found:  # the current key is never retired
            found[key_id(key)] = (key.encode(), until)
    return found


def current_key() -> tuple[str, bytes]:
    """``(key_id, key)`` of the key new seals use (worked out once per settings)."""

    def build() -> tuple[str, bytes]:
        key = (conf.TAMPER_EVIDENCE or {})["key"]
        return key_id(key), key.encode()

    found: tuple[str, bytes] = conf.derived("seal_key", build)
    return found


def mac(key: bytes, *parts: str) -> str:
    return hmac.digest(key, "\x1f".join(parts).encode("utf-8", "surrogatepass"), "sha256").hex()


# --- what a record is, canonically ---------------------------------------------------------


def _plain(value: Any) -> Any:
    """A value as the database returned it, in one form whatever the backend."""
    if isinstance(value, datetime.datetime):
        if timezone.is_aware(value):
            value = value.astimezone(datetime.UTC)
        return value.isoformat()
    if isinstance(value, (datetime.date, datetime.time, decimal.Decimal, uuid.UUID)):
        return str(value)
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and value == int(value):
        return int(value)
    return value


def _ip(value: Any) -> Any:
    """An address in one spelling (PostgreSQL's ``inet`` returns its own)."""
    if not value:
        return value
    found = _ip_spellings.get(value)
    if found is None:
        try:
            found = str(ipaddress.ip_address(value))
        except ValueError:
            found = value
        if len(_ip_spellings) >= _IP_SPELLINGS:
            _ip_spellings.clear()
        _ip_spellings[value] = found
    return found


#: Addresses repeat request after request: each spelled once (at most this many kept).
_IP_SPELLINGS = 4096
_ip_spellings: dict[Any, Any] = {}


def _json(value: Any) -> Any:
    """JSON data with its numbers as PostgreSQL's ``jsonb`` (a ``numeric``) gives them back:
    a float written with an exponent and no fraction (``1e+16``) comes back an integer
    (``10000000000000000``), ``-0.0`` comes back ``0.0``. ``json.dumps(sort_keys=True)``
    then gives the data one spelling on every database."""
    if isinstance(value, float):
        if value == 0:
            return 0.0
        if "e+" in repr(value):
            return int(decimal.Decimal(repr(value)))
        return value
    # Text, whole numbers, booleans and null are left as they are without a call each:
    # a request's list of object keys is most of what is digested.
    if isinstance(value, dict):
        return {key: item if type(item) in _AS_IS else _json(item) for key, item in value.items()}
    if isinstance(value, list):
        return [item if type(item) in _AS_IS else _json(item) for item in value]
    return value


_AS_IS = frozenset({str, int, bool, type(None)})


def _canonical_float(text: str) -> Any:
    """A JSON number with a fraction or an exponent, as :func:`_json` would make it."""
    return _json(float(text))


_canonical_decoder = json.JSONDecoder(parse_float=_canonical_float)


def load_json(text: str) -> Any:
    """JSON text parsed straight into the canonical form :func:`_json` gives parsed data
    (its numbers converted as the C parser meets them, with no walk of the result)."""
    return _canonical_decoder.decode(text)


class CanonicalJSON(str):
    """A JSON column's value already serialized as the digest writes it (:func:`canonical_json`)."""

    __slots__ = ()


def canonical_json(text: str) -> CanonicalJSON:
    """Stored JSON text as the digest serializes its value: parsed canonically and written
    with keys sorted, no spaces. ValueError or RecursionError when it cannot be read."""
    return CanonicalJSON(_dumps(load_json(text)))


#: How the digest writes a value: keys sorted, no spaces, not ASCII-escaped.
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode


#: What ``json.dumps(..., ensure_ascii=False)`` makes of a string (C).
_encode_text = json.encoder.encode_basestring


def _converter(field: Any) -> Any:
    """How a column's value, as the database returns it, becomes canonical JSON data."""
    from django.db.models import GenericIPAddressField, JSONField

    if isinstance(field, JSONField):
        return _json
    if isinstance(field, GenericIPAddressField):
        return _ip
    return _plain


@dataclass(frozen=True)
class RecordKind:
    name: str
    model: type[Model]
    #: Columns left out of the digest: the actor's key, which the database sets to NULL
    #: when the user is deleted (the seal keeps it apart).
    actor: str | None
    at: str

    def columns(self) -> list[str]:
        return [name for name, _ in _converters(self)]

    def converters(self) -> list[tuple[str, Any]]:
        return [(f.attname, _converter(f)) for f in self.model._meta.concrete_fields if f.attname != self.actor]

    def digest(self, row: dict[str, Any]) -> str:
        """The SHA-256 of the row's canonical JSON."""
        columns: dict[str, Any] = {}
        for name, convert in _converters(self):
            value = row[name]
            columns[name] = None if value is None else convert(value)
        text = _dumps(columns)
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def digest_stored(self, row: dict[str, Any]) -> str:
        """:meth:`digest` of a row whose JSON columns are given serialized already
        (:class:`CanonicalJSON`, as :func:`canonical_json` makes them from stored text):
        the same canonical text, written a column at a time in ``sort_keys`` order."""
        parts = []
        for name, convert, label in _digest_columns(self):
            value = row[name]
            if value is None:
                parts.append(label + "null")
            elif type(value) is CanonicalJSON:
                parts.append(label + value)
            else:
                value = convert(value)
                parts.append(label + (_encode_text(value) if type(value) is str else _dumps(value)))
        text = "{" + ",".join(parts) + "}"
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()

    def subkind(self, row: dict[str, Any]) -> str:
        if self.name == EVENT:
            return str(row["kind"])
        if self.name == ENTRY:
            from auditlog.models import LogEntry

            return "access" if row["action"] == LogEntry.Action.ACCESS else "change"
        return READS

    def rows(self, alias: str, ids: Iterable[Any]) -> list[dict[str, Any]]:
        fields = [*self.columns(), *([self.actor] if self.actor else [])]
        return list(self.model._default_manager.using(alias).filter(pk__in=list(ids)).values(*fields))

    def row_of(self, instance: Model) -> dict[str, Any]:
        """What the database will return for ``instance`` just saved by gql_audit itself, for
        :func:`entry_for`: its JSON values through one encoding round trip (tuples become
        lists, keys strings), each given as the digest serializes it (:class:`CanonicalJSON`)."""
        row: dict[str, Any] = {}
        json_values: dict[Any, dict[str, Any]] = {}  # encoder -> {column: value}
        for field, json_field in _fields(self.model):
            value = getattr(instance, field.attname)
            if json_field and value is not None:
                json_values.setdefault(field.encoder, {})[field.attname] = value
            row[field.attname] = value
        for encoder, values in json_values.items():
            # One encoding and one parse for all of a model's JSON values (they share an encoder).
            for name, value in load_json(_encoder(encoder).encode(values)).items():
                row[name] = CanonicalJSON(_dumps(value))
        return row


def _encoder(cls: type[json.JSONEncoder] | None) -> json.JSONEncoder:
    """An instance of a ``JSONField``'s encoder, as ``json.dumps(value, cls=cls)`` makes one
    for each call (encoders keep no state between calls)."""
    found = _encoders.get(cls)
    if found is None:
        found = _encoders[cls] = (cls or json.JSONEncoder)()
    return found


_encoders: dict[Any, json.JSONEncoder] = {}


#: Model -> its concrete fields, each with whether it is a ``JSONField``.
_fields_cache: dict[type[Model], list[tuple[Any, bool]]] = {}


def _fields(model: type[Model]) -> list[tuple[Any, bool]]:
    found = _fields_cache.get(model)
    if found is None:
        from django.db.models import JSONField

        found = _fields_cache[model] = [(f, isinstance(f, JSONField)) for f in model._meta.concrete_fields]
    return found


#: Model label -> its columns and how each becomes canonical.
_converters_cache: dict[str, list[tuple[str, Any]]] = {}


def _converters(kind: RecordKind) -> list[tuple[str, Any]]:
    """A kind's column converters, worked out once (a swapped ``LogEntry`` model is its own key)."""
    key = kind.model._meta.label
    found = _converters_cache.get(key)
    if found is None:
        found = _converters_cache[key] = kind.converters()
    return found


#: Model label -> ``(column, converter, '"column":')`` in the order ``sort_keys`` writes them.
_digest_columns_cache: dict[str, list[tuple[str, Any, str]]] = {}


def _digest_columns(kind: RecordKind) -> list[tuple[str, Any, str]]:
    key = kind.model._meta.label
    found = _digest_columns_cache.get(key)
    if found is None:
        found = _digest_columns_cache[key] = [
            (name, convert, json.dumps(name, ensure_ascii=False) + ":") for name, convert in sorted(_converters(kind))
        ]
    return found


def record_kinds() -> dict[str, RecordKind]:
    """The kinds of records sealed, by name (worked out once per settings: auditlog's
    ``LogEntry`` model is a setting)."""

    def build() -> dict[str, RecordKind]:
        from auditlog import get_logentry_model

        return {
            EVENT: RecordKind(EVENT, SecurityEvent, "actor_id", "created_at"),
            READS: RecordKind(READS, RequestReads, None, "at"),
            ENTRY: RecordKind(ENTRY, get_logentry_model(), "actor_id", "timestamp"),
        }

    kinds: dict[str, RecordKind] = conf.derived("record_kinds", build)
    return kinds


def entry_for(kind: RecordKind, row: dict[str, Any]) -> list[Any]:
    """``[kind, pk, digest, subkind, actor pk, time]``: what a seal says of one record."""
    pk = str(row[kind.model._meta.pk.attname])
    return [kind.name, pk, kind.digest_stored(row), kind.subkind(row), actor_text(kind, row), _plain(row[kind.at])]


def actor_text(kind: RecordKind, row: dict[str, Any]) -> str | None:
    """The record's actor key as a seal names it: text, whatever the user model's key."""
    actor = row.get(kind.actor) if kind.actor else None
    return None if actor is None else str(actor)


def seal_text(seal_chain: str, seq: int, previous: str, at: str, kid: str, entries: list[Any]) -> list[str]:
    """What a seal's HMAC covers, in order."""
    listed = json.dumps(entries, separators=(",", ":"), ensure_ascii=False, default=str)
    return [seal_chain, str(seq), previous, at, kid, listed]


def anchor(key: bytes, chain: SealChain) -> str:
    """The value a chain's first seal follows."""
    return mac(key, "anchor", chain.chain, _plain(chain.started_at))


def chain_text(chain: SealChain) -> list[str]:
    return [
        chain.chain,
        str(chain.number),
        _plain(chain.started_at),
        str(chain.base_seq),
        chain.base_mac,
        str(chain.head_seq),
        chain.head_mac,
        chain.key_id,
    ]


def counter_text(counter: SealCounter) -> list[str]:
    restarted = "" if counter.restarted_after is None else str(counter.restarted_after)
    return ["counter", counter.name, str(counter.value), counter.key_id, restarted]


# --- the writers' chains ----------------------------------------------------------------------

#: The :class:`~gql_audit.models.SealCounter` row counting chains.
CHAINS = "chains"
#: Backends whose chain rows are updated where they are (``ctid``) rather than found by key:
#: PostgreSQL reads a table as small as the chains' whole (a sequential scan), and at
#: SERIALIZABLE a whole table read is a lock on all of it, so every two writers sealing at
#: once would abort one another; addressed by ``ctid`` the UPDATE reads its one row.
LOCATED = frozenset({"postgresql"})


@dataclass(eq=False)
class _Chain:
    """A chain a writer appends to: its row, and its newest seal the database has committed."""

    row: SealChain
    alias: str
    #: The UTC day (``YYYYMMDD``) it belongs to.
    day: str
    #: ``(seq, mac)`` of its newest committed seal (its anchor before the first).
    head: tuple[int, str]
    #: Where its row is, on PostgreSQL (see :data:`LOCATED`); None: found by its key.
    location: str | None = None


class _Pool:
    """The process's chains no writer is using: a writer takes one for a seal and gives it
    back once the seal is committed. As many chains as writers ever sealed at once, whatever
    runs them: a thread per request (ASGI) still shares chains, and no two writers ever
    append to one chain at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Chain] = []

    def take(self, alias: str, day: str) -> _Chain | None:
        with self.lock:
            # A day's chains end with the day: the others are dropped.
            self.idle = [chain for chain in self.idle if chain.day == day]
            for index, chain in enumerate(self.idle):
                if chain.alias == alias:
                    return self.idle.pop(index)
        return None

    def has(self, alias: str, day: str) -> bool:
        with self.lock:
            return any(chain.alias == alias and chain.day == day for chain in self.idle)

    def give(self, chain: _Chain) -> None:
        with self.lock:
            self.idle.append(chain)

    def clear(self) -> None:
        with self.lock:
            self.idle = []


class _Open(threading.local):
    """The chain this thread appended to in a transaction still open, and its seal there:
    another seal in the same transaction follows it."""

    def __init__(self) -> None:
        self.chain: _Chain | None = None
        self.seq = 0
        self.mac = ""
        self.location: str | None = None
        self.callback: Any = None


_pool = _Pool()
_open = _Open()


def forget() -> None:
    """Start new chains at the next seals: every idle chain is dropped (a child process after
    a fork, whose parent goes on with them; tests)."""
    _pool.clear()
    _open.__init__()  # type: ignore[misc]
    _reserved.__init__()  # type: ignore[misc]


# A child process must not go on with its parent's chains: both would write their next positions.
os.register_at_fork(after_in_child=forget)


def rolled_back(alias: str) -> None:
    """The transaction this thread had open on ``alias`` was rolled back, for sure (a
    serialization failure): its chain goes back to the pool as it was before it."""
    chain = _open.chain
    if chain is not None and chain.alias == alias and not pending_on_commit(connections[alias], _open.callback):
        _open.__init__()  # type: ignore[misc]
        _pool.give(chain)


class _Reserved(threading.local):
    """The chain this thread took for its next seal before the transaction writing the
    records began (:func:`prepare`)."""

    def __init__(self) -> None:
        self.chain: _Chain | None = None


_reserved = _Reserved()


def prepare(alias: str) -> None:
    """Take a chain for this thread's next seal on ``alias`` before the transaction writing
    records begins: an idle one, or one started in a transaction of its own, so that the
    writing transaction does not hold the chain counter. Taken now, the chain's row is
    committed before that transaction's snapshot: at REPEATABLE READ or SERIALIZABLE
    (CockroachDB's default) a chain another thread started after the snapshot would be
    invisible to it, and its seal could not advance it. Outside any transaction only."""
    kid, key = current_key()
    now = timezone.now()
    if connections[alias].in_atomic_block:
        return
    day = _day(now)
    held = _reserved.chain
    if held is not None:
        if held.alias == alias and held.day == day:
            return
        _reserved.chain = None
        _pool.give(held)
    chain = _pool.take(alias, day)
    if chain is None:
        with transaction.atomic(using=alias):
            chain = _start(alias, now, kid, key)
    _reserved.chain = chain


def release(alias: str) -> None:
    """The chain :func:`prepare` took for ``alias`` back to the pool, unused."""
    held = _reserved.chain
    if held is not None and held.alias == alias:
        _reserved.chain = None
        _pool.give(held)


def _day(now: datetime.datetime) -> str:
    """``YYYYMMDD`` of ``now``: the day a chain belongs to (as ``strftime("%Y%m%d")``, without its cost)."""
    return f"{now.year:04d}{now.month:02d}{now.day:02d}"


def _start(alias: str, now: datetime.datetime, kid: str, key: bytes) -> _Chain:
    """A new chain, numbered by the counter: its row written in the open transaction."""
    counter = _count_chain(alias, kid, key)
    day = _day(now)
    # Random part first: concurrent writers' seals, keyed (chain, seq), spread over the key space.
    row = SealChain(chain=f"{uuid.uuid4().hex[:20]}-{day}", number=counter, started_at=now, key_id=kid)
    row.base_seq = row.head_seq = 0
    row.base_mac = row.head_mac = anchor(key, row)
    row.mac = mac(key, *chain_text(row))
    connection = connections[alias]
    located = connection.vendor in LOCATED
    sql, params = insert_clause(connection, row)
    with connection.cursor() as cursor:
        cursor.execute(sql + (" RETURNING ctid::text" if located else ""), params)
        location = cursor.fetchone()[0] if located else None
    return _Chain(row, alias, day, (0, row.base_mac), location)


def _count_chain(alias: str, kid: str, key: bytes) -> int:
    """Raise the chain counter by one (the row stays locked until the transaction ends):
    its new value, the new chain's number."""
    from django.db.models import F

    counters = SealCounter.objects.using(alias)
    if not counters.filter(name=CHAINS).update(value=F("value") + 1):
        # Made by the migration: gone only with the table's rows. Counting goes on after the
        # highest number left (verification reports the counter, sealed, as edited).
        highest = SealChain.objects.using(alias).aggregate(top=models.Max("number"))["top"] or 0
        # Chains exist: the row was deleted. Recreated marked so, in its HMAC: verification
        # reports it from now on, whoever deleted it and whatever chains went with it.
        restarted = highest if SealChain.objects.using(alias).exists() else None
        if restarted is not None:
            log_payload(audit_logger, logging.ERROR, {"event": "seal_counter_missing", "restarted_after": highest})
        counters.bulk_create(
            [SealCounter(name=CHAINS, value=highest, restarted_after=restarted)], ignore_conflicts=True
        )
        counters.filter(name=CHAINS).update(value=F("value") + 1)
    counter = counters.get(name=CHAINS)
    counter.key_id = kid
    counter.mac = mac(key, *counter_text(counter))
    counters.filter(name=CHAINS).update(key_id=kid, mac=counter.mac)
    return counter.value


def _chain_for(alias: str, now: datetime.datetime, kid: str, key: bytes) -> tuple[_Chain, int, str, str | None, bool]:
    """The chain the next seal on ``alias`` goes to, the seal it follows and where its row
    is: ``(chain, seq, mac, location, own)``; ``own``: the chain is this transaction's
    alone (this thread's chain of a seal in the same open transaction, or one it
    started), never to go back to the pool unless the transaction commits."""
    chain = _open.chain
    connection = connections[alias]
    if chain is not None:
        if chain.alias == alias and pending_on_commit(connection, _open.callback):
            return chain, _open.seq, _open.mac, _open.location, True
        # Neither run nor waiting: rolled back with its transaction (or savepoint), or
        # committed with a callback registered before ours raising, which stops Django
        # running the rest. Which one cannot be known: the chain is not used again.
        _open.__init__()  # type: ignore[misc]
    day = _day(now)
    held = _reserved.chain
    if held is not None and held.alias == alias:
        _reserved.chain = None
        if held.day == day:
            return held, *held.head, held.location, False
        _pool.give(held)  # yesterday's: dropped by the pool
    chain = _pool.take(alias, day)
    if chain is not None:
        return chain, *chain.head, chain.location, False
    # Inside the caller's transaction, the new row commits (or not) with it; outside, now.
    inside = connection.in_atomic_block
    with transaction.atomic(using=alias, savepoint=False):
        chain = _start(alias, now, kid, key)
    return chain, *chain.head, chain.location, inside


def seal(alias: str, records: Mapping[str, Iterable[Any]], insert: list[Model] | None = None) -> int:
    """Seal the records ``{kind: primary keys}`` just written on ``alias``; returns how many.

    A model instance gql_audit has just written itself (reads, an ACCESS entry, an
    event) may stand for its key: it is sealed as saved, with no read back (at
    SERIALIZABLE a read of rows concurrent writers insert beside them is what makes
    writers abort each other). ``insert``: such rows not yet saved, which the seal's
    statement inserts. Runs inside the transaction that wrote them: the seal
    commits with them, or neither does. Records left unsealed earlier by a failed write
    (:func:`note_unsealed`) are listed too, marked so.
    """
    kinds = record_kinds()
    entries: list[Any] = []
    texts: dict[int, dict[str, str]] = {}
    for name, items in records.items():
        kind = kinds[name]
        ids = []
        for item in items:
            if isinstance(item, Model):
                row = kind.row_of(item)
                entries.append(entry_for(kind, row))
                texts[id(item)] = {column: value for column, value in row.items() if type(value) is CanonicalJSON}
            else:
                ids.append(item)
        if ids:
            entries.extend(entry_for(kind, row) for row in kind.rows(alias, ids))
    late = _unsealed.listed(alias)
    entries.extend(_late_entries(alias, late))
    if not entries:
        release(alias)
        return 0
    append(alias, sorted(entries, key=lambda entry: (entry[0], entry[1])), insert or [], late, texts)
    return len(entries)


def append(
    alias: str,
    entries: list[Any],
    insert: list[Model] | None = None,
    late: Any = None,
    texts: Mapping[int, Mapping[str, str]] | None = None,
) -> None:
    """Add one seal listing ``entries`` to a chain of this process (and INSERT the rows
    ``insert``, in the same statement where the database allows). ``texts``: the JSON
    columns of rows of ``insert`` already serialized, by ``id()`` of the row (see
    :func:`insert_clause`)."""
    kid, key = current_key()
    now = timezone.now()
    connection = connections[alias]
    chain, seq, previous, location, own = _chain_for(alias, now, kid, key)
    row = chain.row
    seq += 1
    sealed = seal_text(row.chain, seq, previous, _plain(now), kid, entries)
    seal_mac = mac(key, *sealed)
    # The seal's values, in _SEAL_COLUMNS' order (a model instance only where the ORM's INSERT needs one).
    values = (row.chain, seq, now, kid, entries, previous, seal_mac)
    advanced = SealChain.__new__(SealChain)  # a shallow copy, without copy.copy's pickling protocol
    advanced.__dict__.update(row.__dict__)
    advanced.head_seq, advanced.head_mac, advanced.key_id = seq, seal_mac, kid
    advanced.mac = mac(key, *chain_text(advanced))
    one_statement = connection.vendor in POSTGRES_VENDORS
    try:
        # No savepoint: inside the caller's transaction (the records' own) it adds no
        # statement. One statement outside any transaction is its own: no BEGIN, no COMMIT.
        with nullcontext() if one_statement else transaction.atomic(using=alias, savepoint=False):
            if one_statement:
                found, location = _insert_and_advance(
                    alias, values, sealed[-1], advanced, insert or [], location, texts
                )
            else:
                # Raw statements, as on PostgreSQL: no signal, no ORM query to compile.
                found = _insert_then_advance(alias, [*(insert or ()), _seal_row(values)], advanced)
    except BaseException:
        # The statements failed, and with them (no savepoint) whatever of this seal was
        # written: the chain is where it was.
        if not own:
            _pool.give(chain)
        raise
    chain.row = advanced
    if not found:
        # Its row is gone (deleted behind gql_audit's back): this seal names a chain
        # verification reports missing, and the next seal starts another.
        log_payload(audit_logger, logging.ERROR, {"event": "seal_chain_missing", "chain": row.chain})
        _open.__init__()  # type: ignore[misc]
        return

    def committed() -> None:
        chain.head, chain.location = (seq, seal_mac), location
        if late:
            _unsealed.sealed(late)
        if _open.chain is chain:
            if _open.seq != seq:
                return  # a later seal in the same transaction gives the chain back
            _open.__init__()  # type: ignore[misc]
        _pool.give(chain)

    if autocommit(alias):
        committed()  # one statement in autocommit: committed already
        return
    _open.chain, _open.seq, _open.mac, _open.location, _open.callback = chain, seq, seal_mac, location, committed
    transaction.on_commit(committed, using=alias)


# --- records a failed write left unsealed ---------------------------------------------------

#: Records waiting to be listed as unsealed, per process, at most.
MAX_UNSEALED = 10_000
#: Listed by one seal at most.
UNSEALED_PER_SEAL = 1000
#: The mark an entry for such a record carries after its six fields.
UNSEALED = "unsealed"


class _Unsealed:
    """Records written while their seal could not be: the next seal on their database lists
    them (as they are then), marked, so that verification calls them ``unsealed`` and checks
    them from then on, instead of calling them inserted."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        #: ``(alias, kind, pk) -> reason``
        self.waiting: dict[tuple[str, str, str], str] = {}

    def add(self, alias: str, written: Mapping[str, Iterable[Any]], reason: str) -> None:
        with self.lock:
            for kind, items in written.items():
                for item in items:
                    if len(self.waiting) >= MAX_UNSEALED:
                        return  # the seal_failed log line names them all
                    pk = item.pk if isinstance(item, Model) else item
                    self.waiting[(alias, kind, str(pk))] = reason

    def listed(self, alias: str) -> list[tuple[str, str, str]]:
        if not self.waiting:
            return []
        with self.lock:
            return [key for key in self.waiting if key[0] == alias][:UNSEALED_PER_SEAL]

    def reason(self, key: tuple[str, str, str]) -> str:
        with self.lock:
            return self.waiting.get(key, "")

    def sealed(self, keys: list[tuple[str, str, str]]) -> None:
        with self.lock:
            for key in keys:
                self.waiting.pop(key, None)

    def clear(self) -> None:
        with self.lock:
            self.waiting = {}


_unsealed = _Unsealed()


def note_unsealed(alias: str, written: Mapping[str, Iterable[Any]], error: BaseException) -> None:
    """Records just written (or committed by the service) without their seal: listed, marked
    ``unsealed``, by the next seal on ``alias`` in this process."""
    from gql_audit.errors import describe_database_error

    reason, _ = describe_database_error(error)
    _unsealed.add(alias, written, reason[:200])


def _late_entries(alias: str, keys: list[tuple[str, str, str]]) -> list[Any]:
    """The entries of records left unsealed: as they are stored now, marked with why."""
    if not keys:
        return []
    kinds = record_kinds()
    entries: list[Any] = []
    wanted: dict[str, list[str]] = {}
    for _, name, pk in keys:
        wanted.setdefault(name, []).append(pk)
    for name, pks in wanted.items():
        kind = kinds[name]
        found = kind.rows(alias, pks)
        for row in found:
            entry = entry_for(kind, row)
            entries.append([*entry, f"{UNSEALED}: {_unsealed.reason((alias, name, entry[1]))}"])
        if len(found) != len(pks):  # never committed (a transaction rolled back): nothing to list
            gone = set(pks) - {str(row[kind.model._meta.pk.attname]) for row in found}
            _unsealed.sealed([(alias, name, pk) for pk in gone])
    return entries


def autocommit(alias: str) -> bool:
    """Whether a statement on ``alias`` now is its own transaction (no ``atomic`` block open,
    autocommit on): then a write that is one statement needs neither BEGIN nor COMMIT,
    and CockroachDB retries such an implicit transaction itself."""
    connection = connections[alias]
    return not connection.in_atomic_block and connection.get_autocommit()


def insert_clause(connection: Any, instance: Model, texts: Mapping[str, str] | None = None) -> tuple[str, list[Any]]:
    """``INSERT INTO table (columns) VALUES (...)`` of one unsaved row, and its parameters
    (the statement's text made once per model and database vendor).

    ``texts``: JSON columns of the row already serialized (as the seal's digest wrote
    them), sent as they are where the database parses them into the same value whatever
    their spelling (``jsonb``: PostgreSQL, CockroachDB), instead of serialized again.
    """
    model = type(instance)
    statement = _inserts.get((connection.vendor, model))
    if statement is None:
        quote = connection.ops.quote_name
        fields = list(model._meta.concrete_fields)
        sql = (
            f"INSERT INTO {quote(model._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})"
        )
        statement = _inserts[connection.vendor, model] = (sql, fields)
    sql, fields = statement
    if not texts or _json_as_text(connection) is None:
        return sql, [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]
    params = []
    for f in fields:
        sent = _sent_as_text(connection, texts.get(f.attname))
        params.append(f.get_db_prep_save(getattr(instance, f.attname), connection) if sent is None else sent)
    return sql, params


#: ``(vendor, model)`` -> the INSERT of one row and the fields its parameters come from.
_inserts: dict[tuple[str, type[Model]], tuple[str, list[Any]]] = {}


def _json_as_text(connection: Any) -> Any:
    """The driver's ``jsonb`` parameter type, to send JSON text as it is (psycopg 3's
    ``Jsonb`` given the text and ``dumps=str``), or None where the text is not sent so:
    SQLite keeps a JSON column's text as sent, and psycopg2's wrapper is not this one."""
    vendor = connection.vendor
    if vendor not in _json_types:
        jsonb = _jsonb() if vendor in POSTGRES_VENDORS else None
        adapted = jsonb is not None and isinstance(connection.ops.adapt_json_value([], None), jsonb)
        _json_types[vendor] = jsonb if adapted else None
    return _json_types[vendor]


def _sent_as_text(connection: Any, text: str | None) -> Any:
    """The parameter sending the JSON ``text`` as it is (:func:`_json_as_text`), or None
    when it goes as Django sends its value. ASCII only: a lone surrogate in a value is
    refused as the value's own serialization has it refused (escaped), not by the
    driver's encoding."""
    if text is None or not text.isascii():
        return None
    as_sent = _json_as_text(connection)
    return None if as_sent is None else as_sent(text, dumps=str)


def _jsonb() -> Any:
    try:
        from psycopg.types.json import Jsonb
    except ImportError:  # psycopg2
        return None
    return Jsonb


#: Database vendor -> :func:`_json_as_text`'s answer.
_json_types: dict[str, Any] = {}


def insert(alias: str, row: Model) -> None:
    """One row, one raw INSERT: no signal, nothing read back and, in autocommit, no
    transaction of its own (``QuerySet.bulk_create`` opens one)."""
    connection = connections[alias]
    sql, params = insert_clause(connection, row)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def with_inserts(
    connection: Any, instances: Sequence[Model], texts: Mapping[int, Mapping[str, str]] | None = None
) -> tuple[str, list[Any]]:
    """``WITH ins_0 AS (INSERT ... RETURNING 1), ...`` of unsaved rows, and its parameters:
    the head of one data-modifying statement (PostgreSQL and CockroachDB), its last
    clause the caller's. ``texts``: JSON columns already serialized, by ``id()`` of the row."""
    clauses: list[str] = []
    params: list[Any] = []
    for n, instance in enumerate(instances):
        sql, values = insert_clause(connection, instance, texts.get(id(instance)) if texts else None)
        clauses.append(f"ins_{n} AS ({sql} RETURNING 1)")
        params.extend(values)
    return f"WITH {', '.join(clauses)}", params


def _insert_and_advance(
    alias: str,
    seal: tuple[Any, ...],
    entries_text: str,
    chain: SealChain,
    rows: list[Model],
    location: str | None,
    texts: Mapping[int, Mapping[str, str]] | None = None,
) -> tuple[int, str | None]:
    """The seal's INSERT (and the ``rows``' INSERT) and the chain's UPDATE in one statement
    (PostgreSQL and CockroachDB run data-modifying ``WITH`` clauses): one round trip.
    Returns how many chain rows it updated (0: the chain's row is gone) and where the
    row is now (``location``: where it was; see :data:`LOCATED`). ``seal``: its values in
    :data:`_SEAL_COLUMNS`' order; ``entries_text``: the
    seal's entries as its HMAC covered them; ``texts``: see :func:`with_inserts`."""
    connection = connections[alias]
    if rows:
        inserts, params = with_inserts(connection, rows, texts)
        inserts += ", "
    else:
        inserts, params = "WITH ", []
    sql, values = _seal_clause(connection, seal, entries_text)
    inserts += f"ins_{len(rows)} AS ({sql} RETURNING 1)"
    params.extend(values)
    update, update_params = _advance(connection, chain, location)
    with connection.cursor() as cursor:
        cursor.execute(f"{inserts} {update}", params + update_params)
        found = int(cursor.rowcount)
        if found or location is None:
            return found, (cursor.fetchone()[0] if found and connection.vendor in LOCATED else None)
        # Moved (VACUUM FULL, a restore): found by its key this once.
        update, update_params = _advance(connection, chain, None)
        cursor.execute(update, update_params)
        found = int(cursor.rowcount)
        return found, (cursor.fetchone()[0] if found and connection.vendor in LOCATED else None)


#: A seal's columns, as :func:`_seal_clause` gives their values.
_SEAL_COLUMNS = ("chain", "seq", "at", "key_id", "entries", "previous", "mac")


def _seal_row(values: tuple[Any, ...]) -> Seal:
    """The seal of ``values`` (in :data:`_SEAL_COLUMNS`' order) as a model instance."""
    return Seal(**dict(zip(_SEAL_COLUMNS, values, strict=True)))


def _seal_clause(connection: Any, seal: tuple[Any, ...], entries_text: str) -> tuple[str, list[Any]]:
    """The seal's INSERT and its parameters (PostgreSQL, CockroachDB): each value adapted
    as its field adapts it, without the checks a value from outside needs (gql_audit made
    every one: text, a whole number, an aware time), its entries as the text the HMAC
    covered. :func:`insert_clause` if the model has columns this does not know."""
    sql = _seal_inserts.get(connection.vendor)
    if sql is None:
        by_name = {f.attname: f for f in Seal._meta.concrete_fields}
        if set(by_name) != set(_SEAL_COLUMNS):
            return insert_clause(connection, _seal_row(seal), {"entries": entries_text})
        fields = [by_name[name] for name in _SEAL_COLUMNS]
        quote = connection.ops.quote_name
        sql = _seal_inserts[connection.vendor] = (
            f"INSERT INTO {quote(Seal._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "
            f"VALUES ({', '.join(['%s'] * len(fields))})"
        )
    chain, seq, at, key_id, entries, previous, seal_mac = seal
    ops = connection.ops
    sent = _sent_as_text(connection, entries_text)
    if sent is None:
        sent = ops.adapt_json_value(entries, None)
    seq = ops.adapt_integerfield_value(seq, "BigIntegerField")
    at = ops.adapt_datetimefield_value(at)
    return sql, [chain, seq, at, key_id, sent, previous, seal_mac]


#: Database vendor -> the seal's INSERT.
_seal_inserts: dict[str, str] = {}


def _insert_then_advance(alias: str, rows: list[Model], chain: SealChain) -> int:
    """The ``rows``' INSERTs, then the chain's UPDATE, one statement each (databases with no
    data-modifying ``WITH``): how many chain rows it updated (0: the chain's row is gone)."""
    connection = connections[alias]
    with connection.cursor() as cursor:
        for instance in rows:
            cursor.execute(*insert_clause(connection, instance))
        cursor.execute(*_advance(connection, chain, None))
        return int(cursor.rowcount)


def _advance(connection: Any, chain: SealChain, location: str | None) -> tuple[str, list[Any]]:
    """The UPDATE of a chain's row to its new head, at ``location`` when known."""
    located = location is not None
    sql = _advances.get((connection.vendor, located))
    if sql is None:
        quote = connection.ops.quote_name
        # The model's own names: these columns are named as their fields.
        sql = f"UPDATE {quote(SealChain._meta.db_table)} SET " + ", ".join(f"{quote(name)} = %s" for name in _ADVANCED)
        sql += " WHERE ctid = %s::tid AND " if located else " WHERE "
        sql += f"{quote('chain')} = %s"
        if connection.vendor in LOCATED:
            sql += " RETURNING ctid::text"
        _advances[connection.vendor, located] = sql
    params = [chain.head_seq, chain.head_mac, chain.key_id, chain.mac]
    if located:
        params.append(location)
    params.append(chain.chain)
    return sql, params


#: The columns a seal changes in its chain's row.
_ADVANCED = ("head_seq", "head_mac", "key_id", "mac")
#: ``(vendor, located)`` -> the chain's UPDATE.
_advances: dict[tuple[str, bool], str] = {}
