"""Fixed-window counters in Django's cache, shared by every worker and server.

A rate is ``"<count>/<period>"`` with the period in seconds (``"5/300s"``,
``"30/60"``) or one unit (``"10/m"``, ``"100/h"``, ``"1000/d"``). A count lives
under a key naming the rate, the window's start and a keyed hash (BLAKE2b,
keyed from ``SECRET_KEY``) of what is counted: no username or address is ever
written to the cache, and the keys are safe for any value (NUL, surrogates).
``cache.incr`` (and ``cache.add`` when a window starts) are atomic in Django's
Redis and local-memory caches, so concurrent requests never lose a count. On
Django's own Redis cache a count is added in one round trip instead
(``INCRBY`` and ``EXPIRE`` in one ``MULTI``/``EXEC``: :func:`gql_audit.compat.redis_add`).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import logging
import queue
import re
import reprlib
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gql_audit import context
from gql_audit.compat import RedisCommandRefused, load_cache_client, redis_add
from gql_audit.conf import conf
from gql_audit.net import parse_ip

logger = logging.getLogger("gql_audit.throttle")

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
    start = int(now) // rate.period * rate.period
    left = start + rate.period - int(now)
    return f"{KEY_PREFIX}:{name}:{rate.period}:{start}:{_digest(secret, value)}", max(left, 1)


@functools.lru_cache(maxsize=4096)
def _digest(secret: bytes, value: str) -> str:
    """The keyed hash a counted value is known by (the same clients and actors, request
    after request: each hashed once while it stays among the most recent)."""
    return hashlib.blake2b(value.encode("utf-8", "surrogatepass"), key=secret, digest_size=16).hexdigest()


def _cache() -> Any:
    """The throttle cache: the one instance of a cache in this process, else this thread's."""
    local = _local()
    if local is not None:
        return local
    from django.core.cache import caches

    return caches[conf.THROTTLE_CACHE]


def hit(name: str, rate: Rate, value: str, amount: int = 1) -> tuple[int, int]:
    """Count ``amount`` more for ``value``: ``(count in this window, seconds left)``."""
    key, left = _key(name, rate, value, time.time())
    return _add(key, amount, left), left


def _add(key: str, amount: int, left: int) -> int:
    """Add ``amount`` to the count at ``key`` (whose window has ``left`` seconds left): the new count."""

    def add_and_count() -> int:
        cache = _cache()
        alias = conf.THROTTLE_CACHE
        if alias not in _through_api:
            try:
                counted = redis_add(cache, key, amount, left + 1)  # Django's Redis cache: one round trip
            except RedisCommandRefused as exc:
                _count_through_api(alias, str(exc))
            else:
                if counted is not None:
                    return counted
        for _ in range(3):
            try:  # the common case, one call: the window's count exists
                return int(cache.incr(key, amount))
            except ValueError:  # a new window (or the count just expired)
                pass
            if cache.add(key, amount, timeout=left + 1):
                return amount
            # another request created it first: count on it
        raise ThrottleUnavailable("the count kept expiring")

    counted: int = _bounded(add_and_count)
    return counted


# --- counts taken ahead -------------------------------------------------------------------

#: A rate counted with :func:`take` lets a process take up to ``limit // AHEAD_SHARE`` counts
#: ahead of a value's requests (none when that is 0: rates under this many are counted exactly).
AHEAD_SHARE = 200
#: Values with counts taken ahead, per process and settings, at most (past it, room is made:
#: :func:`_make_room`).
MAX_AHEAD = 10_000


@dataclass
class _Ahead:
    """A value's counts this process has added to the cache and not used yet, in one window."""

    #: Counts added and not used.
    unused: int
    #: The count the value's latest request reached (what a refusal would name).
    position: int
    #: How many the next addition takes ahead (doubling up to the rate's share).
    step: int
    #: When its window ends (``time.time()``): past it, what it holds is worth nothing.
    until: float
    #: A request of this process is adding to the cache for it: others count exactly meanwhile.
    adding: bool = False


_ahead_lock = threading.Lock()


