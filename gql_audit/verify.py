"""Verify the sealed trail (``TAMPER_EVIDENCE``): what ``gql_audit_verify`` runs.

Every chain is walked from its anchor (or the point a ``--since`` starts at):
each seal's HMAC must follow from the one before, its positions must have no gap
up to the chain's sealed head, and each record a seal lists must still be
stored as it was. Records the seals do not list, stored since sealing began,
were inserted. Records a purge checkpoint covers may be gone.
"""

from __future__ import annotations

import datetime
import hmac
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth import get_user_model

from gql_audit import sealing
from gql_audit.models import Seal, SealChain

CHUNK = 1000


@dataclass(frozen=True)
class Problem:
    #: ``edited``, ``deleted``, ``inserted`` (records); ``seal missing``, ``seal forged``,
    #: ``chain edited``, ``unknown key`` (the seals themselves).
    what: str
    #: ``event``, ``reads``, ``entry`` (a record), or ``seal`` / ``chain``.
    kind: str
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
    actor: Any
    at: str
    chain: str
    position: int


def verify(since: datetime.datetime | None = None, using: str = "default") -> Report:
    """Check every seal and every record written since ``since`` (all when None)."""
    keys = sealing.keys()
    report = Report()
    sealed: dict[tuple[str, str], _Sealed] = {}
    checkpoints: list[tuple[str, str]] = []
    chains = SealChain.objects.using(using).order_by("started_at")
    first_start: datetime.datetime | None = None
    for chain in chains:
        report.chains += 1
        first_start = chain.started_at if first_start is None else min(first_start, chain.started_at)
        _walk(chain, keys, since, using, report, sealed, checkpoints)
    for name, kind in sealing.record_kinds().items():
        _check_records(name, kind, since, first_start, using, report, sealed, checkpoints)
    return report


def _walk(
    chain: SealChain,
    keys: dict[str, bytes],
    since: datetime.datetime | None,
    using: str,
    report: Report,
    sealed: dict[tuple[str, str], _Sealed],
    checkpoints: list[tuple[str, str]],
) -> None:
    key = keys.get(chain.key_id)
    if key is None:
        report.problems.append(Problem("unknown key", "chain", chain.chain, chain.chain, None, chain.key_id))
        return
    chain_ok = hmac.compare_digest(chain.mac, sealing.mac(key, *sealing.chain_text(chain)))
    if not chain_ok:
        report.problems.append(Problem("chain edited", "chain", chain.chain, chain.chain))
    seals = Seal.objects.using(using).filter(chain=chain.chain, seq__gt=chain.base_seq).order_by("seq")
    expected, previous = chain.base_seq + 1, chain.base_mac
    if since is not None:
        first = seals.filter(at__gte=since).first()
        if first is None:
            return
        before = Seal.objects.using(using).filter(chain=chain.chain, seq=first.seq - 1).first()
        if first.seq - 1 > chain.base_seq:
            expected, previous = first.seq, before.mac if before is not None else ""
        seals = seals.filter(seq__gte=first.seq)
    last = chain.base_seq
    for seal in seals.iterator(chunk_size=CHUNK):
        report.seals += 1
        for missing in range(expected, seal.seq):
            report.problems.append(Problem("seal missing", "seal", str(missing), chain.chain, missing))
        if seal.seq != expected:
            previous = ""  # the link to a missing seal cannot be checked
        seal_key = keys.get(seal.key_id)
        if seal_key is None:
            report.problems.append(Problem("unknown key", "seal", str(seal.seq), chain.chain, seal.seq, seal.key_id))
        elif previous:
            text = sealing.seal_text(
                chain.chain, seal.seq, previous, sealing._plain(seal.at), seal.key_id, seal.entries
            )
            if not hmac.compare_digest(seal.mac, sealing.mac(seal_key, *text)):
                report.problems.append(Problem("seal forged", "seal", str(seal.seq), chain.chain, seal.seq))
        for entry in seal.entries if isinstance(seal.entries, list) else []:
            if not isinstance(entry, list) or len(entry) != 6:
                continue
            name, pk, digest, subkind, actor, at = entry
            if name == sealing.PURGE:
                checkpoints.append((str(pk), str(digest)))
                continue
            sealed[(str(name), str(pk))] = _Sealed(str(digest), str(subkind), actor, str(at), chain.chain, seal.seq)
        previous, expected, last = seal.mac, seal.seq + 1, seal.seq
    for missing in range(last + 1, chain.head_seq + 1):
        report.problems.append(Problem("seal missing", "seal", str(missing), chain.chain, missing))
    if chain_ok and last == chain.head_seq and previous and previous != chain.head_mac:
        report.problems.append(Problem("seal forged", "seal", str(last), chain.chain, last, "not the sealed head"))


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), CHUNK):
        yield items[start : start + CHUNK]


def _check_records(
    name: str,
    kind: sealing.RecordKind,
    since: datetime.datetime | None,
    first_start: datetime.datetime | None,
    using: str,
    report: Report,
    sealed: dict[tuple[str, str], _Sealed],
    checkpoints: list[tuple[str, str]],
) -> None:
    fields = [*kind.columns(), *([kind.actor] if kind.actor else [])]
    manager = kind.model._default_manager.using(using)
    pk_name = kind.model._meta.pk.attname
    mine = [pk for (kind_name, pk) in sealed if kind_name == name]
    seen: set[str] = set()
    users = get_user_model()._default_manager
    for chunk in _chunks(mine):
        for row in manager.filter(pk__in=chunk).values(*fields):
            pk = str(row[pk_name])
            seen.add(pk)
            report.records += 1
            info = sealed[(name, pk)]
            if kind.digest(row) != info.digest:
                report.problems.append(Problem("edited", name, pk, info.chain, info.position))
            elif kind.actor and row[kind.actor] != info.actor:
                gone = row[kind.actor] is None and not users.filter(pk=info.actor).exists()
                if not gone:
                    report.problems.append(Problem("edited", name, pk, info.chain, info.position, "actor"))
    for pk in mine:
        if pk in seen:
            continue
        info = sealed[(name, pk)]
        if not any(_purged(info, scope, cutoff) for scope, cutoff in checkpoints):
            report.problems.append(Problem("deleted", name, pk, info.chain, info.position))
    unsealed = manager.order_by()
    if since is not None:
        unsealed = unsealed.filter(**{f"{kind.at}__gte": since})
    for row in unsealed.values(pk_name, kind.at).iterator(chunk_size=CHUNK):
        pk = str(row[pk_name])
        if pk in seen:
            continue
        if first_start is not None and row[kind.at] >= first_start:
            report.problems.append(Problem("inserted", name, pk))
        else:
            report.not_covered += 1


def _purged(info: _Sealed, scope: str, cutoff: str) -> bool:
    """Whether a purge checkpoint (``scope`` before ``cutoff``) explains the record's absence."""
    if info.at >= cutoff:
        return False
    if scope == "all":
        return info.subkind != "change"
    if scope == "access":
        return info.subkind in ("access", sealing.READS)
    return scope == f"event:{info.subkind}"
