"""Fixed-window counters in Django's cache, shared by every worker and server.

A rate is ``"<count>/<period>"`` with the period in seconds (``"5/300s"``,
``"30/60"``) or one unit (``"10/m"``, ``"100/h"``, ``"1000/d"``). A count lives
under a key naming the rate, the window's start and a keyed hash (BLAKE2b,
keyed from ``SECRET_KEY``) of what is counted: no username or address is ever
written to the cache, and the keys are safe for any value (NUL, surrogates).
``cache.add`` then ``cache.incr`` are atomic in Django's Redis and local-memory
caches, so concurrent requests never lose a count.
"""

from __future__ import annotations

import hashlib
import re
import reprlib
import time
import unicodedata
from dataclasses import dataclass
from typing import Any

from gql_audit.conf import conf

RATE = re.compile(r"\s*(\d+)\s*/\s*(\d*)\s*([smhd]?)\s*")
UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
KEY_PREFIX = "gql_audit:throttle"
#: Values hashed for a key are cut here: longer ones still count, as their prefix.
MAX_VALUE = 1024


class ThrottleUnavailable(Exception):
    """The throttle cache could not be read or written."""


@dataclass(frozen=True)
class Rate:
    limit: int
    period: int
    text: str


def parse_rate(text: Any) -> Rate:
    """``"5/300s"`` -> ``Rate(5, 300)``; ``ValueError`` for anything else."""
    match = RATE.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not a rate such as '5/300s'")
    limit, multiple, unit = int(match[1]), int(match[2] or 1), UNITS[match[3]]
    if limit < 1 or multiple < 1:
        raise ValueError(f"{text!r}: the count and the period must be at least 1")
    return Rate(limit, multiple * unit, text)


def rate(name: str) -> Rate | None:
    """The configured rate ``name`` of ``THROTTLE``, or None when it is not set."""

    def build() -> dict[str, Rate]:
        rates: dict[str, Rate] = {}
        for key, value in (conf.THROTTLE or {}).items():
            try:
                rates[key] = parse_rate(value)
            except ValueError:
                continue  # the system check reports it
        return rates

    rates: dict[str, Rate] = conf.derived("throttle_rates", build)
    return rates.get(name)


def normalised(value: Any) -> str:
    """What is counted for ``value``: usernames compared as Django normalises them, and case-folded."""
    # reprlib: bounded in depth and length, whatever a client nested in a variable.
    text = value if isinstance(value, str) else reprlib.repr(value)
    return unicodedata.normalize("NFKC", text[:MAX_VALUE]).casefold()


def _key(name: str, rate: Rate, value: str, now: float) -> tuple[str, int]:
    """The cache key of ``value`` in the current window, and the seconds the window has left."""
    from django.conf import settings

    def build() -> bytes:
        secret = str(getattr(settings, "SECRET_KEY", "")).encode("utf-8", "surrogatepass")
        return hashlib.sha256(b"gql_audit.throttle:" + secret).digest()

    secret: bytes = conf.derived("throttle_key", build)
    digest = hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=secret, digest_size=16).hexdigest()
    start = int(now) // rate.period * rate.period
    left = start + rate.period - int(now)
    return f"{KEY_PREFIX}:{name}:{rate.period}:{start}:{digest}", max(left, 1)


def _cache() -> Any:
    from django.core.cache import caches

    return caches[conf.THROTTLE_CACHE]


def hit(name: str, rate: Rate, value: str, amount: int = 1) -> tuple[int, int]:
    """Count ``amount`` more for ``value``: ``(count in this window, seconds left)``."""
    key, left = _key(name, rate, value, time.time())
    try:
        cache = _cache()
        for _ in range(3):
            cache.add(key, 0, timeout=left + 1)
            try:
                return int(cache.incr(key, amount)), left
            except ValueError:  # expired between add and incr: add again
                continue
    except Exception as exc:  # noqa: BLE001 - redis, memcached and database caches raise their own
        raise ThrottleUnavailable(type(exc).__name__) from exc
    raise ThrottleUnavailable("the count kept expiring")


def count(name: str, rate: Rate, value: str) -> tuple[int, int]:
    """The count of ``value`` in this window, without adding to it, and the seconds left."""
    key, left = _key(name, rate, value, time.time())
    try:
        found = _cache().get(key, 0)
    except Exception as exc:  # noqa: BLE001 - as in hit()
        raise ThrottleUnavailable(type(exc).__name__) from exc
    return (found if isinstance(found, int) else 0), left