def take(name: str, rate: Rate, value: str, amount: int = 1) -> tuple[int, int]:
    """:func:`hit` for a rate counted on every request: ``(the count this request reaches,
    seconds left)``, refused above ``rate.limit``.

    A value this process sees again in a window has its counts added to the cache a few
    at a time, ahead of its requests: 1, 2, 4... more than asked, up to
    ``rate.limit // AHEAD_SHARE``; its next requests use them without asking the cache.
    What is taken ahead is counted at once and only below the rate, so no request is ever
    let past it, and a value is refused early by at most what the other processes hold
    unused (each ``rate.limit // AHEAD_SHARE`` at most). A value seen once a window costs
    what :func:`hit` costs and takes nothing ahead. If the cache loses the count (cleared,
    evicted, failed over), what the process held unused is still let through: at most
    its share more than the count restarted.
    """
    share = rate.limit // AHEAD_SHARE
    if share < 1:
        return hit(name, rate, value, amount)
    key, left = _key(name, rate, value, time.time())
    ahead: dict[str, _Ahead] = conf.derived("throttle_ahead", dict)
    with _ahead_lock:
        held = ahead.get(key)
        if held is not None and held.unused >= amount:
            # Counted in the cache already, below the rate: let through whatever others did since.
            held.unused -= amount
            held.position = min(held.position + amount, rate.limit)
            return held.position, left
        if held is None or held.adding:
            step, own = 0, 0  # seen first, or another request is taking ahead for it: exactly
        else:
            step, own = held.step, held.unused
            held.unused = 0  # used by this request, with what it adds
            held.adding = True
    try:
        position = _add(key, amount - own + step, left) - step
    except BaseException:
        _settle(ahead, key, own, step)
        raise
    unused = min(step, rate.limit - position)
    if unused < 0:
        _settle(ahead, key, own, step)  # refused: what it held stays for a request that fits
        return position, left
    with _ahead_lock:
        held = ahead.get(key)
        if held is None:
            if len(ahead) >= MAX_AHEAD:
                _make_room(ahead)
            ahead[key] = _Ahead(unused, position, 1, time.time() + left)
        else:
            held.unused += unused
            held.position = max(held.position, position)
            if step:
                held.step = min(held.step * 2, share)
                held.adding = False
    return position, left


def _settle(ahead: dict[str, _Ahead], key: str, own: int, step: int) -> None:
    """An addition that let nothing through: what the request held is held again."""
    if not step:
        return
    with _ahead_lock:
        held = ahead.get(key)
        if held is not None:
            held.unused += own
            held.adding = False


def _make_room(ahead: dict[str, _Ahead]) -> None:
    """Drop the values holding nothing (seen once: most of them) or whose window is over,
    else all (under the lock)."""
    now = time.time()
    for key in [key for key, held in ahead.items() if not held.unused or held.until <= now]:
        del ahead[key]
    if len(ahead) >= MAX_AHEAD:
        ahead.clear()


#: Throttle cache aliases whose Redis refused :func:`redis_add`'s commands: counted through the cache API.
_through_api: set[str] = set()


def _count_through_api(alias: str, reason: str) -> None:
    """From now on, count on ``alias`` through the cache API (said once per process)."""
    with _state:
        if alias in _through_api:
            return
        _through_api.add(alias)
    logger.warning(
        "throttle cache %r refused MULTI/INCRBY/EXPIRE (%s): counting through the cache API instead, "
        "a round trip more per count (allow those commands to save it)",
        alias,
        reason,
    )


def count(name: str, rate: Rate, value: str) -> tuple[int, int]:
    """The count of ``value`` in this window, without adding to it, and the seconds left."""
    key, left = _key(name, rate, value, time.time())
    found = _bounded(lambda: _cache().get(key, 0))
    return (found if isinstance(found, int) else 0), left


@functools.lru_cache(maxsize=4096)
def address_key(address: str | None) -> str:
    """What a client address is counted as: an IPv6 address by its /64 (one subscriber's
    network, within which a client picks addresses at will), any other as it is."""
    ip = parse_ip(address)  # an IPv4 address mapped into IPv6 comes back as IPv4
    if ip is None:
        return address or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


# --- a cache that does not answer -------------------------------------------------------

#: Seconds the cache is left alone after it failed to answer, before one request tries it again.
RETRY_AFTER = 1.0
#: Threads waiting on a network cache at once, at most; past it, requests go unthrottled.
WORKERS = 32

_state = threading.Lock()


@dataclass
class _Outage:
    """A throttle cache that failed to answer: left alone until ``until`` (``time.monotonic()``)."""

    until: float
    reason: str
    skipped: int = 0


#: Cache alias -> its outage, while it lasts.
_outages: dict[str, _Outage] = {}


