"""The signing keys of a JSON Web Key Set (JWKS), read from a URL or a file.

Read when first needed and kept for the lifetime the server gives
(``Cache-Control: max-age``, held between :data:`MIN_LIFETIME` and
:data:`MAX_LIFETIME`; :data:`DEFAULT_LIFETIME` without one, and for a file).
Read again before then only for a token naming a key (``kid``) it does not hold,
at most once every :data:`REFETCH_INTERVAL`, and never once per request:
requests that arrive while a fetch is under way wait for that one. A fetch is
bounded as a whole by :data:`TIMEOUT` (however slowly the server answers) and in
size by :data:`MAX_BYTES`. After a failed fetch the next is tried no sooner than
:data:`RETRY_INTERVAL`; meanwhile the keys last read stay in use for
:data:`STALE_IF_ERROR` past their lifetime (or the server's ``stale-if-error``),
so that an identity provider's short outage is not the service's.

PyJWT's ``PyJWKClient`` caches and refetches too, but reads an answer of any size,
bounds each socket read rather than the fetch (a server that trickles bytes
holds it, and every request behind its lock, for as long as it likes), fetches
again on every request while the server is down, drops its keys when their
lifetime ends even if the refetch fails, and reads no file. The keys themselves
are PyJWT's :class:`jwt.PyJWK`.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import jwt
from jwt import PyJWK

from gql_audit.auth.base import AuthUnavailable

logger = logging.getLogger("gql_audit.auth")

#: Seconds a whole fetch may take: connecting, the answer's headers and its body.
TIMEOUT = 5.0
#: The largest answer read; a JWKS of a few keys is a few KiB.
MAX_BYTES = 256 * 1024
DEFAULT_LIFETIME = 300.0
MIN_LIFETIME = 60.0
MAX_LIFETIME = 86400.0
#: At most one fetch for an unknown ``kid`` in this many seconds.
REFETCH_INTERVAL = 30.0
#: After a failed fetch, no other for this many seconds.
RETRY_INTERVAL = 10.0
#: How long past their lifetime the keys last read are used while fetching fails.
STALE_IF_ERROR = 3600.0
MAX_STALE = 86400.0
#: Key types that verify a signature with a public key. A symmetric ("oct") key
#: published in a key set is a secret everyone has: it verifies nothing.
PUBLIC_KEY_TYPES = frozenset({"RSA", "EC", "OKP"})
USER_AGENT = "gql-audit (JWKS)"

#: A key's type does not fit the algorithm it is built for, or its numbers are wrong.
_KEY_ERRORS = (jwt.PyJWTError, ValueError, TypeError, KeyError, AttributeError)


class FetchFailed(Exception):
    """The key set could not be read, or what was read is not a usable key set."""


@dataclass(frozen=True)
class Fetched:
    #: ``kid`` -> the JWKs published under it (usually one).
    keys: dict[str, tuple[dict[str, Any], ...]]
    lifetime: float
    stale: float


def is_url(source: str) -> bool:
    return urlsplit(source).scheme.lower() in ("http", "https")


def describe(source: str) -> str:
    """``source`` as logs and events show it: a URL without credentials, query or fragment."""
    if not is_url(source):
        return source
    parts = urlsplit(source)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme.lower()}://{parts.hostname or ''}{port}{parts.path}"


def fetch(source: str, timeout: float, limit: int = MAX_BYTES) -> Fetched:
    if is_url(source):
        body, cache_control = http_get(source, timeout, limit)
    else:
        body, cache_control = read_file(source, limit), ""
    lifetime, stale = lifetimes(cache_control)
    return Fetched(parse_key_set(body), lifetime, stale)


def http_get(url: str, timeout: float, limit: int) -> tuple[bytes, str]:
    """The body and ``Cache-Control`` of a 200 answer to ``GET url``, within ``timeout`` in all.

    A timer shuts the socket down when the time is up: a socket timeout alone
    bounds each read, not the answer of a server that sends a byte at a time.
    Redirects are not followed (configure the URL they name).
    """
    parts = urlsplit(url)
    try:
        host, port = parts.hostname or "", parts.port
    except ValueError as exc:
        raise FetchFailed(f"the URL is invalid ({exc})") from None
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    connection: http.client.HTTPConnection
    if parts.scheme.lower() == "https":
        connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout)
    expired = threading.Event()
    # The connection lets go of its socket once an answer says it will close it.
    held: list[socket.socket] = []

    def abort() -> None:
        expired.set()
        for sock in held:
            with contextlib.suppress(OSError):
                # The plain socket's shutdown: an SSL socket's own would drop its
                # state under the thread still reading from it.
                socket.socket.shutdown(sock, socket.SHUT_RDWR)

    timer = threading.Timer(timeout, abort)
    timer.daemon = True
    timer.start()
    try:
        connection.connect()
        held.append(connection.sock)
        if expired.is_set():
            raise TimeoutError
        connection.request("GET", target, headers={"Accept": "application/json", "User-Agent": USER_AGENT})
        response = connection.getresponse()
        if response.status != 200:
            hint = " (redirects are not followed: configure the URL it names)" if 300 <= response.status < 400 else ""
            raise FetchFailed(f"the server answered HTTP {response.status}{hint}")
        declared = (response.getheader("Content-Length") or "").strip()
        if declared.isdigit() and int(declared) > limit:
            raise FetchFailed(f"the answer is larger than {limit // 1024} KiB")
        body = response.read(limit + 1)
        if expired.is_set():
            raise TimeoutError  # the body was cut short
        if len(body) > limit:
            raise FetchFailed(f"the answer is larger than {limit // 1024} KiB")
        return body, response.getheader("Cache-Control") or ""
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if expired.is_set() or isinstance(exc, TimeoutError):
            raise FetchFailed(f"no complete answer within {timeout:g} s") from None
        raise FetchFailed(f"{type(exc).__name__}: {exc}"[:300]) from None
    finally:
        timer.cancel()
        connection.close()


def read_file(path: str, limit: int) -> bytes:
    try:
        with open(path, "rb") as file:
            body = file.read(limit + 1)
    except OSError as exc:
        raise FetchFailed(f"the file cannot be read ({type(exc).__name__}: {exc.strerror})") from None
    if len(body) > limit:
        raise FetchFailed(f"the file is larger than {limit // 1024} KiB")
    return body


def lifetimes(cache_control: str) -> tuple[float, float]:
    """``(lifetime, stale)`` in seconds from a ``Cache-Control`` value.

    ``no-cache`` and ``no-store`` (Keycloak sends both) mean the shortest lifetime:
    keys are never read once per request.
    """
    directives: dict[str, str] = {}
    for part in cache_control.split(","):
        name, _, value = part.partition("=")
        directives[name.strip().lower()] = value.strip().strip('"')

    def seconds(name: str) -> float | None:
        value = directives.get(name, "")
        return float(value) if value.isdigit() else None

    max_age = seconds("max-age")
    if "no-cache" in directives or "no-store" in directives:
        lifetime = MIN_LIFETIME
    elif max_age is not None:
        lifetime = min(max(max_age, MIN_LIFETIME), MAX_LIFETIME)
    else:
        lifetime = DEFAULT_LIFETIME
    stale = seconds("stale-if-error")
    return lifetime, STALE_IF_ERROR if stale is None else min(stale, MAX_STALE)


def parse_key_set(body: bytes) -> dict[str, tuple[dict[str, Any], ...]]:
    """``kid`` -> the signature-verifying public keys published under it."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        raise FetchFailed("the answer is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise FetchFailed("the answer is not a JWKS (a JSON object with a 'keys' list)")
    found: dict[str, list[dict[str, Any]]] = {}
    for entry in entries:
        if _verifies(entry):
            found.setdefault(entry["kid"], []).append(entry)
    if not found:
        raise FetchFailed("the JWKS holds no public signing key (RSA, EC or OKP) with a 'kid'")
    return {kid: tuple(keys) for kid, keys in found.items()}


