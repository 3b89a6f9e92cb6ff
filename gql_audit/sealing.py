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
import os
import threading
import uuid
from collections.abc import Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

from django.db import connections, transaction
from django.db.models import Model
from django.utils import timezone

from gql_audit.compat import pending_on_commit
from gql_audit.conf import conf
from gql_audit.dbcontext import POSTGRES_VENDORS
from gql_audit.models import RequestReads, Seal, SealChain, SecurityEvent

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
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value


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
        columns = {}
        for name, convert in _converters(self):
            value = row[name]
            columns[name] = None if value is None else convert(value)
        text = json.dumps(columns, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
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
        """What the database will return for ``instance`` just saved by gql_audit itself: its
        JSON values through one encoding round trip (tuples become lists, keys strings)."""
        from django.db.models import JSONField

        row: dict[str, Any] = {}
        json_values: dict[str, Any] = {}
        encoder = None
        for field in self.model._meta.concrete_fields:
            value = getattr(instance, field.attname)
            if isinstance(field, JSONField) and value is not None and field.encoder is encoder:
                json_values[field.attname] = value  # one round trip for all of them, below
            elif isinstance(field, JSONField) and value is not None:
                value = json.loads(json.dumps(value, cls=field.encoder))
            row[field.attname] = value
        if json_values:
            row.update(json.loads(json.dumps(json_values)))
        return row


#: Model label -> its columns and how each becomes canonical.
_converters_cache: dict[str, list[tuple[str, Any]]] = {}


def _converters(kind: RecordKind) -> list[tuple[str, Any]]:
    """A kind's column converters, worked out once (a swapped ``LogEntry`` model is its own key)."""
    key = kind.model._meta.label
    found = _converters_cache.get(key)
    if found is None:
        found = _converters_cache[key] = kind.converters()
    return found


#: LogEntry model -> the record kinds (auditlog's model is a setting).
_kinds_cache: dict[type[Model], dict[str, RecordKind]] = {}


def record_kinds() -> dict[str, RecordKind]:
    from auditlog import get_logentry_model

    entry_model = get_logentry_model()
    kinds = _kinds_cache.get(entry_model)
    if kinds is None:
        kinds = _kinds_cache[entry_model] = {
            EVENT: RecordKind(EVENT, SecurityEvent, "actor_id", "created_at"),
            READS: RecordKind(READS, RequestReads, None, "at"),
            ENTRY: RecordKind(ENTRY, entry_model, "actor_id", "timestamp"),
        }
    return kinds


def entry_for(kind: RecordKind, row: dict[str, Any]) -> list[Any]:
    """``[kind, pk, digest, subkind, actor pk, time]``: what a seal says of one record."""
    pk = str(row[kind.model._meta.pk.attname])
    return [kind.name, pk, kind.digest(row), kind.subkind(row), actor_text(kind, row), _plain(row[kind.at])]


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
        _plain(chain.started_at),
        str(chain.base_seq),
        chain.base_mac,
        str(chain.head_seq),
        chain.head_mac,
        chain.key_id,
    ]


# --- the writer's chain -----------------------------------------------------------------------


class _Writer(threading.local):
    def __init__(self) -> None:
        self.chain: SealChain | None = None
        #: The UTC day (``YYYYMMDD``) ``chain`` belongs to.
        self.day = ""
        #: ``(seq, mac)`` of the newest seal of ``chain`` the database has committed.
        self.committed: tuple[int, str] | None = None
        #: ``(seq, mac, on_commit callback)`` of a seal written in a transaction still open.
        self.pending: tuple[int, str, Any] | None = None


_writer = _Writer()


def forget() -> None:
    """Start a new chain at this thread's next seal (after a seal failed: whether its
    position was taken cannot be known)."""
    _writer.__init__()  # type: ignore[misc]


# A child process must not go on with its parent's chain: both would write its next position.
os.register_at_fork(after_in_child=forget)


def _chain_for(alias: str, now: datetime.datetime, kid: str, key: bytes) -> tuple[SealChain, int, str, bool]:
    """This thread's chain for today and its head: ``(chain, seq, mac, new)``."""
    writer = _writer
    if writer.pending is not None and not pending_on_commit(connections[alias], writer.pending[2]):
        # Neither run nor waiting: rolled back with its transaction (or savepoint), or
        # committed with a callback registered before ours raising, which stops Django
        # running the rest. Which one cannot be known: the thread starts a new chain.
        writer.pending = writer.committed = None
    if writer.pending is not None:
        chain = writer.chain
        assert chain is not None
        return chain, writer.pending[0], writer.pending[1], False
    chain = writer.chain
    day = now.strftime("%Y%m%d")
    if chain is None or writer.committed is None or writer.day != day or chain._state.db != alias:
        # Random part first: concurrent writers' seals, keyed (chain, seq), spread over the key space.
        chain = SealChain(chain=f"{uuid.uuid4().hex[:20]}-{day}", started_at=now, base_seq=0, head_seq=0, key_id=kid)
        chain.base_mac = chain.head_mac = anchor(key, chain)
        chain._state.db = alias
        writer.chain, writer.committed, writer.day = chain, None, day
        return chain, 0, chain.base_mac, True
    seq, previous = writer.committed
    return chain, seq, previous, False