def _bounded(call: Callable[[], Any]) -> Any:
    """``call()``, given at most ``THROTTLE_TIMEOUT`` seconds of the request's time.

    A cache in this process (local memory, dummy) cannot block and is asked inline.
    Any other is asked from a worker thread: a cache that hangs, or a client that
    retries with backoff, delays no request past the timeout. Once the cache has
    failed, it is left alone for :data:`RETRY_AFTER` seconds (requests pass at once,
    unthrottled), then tried again; both changes are logged.
    """
    if _local() is not None:
        try:
            return call()
        except ThrottleUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - a custom cache raises its own
            raise ThrottleUnavailable(type(exc).__name__) from exc
    alias = conf.THROTTLE_CACHE
    outage = _outages.get(alias)
    if outage is not None and time.monotonic() < outage.until:
        with _state:
            outage.skipped += 1
        raise ThrottleUnavailable(f"{outage.reason}; not asked again for {RETRY_AFTER:g}s")

    def answered() -> Any:
        result = call()
        if alias in _outages:  # it answered after all, if late (a first connection, a slow moment)
            _came_back(alias)
        return result

    try:
        return _pool.run(answered, _time_left())
    except ThrottleUnavailable as exc:
        _went_down(alias, str(exc))
        raise


def _time_left() -> float:
    """Seconds this request may still wait on the cache: ``THROTTLE_TIMEOUT`` in all."""
    timeout = float(conf.THROTTLE_TIMEOUT)
    ctx = context.current()
    if ctx is None:
        return timeout
    now = time.monotonic()
    if ctx.throttle_deadline is None:
        ctx.throttle_deadline = now + timeout
    return max(ctx.throttle_deadline - now, 0.0)


def _local() -> Any:
    """The throttle cache when it lives in this process (local memory, dummy), else None.

    Such a cache keeps its data in module-level storage under its own lock, so one
    instance serves every thread (Django hands out one per thread, through a lookup each
    request would pay); a network cache's client is asked for per thread, as Django gives it.
    Worked out once per settings, in the request's own thread, which also loads a network
    cache's client library then: its import is not the cache failing to answer, and must
    not spend a first request's ``THROTTLE_TIMEOUT`` (a new process's first call would
    otherwise time out, be logged as an outage and count nothing).
    """

    def build() -> Any:
        from django.core.cache import caches
        from django.core.cache.backends.dummy import DummyCache
        from django.core.cache.backends.locmem import LocMemCache

        try:
            cache = caches[conf.THROTTLE_CACHE]
        except Exception:  # noqa: BLE001 - an alias Django refuses: asked as a network cache, which reports it
            return None
        if isinstance(cache, (LocMemCache, DummyCache)):
            return cache
        load_cache_client(cache)
        return None

    return conf.derived("throttle_cache_local", build)


def _went_down(alias: str, reason: str) -> None:
    with _state:
        outage = _outages.get(alias)
        if outage is not None:
            outage.until, outage.reason = time.monotonic() + RETRY_AFTER, reason
            return
        _outages[alias] = _Outage(time.monotonic() + RETRY_AFTER, reason)
    logger.warning("throttle cache %r unavailable (%s): requests are not throttled until it answers", alias, reason)


def _came_back(alias: str) -> None:
    with _state:
        outage = _outages.pop(alias, None)
    if outage is not None:
        logger.warning("throttle cache %r answers again (%d requests went unthrottled)", alias, outage.skipped)


class _Pool:
    """Daemon threads that ask the cache for requests which will not wait past a deadline."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self.threads = 0
        self.lock = threading.Lock()
        self.jobs: queue.SimpleQueue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.SimpleQueue()

    def run(self, call: Callable[[], Any], timeout: float) -> Any:
        if timeout <= 0:
            raise ThrottleUnavailable("the request's THROTTLE_TIMEOUT is spent")
        with self.lock:
            if self.busy >= self.size:  # every worker is stuck on the cache: do not queue behind them
                raise ThrottleUnavailable("every throttle worker is waiting on the cache")
            self.busy += 1
            if self.threads < self.busy:
                self.threads += 1
                threading.Thread(target=self._work, name="gql_audit-throttle", daemon=True).start()
        box: list[Any] = []
        done = threading.Event()
        self.jobs.put((call, box, done))
        if not done.wait(timeout):
            raise ThrottleUnavailable(f"no answer within THROTTLE_TIMEOUT ({timeout:g}s)")
        ok, value = box[0]
        if ok:
            return value
        if isinstance(value, ThrottleUnavailable):
            raise value
        raise ThrottleUnavailable(type(value).__name__) from value

    def _work(self) -> None:
        while True:
            call, box, done = self.jobs.get()
            try:
                box.append((True, call()))
            except Exception as exc:  # noqa: BLE001 - redis, memcached and database caches raise their own
                box.append((False, exc))
            finally:
                with self.lock:
                    self.busy -= 1
                done.set()


_pool = _Pool(WORKERS)