def _verifies(entry: Any) -> bool:
    """Whether ``entry`` is a public key, with a ``kid``, meant (or not said not) to verify signatures."""
    if not isinstance(entry, dict) or entry.get("kty") not in PUBLIC_KEY_TYPES or "d" in entry:
        return False
    kid, use, ops = entry.get("kid"), entry.get("use", "sig"), entry.get("key_ops", ["verify"])
    if not isinstance(kid, str) or not kid or use != "sig" or not isinstance(ops, list) or "verify" not in ops:
        return False
    try:
        PyJWK(entry)
    except _KEY_ERRORS:
        return False
    return True


def shown(kid: str) -> str:
    """A ``kid`` from a token, as an event may show it: escaped, cut short."""
    return repr(kid[:64]) + ("..." if len(kid) > 64 else "")


class KeySet:
    """The keys of the JWKS at ``source`` (an ``http(s)`` URL or a file path).

    Thread-safe; ``clock`` is for tests.
    """

    def __init__(
        self, source: str, *, timeout: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.source = source
        self.where = describe(source)
        self.timeout = TIMEOUT if timeout is None else timeout
        self._clock = clock
        self._lock = threading.Lock()
        #: The keys read, and the ``PyJWK`` built from them per ``(kid, algorithm)``:
        #: one tuple, replaced whole, so a reader never pairs one read's keys with another's.
        self._state: tuple[dict[str, tuple[dict[str, Any], ...]], dict[tuple[str, str], PyJWK]] = ({}, {})
        self._fresh_until = -math.inf
        self._usable_until = -math.inf
        self._refetch_from = -math.inf
        self._retry_from = -math.inf
        #: Why the last fetch failed; None after a successful one.
        self._failure: str | None = None
        #: Fetches tried so far: a thread that waited for the lock sees whether one was made meanwhile.
        self.attempts = 0

    def key(self, kid: str, algorithm: str) -> PyJWK:
        """The key ``kid`` for ``algorithm``.

        Raises ``jwt.InvalidTokenError`` when the key set (read again if it may
        have changed) has no such key, and :class:`AuthUnavailable` when it could
        not be read.
        """
        seen = self.attempts
        if self._clock() >= self._fresh_until:
            self._refresh(seen, unknown_kid=False)
        found = self._find(kid, algorithm)
        if found is None:
            self._refresh(seen, unknown_kid=True)
            found = self._find(kid, algorithm)
        if found is None:
            raise jwt.InvalidTokenError(f"no key {shown(kid)} in the JWKS at {self.where}")
        return found

    def _find(self, kid: str, algorithm: str) -> PyJWK | None:
        keys, built = self._state
        entries = keys.get(kid)
        if not entries:
            return None
        found = built.get((kid, algorithm))
        if found is not None:
            return found
        for entry in entries:
            if entry.get("alg", algorithm) != algorithm:
                continue  # RFC 7517: a key that names its algorithm is for that one only
            try:
                found = built[(kid, algorithm)] = PyJWK(entry, algorithm=algorithm)
            except _KEY_ERRORS:
                continue  # an RSA key for ES256, say
            return found
        raise jwt.InvalidAlgorithmError(f"the JWKS key {shown(kid)} is not a key for {algorithm}")

    def _refresh(self, seen: int, *, unknown_kid: bool) -> None:
        """Fetch when due, once however many requests want it; raise :class:`AuthUnavailable`
        when the keys cannot be trusted to be the server's."""
        with self._lock:
            now = self._clock()
            if self.attempts == seen and now >= self._retry_from:
                due = now >= (self._refetch_from if unknown_kid else self._fresh_until)
                if due:
                    self._fetch(unknown_kid=unknown_kid)
                    now = self._clock()
            if self._failure is None:
                return
            # A kid the keys at hand lack may be a new one the server could not be asked about.
            if not unknown_kid and now < self._usable_until:
                return
            raise AuthUnavailable(f"the JWKS at {self.where} could not be read: {self._failure}")

    def _fetch(self, *, unknown_kid: bool) -> None:
        self.attempts += 1
        try:
            fetched = fetch(self.source, self.timeout)
        except FetchFailed as exc:
            self._failure = str(exc)
            self._retry_from = self._clock() + RETRY_INTERVAL
            logger.warning("the JWKS at %s could not be read: %s", self.where, exc)
            return
        done = self._clock()
        self._state = (fetched.keys, {})
        self._fresh_until = done + fetched.lifetime
        self._usable_until = self._fresh_until + fetched.stale
        if unknown_kid:
            self._refetch_from = done + REFETCH_INTERVAL
        if self._failure is not None:
            logger.info("the JWKS at %s is read again", self.where)
        self._failure = None
