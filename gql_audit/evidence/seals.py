"""Seals as stored: read back whatever the tables hold, and judged one by one.

What ``gql_audit_verify`` and ``gql_audit_checkpoint`` share: a seal's row read with its
entries as text (a value no JSON decoder reads is a forged seal, not a crash), the
verdict on one seal by its own HMAC, and whether a retired key made it.
"""

from __future__ import annotations

import datetime
import hmac
import json
from typing import Any

from django.db.models import TextField
from django.db.models.functions import Cast
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from gql_audit.evidence import sealing


def read_entries(text: str | None) -> list[Any] | None:
    """A seal's entries from their stored text, or None when they cannot be read."""
    try:
        entries = json.loads(text) if isinstance(text, str) else None
    except (ValueError, RecursionError):
        return None
    return entries if isinstance(entries, list) else None


def seal_rows(seals: Any) -> Any:
    """Seals as tuples, by position unless ordered otherwise, their entries as stored
    text (read guarded: see :func:`read_entries`)."""
    seals = seals if seals.query.order_by else seals.order_by("seq")
    return seals.annotate(entries_text=Cast("entries", TextField())).values_list(
        "seq", "at", "key_id", "previous", "mac", "entries_text"
    )


def verdict(
    chain: str,
    seq: Any,
    at: Any,
    kid: str,
    previous: Any,
    seal_mac: Any,
    entries: list[Any] | None,
    keys: dict[str, bytes],
    retired: dict[str, datetime.datetime],
) -> str | None:
    """What is wrong with one seal on its own (``unknown key``, ``seal forged``,
    ``retired key``), or None when its stored HMAC is the one its content makes."""
    key = keys.get(kid)
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
    expected = sealing.mac(key, *sealing.seal_text(chain, seq, previous, sealing._plain(at), kid, entries))
    if not hmac.compare_digest(seal_mac, expected):
        return "seal forged"
    return "retired key" if after_retirement(kid, at, retired, entries) else None


def after_retirement(
    kid: str, at: Any, retired: dict[str, datetime.datetime], entries: list[Any] | None = None
) -> bool:
    """Whether something sealed with key ``kid`` is dated after that key was retired, or
    lists a record that is: only someone who kept the retired key can have made it."""
    until = retired.get(kid)
    if until is None:
        return False
    stamps = [at, *(e[5] for e in entries or () if isinstance(e, list) and len(e) in (6, 7) and e[5])]
    for stamp in stamps:
        moment = when(stamp, until)
        if moment is None or moment > until:
            return True
    return False


def when(raw: Any, reference: datetime.datetime | None) -> datetime.datetime | None:
    """A stored time, comparable with ``reference``; None when it is not a time."""
    try:
        at = raw if isinstance(raw, datetime.datetime) else _parse(raw) if isinstance(raw, str) else None
    except ValueError:  # the form of a time, not one (February 30th)
        return None
    if at is not None and reference is not None and (at.tzinfo is None) != (reference.tzinfo is None):
        # Stored naive in UTC (USE_TZ), or compared with an aware ``until`` without USE_TZ.
        at = at.replace(tzinfo=reference.tzinfo) if at.tzinfo is None else timezone.make_naive(at, datetime.UTC)
    return at


def _parse(text: str) -> datetime.datetime | None:
    """ISO 8601 as gql_audit writes it, quickly; any other spelling Django reads."""
    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        return parse_datetime(text)