def seal(alias: str, records: Mapping[str, Iterable[Any]], insert: list[Model] | None = None) -> int:
    """Seal the records ``{kind: primary keys}`` just written on ``alias``; returns how many.

    A ``RequestReads`` instance gql_audit has just written may stand for its key: it is
    sealed as saved, with no read back. ``insert``: such rows not yet saved, which the
    seal's statement inserts. Runs inside the transaction that wrote them: the seal
    commits with them, or neither does.
    """
    kinds = record_kinds()
    entries: list[Any] = []
    for name, items in records.items():
        kind = kinds[name]
        ids = []
        for item in items:
            if isinstance(item, RequestReads):
                entries.append(entry_for(kind, kind.row_of(item)))
            else:
                ids.append(item)
        if ids:
            entries.extend(entry_for(kind, row) for row in kind.rows(alias, ids))
    if not entries:
        return 0
    append(alias, sorted(entries, key=lambda entry: (entry[0], entry[1])), insert or [])
    return len(entries)


def append(alias: str, entries: list[Any], insert: list[Model] | None = None) -> None:
    """Add one seal listing ``entries`` to this thread's chain (and INSERT the rows
    ``insert``, in the same statement where the database allows)."""
    kid, key = current_key()
    now = timezone.now()
    connection = connections[alias]
    chain, seq, previous, new = _chain_for(alias, now, kid, key)
    seq += 1
    seal_mac = mac(key, *seal_text(chain.chain, seq, previous, _plain(now), kid, entries))
    seal = Seal(chain=chain.chain, seq=seq, at=now, key_id=kid, entries=entries, previous=previous, mac=seal_mac)
    chain.head_seq, chain.head_mac, chain.key_id = seq, seal_mac, kid
    chain.mac = mac(key, *chain_text(chain))
    one_statement = not new and connection.vendor in POSTGRES_VENDORS
    # No savepoint: inside the caller's transaction (the records' own) it adds no
    # statement. One statement outside any transaction is its own: no BEGIN, no COMMIT.
    with nullcontext() if one_statement else transaction.atomic(using=alias, savepoint=False):
        if one_statement:
            _insert_and_advance(alias, seal, chain, insert or [])
        else:
            for row in insert or ():
                row.save(using=alias, force_insert=True)
            if new:
                chain.save(using=alias, force_insert=True)
            seal.save(using=alias, force_insert=True)
            if not new:
                SealChain.objects.using(alias).filter(chain=chain.chain).update(
                    head_seq=seq, head_mac=seal_mac, key_id=kid, mac=chain.mac
                )

        def committed() -> None:
            if _writer.chain is chain:
                _writer.committed = (seq, seal_mac)
                if _writer.pending is not None and _writer.pending[0] == seq:
                    _writer.pending = None

        if autocommit(alias):
            committed()  # one statement in autocommit: committed already
        else:
            _writer.pending = (seq, seal_mac, committed)
            transaction.on_commit(committed, using=alias)


def autocommit(alias: str) -> bool:
    """Whether a statement on ``alias`` now is its own transaction (no ``atomic`` block open,
    autocommit on): then a write that is one statement needs neither BEGIN nor COMMIT,
    and CockroachDB retries such an implicit transaction itself."""
    connection = connections[alias]
    return not connection.in_atomic_block and connection.get_autocommit()


def insert_clause(connection: Any, instance: Model) -> tuple[str, list[Any]]:
    """``INSERT INTO table (columns) VALUES (...)`` of one unsaved row, and its parameters."""
    quote = connection.ops.quote_name
    fields = list(type(instance)._meta.concrete_fields)
    sql = (
        f"INSERT INTO {quote(type(instance)._meta.db_table)} ({', '.join(quote(str(f.column)) for f in fields)}) "
        f"VALUES ({', '.join(['%s'] * len(fields))})"
    )
    return sql, [f.get_db_prep_save(getattr(instance, f.attname), connection) for f in fields]


def _insert_and_advance(alias: str, seal: Seal, chain: SealChain, rows: list[Model]) -> None:
    """The seal's INSERT (and the ``rows``' INSERT) and the chain's UPDATE in one statement
    (PostgreSQL and CockroachDB run data-modifying ``WITH`` clauses): one round trip."""
    connection = connections[alias]
    quote = connection.ops.quote_name
    clauses: list[str] = []
    params: list[Any] = []
    for n, instance in enumerate([*rows, seal]):
        sql, values = insert_clause(connection, instance)
        clauses.append(f"ins_{n} AS ({sql} RETURNING 1)")
        params.extend(values)
    updated = ["head_seq", "head_mac", "key_id", "mac"]
    # The model's own names: these columns are named as their fields.
    sql = (
        f"WITH {', '.join(clauses)} UPDATE {quote(SealChain._meta.db_table)} SET "
        + ", ".join(f"{quote(name)} = %s" for name in updated)
        + f" WHERE {quote('chain')} = %s"
    )
    params.extend([*(getattr(chain, name) for name in updated), chain.chain])
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
