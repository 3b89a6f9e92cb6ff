"""Where exported events go: one module a URL scheme, behind :class:`Sink`.

``open_sink(spec)`` opens the sink a URL (or a ``{"url": ..., ...}`` mapping) names:

- ``file:///path``: JSON lines, appended (:mod:`~gql_audit.export.sinks.file`);
- ``syslog+tcp://host:port``, ``syslog+tls://host:port``: RFC 5424, one event a message,
  octet-counted framing (:mod:`~gql_audit.export.sinks.syslog`);
- ``https://host/path``: a JSON array per POST, acknowledged by a 2xx answer
  (:mod:`~gql_audit.export.sinks.https`).

A sink delivers a batch of :class:`Message` whole or raises :class:`SinkError`; what it
raised on is sent again (at least once). Anything that has messages to deliver (the
outbox's shipper, a checkpoint's anchors) uses the same sinks.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

#: URL scheme -> module (under ``gql_audit.export.sinks``) and class.
SCHEMES = {
    "file": ("file", "FileSink"),
    "syslog+tcp": ("syslog", "SyslogSink"),
    "syslog+tls": ("syslog", "SyslogSink"),
    "https": ("https", "HttpsSink"),
}
#: Keys of a sink given as a mapping.
SPEC_KEYS = frozenset({"url", "ca_file", "cert_file", "key_file", "headers", "timeout"})
DEFAULT_TIMEOUT = 10.0


class SinkError(Exception):
    """A batch was not delivered (whole or in part): it is to be sent again."""


@dataclass(frozen=True)
class Message:
    """One event to deliver: its JSON ``body``, and what a transport may say of it apart."""

    body: Mapping[str, Any]
    #: When the event happened (syslog's TIMESTAMP).
    time: datetime.datetime | None = None
    #: ``info``, ``warning`` or ``error`` (syslog's severity).
    severity: str = "info"
    #: A short name of the kind of event (syslog's MSGID).
    name: str = "-"


@dataclass(frozen=True)
class SinkSpec:
    """A sink's URL and its connection options."""

    url: str
    #: PEM file of the certificate authorities to verify the server with (default: the system's).
    ca_file: str | None = None
    #: PEM files of a client certificate and its key (mutual TLS).
    cert_file: str | None = None
    key_file: str | None = None
    #: Extra HTTP headers (``https``), e.g. ``{"Authorization": "Splunk <token>"}``.
    headers: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT

    @property
    def parts(self) -> SplitResult:
        return urlsplit(self.url)

    @property
    def public_url(self) -> str:
        """The URL without credentials (user, password, query): safe to log and to show."""
        parts = self.parts
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @property
    def key(self) -> str:
        """A stable name for the sink's delivery cursor: the hash of its public URL."""
        return hashlib.sha256(self.public_url.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def parse_spec(entry: str | Mapping[str, Any]) -> SinkSpec:
    """A sink as ``EXPORT["sinks"]`` gives it: a URL, or a mapping with ``url`` and options.
    ValueError says what is wrong."""
    if isinstance(entry, str):
        spec = SinkSpec(url=entry)
    elif isinstance(entry, Mapping):
        unknown = set(entry) - SPEC_KEYS
        if unknown:
            raise ValueError(f"unknown sink option(s) {sorted(unknown)}; known: {sorted(SPEC_KEYS)}")
        if not isinstance(entry.get("url"), str):
            raise ValueError("a sink given as a mapping needs a 'url' string")
        headers = entry.get("headers") or {}
        if not isinstance(headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise ValueError("a sink's 'headers' is a mapping of strings")
        if any(c in "\r\n\x00" for pair in headers.items() for c in "".join(pair)):
            raise ValueError("a sink's headers hold no line break or NUL")
        spec = SinkSpec(
            url=entry["url"],
            ca_file=entry.get("ca_file"),
            cert_file=entry.get("cert_file"),
            key_file=entry.get("key_file"),
            headers=dict(headers),
            timeout=float(entry.get("timeout", DEFAULT_TIMEOUT)),
        )
    else:
        raise ValueError(f"a sink is a URL or a mapping, not {type(entry).__name__}")
    parts = spec.parts
    if parts.scheme not in SCHEMES:
        raise ValueError(f"unknown sink scheme {parts.scheme!r} in {spec.public_url!r}; known: {sorted(SCHEMES)}")
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"a file sink is file:///absolute/path, not {spec.public_url!r}")
    elif not parts.hostname:
        raise ValueError(f"the sink {spec.public_url!r} names no host")
    else:
        try:
            port = parts.port
        except ValueError:
            raise ValueError(f"the sink {spec.public_url!r} has no valid port") from None
        if port is None and parts.scheme != "https":
            raise ValueError(f"a syslog sink names its port: {spec.public_url!r}")
    return spec


class Sink:
    """Delivers batches of messages to one destination; :meth:`send` returns when they are acknowledged."""

    def __init__(self, spec: SinkSpec) -> None:
        self.spec = spec

    def send(self, messages: Sequence[Message]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release the connection or file (a later :meth:`send` opens it again)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec.public_url}>"


def open_sink(entry: str | Mapping[str, Any] | SinkSpec) -> Sink:
    """The sink a URL, a mapping or a :class:`SinkSpec` names (nothing is connected before the first send)."""
    from importlib import import_module

    spec = entry if isinstance(entry, SinkSpec) else parse_spec(entry)
    module_name, class_name = SCHEMES[spec.parts.scheme]
    sink_class: type[Sink] = getattr(import_module(f"{__name__}.{module_name}"), class_name)
    return sink_class(spec)


def encode(body: Mapping[str, Any]) -> bytes:
    """One event as compact JSON in UTF-8: every value is data (control characters, quotes and line
    breaks escaped, a lone surrogate written as its ``\\uXXXX`` escape), never a line or a frame of its own."""
    text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=str)
    return text.encode("utf-8", "backslashreplace")


def ssl_context(spec: SinkSpec) -> Any:
    """A client TLS context: the server's certificate and name verified (``ca_file`` or the system's
    authorities), a client certificate when given."""
    import ssl

    context = ssl.create_default_context(cafile=spec.ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if spec.cert_file:
        context.load_cert_chain(spec.cert_file, spec.key_file)
    return context
