"""``syslog+tcp://host:port`` and ``syslog+tls://host:port``: RFC 5424 messages, one event each,
octet-counted framing (RFC 6587, RFC 5425).

``<PRI>1 TIMESTAMP HOSTNAME gql_audit PROCID MSGID - {json}``: the facility is 13 (log
audit), the severity the event's; MSGID the kind of record or event. Every header field
is printable ASCII gql_audit chooses; the event is the message, compact JSON in UTF-8,
its length counted in octets before it: no value can end a frame or start another.

Syslog over TCP has no acknowledgement. A batch counts as delivered once the receiver
has read it to the end: each batch is one connection, half-closed after the last
message; the receiver's close of its side says it read everything. A batch cut off
before that is sent again whole (at least once).
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Sequence
from typing import Any

from gql_audit.export.sinks import Message, Sink, SinkError, SinkSpec, encode, ssl_context

#: RFC 5424 facility "log audit".
FACILITY = 13
SEVERITY = {"error": 3, "warning": 4, "info": 6}
APP_NAME = "gql_audit"


def header_field(text: str, limit: int) -> str:
    """A header field as RFC 5424 allows it: printable US-ASCII without space, at most ``limit`` octets."""
    cleaned = "".join(c if "!" <= c <= "~" else "_" for c in text)[:limit]
    return cleaned or "-"


def timestamp(moment: datetime.datetime | None) -> str:
    if moment is None:
        return "-"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def frame(message: Message, hostname: str, procid: str) -> bytes:
    """One octet-counted RFC 5424 message."""
    pri = FACILITY * 8 + SEVERITY.get(message.severity, 6)
    head = f"<{pri}>1 {timestamp(message.time)} {hostname} {APP_NAME} {procid} {header_field(message.name, 32)} - "
    body = head.encode("ascii") + encode(message.body)
    return str(len(body)).encode("ascii") + b" " + body


class SyslogSink(Sink):
    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        parts = spec.parts
        self.host = parts.hostname or ""
        self.port = parts.port or 0
        self.tls = parts.scheme == "syslog+tls"
        self.hostname = header_field(socket.gethostname(), 255)
        self._context: Any = None

    def _connect(self) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=self.spec.timeout)
        if not self.tls:
            return sock
        if self._context is None:
            self._context = ssl_context(self.spec)
        try:
            wrapped: socket.socket = self._context.wrap_socket(sock, server_hostname=self.host)
        except BaseException:
            sock.close()
            raise
        return wrapped

    def send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        procid = str(os.getpid())
        data = b"".join(frame(message, self.hostname, procid) for message in messages)
        try:
            sock = self._connect()
        except OSError as exc:
            raise SinkError(f"{self.spec.public_url}: cannot connect: {exc}") from exc
        try:
            sock.sendall(data)
            self._finish(sock)
        except OSError as exc:
            raise SinkError(f"{self.spec.public_url}: {exc}") from exc
        finally:
            sock.close()

    def _finish(self, sock: socket.socket) -> None:
        """Say the batch is over and wait until the receiver has read it all and closed its side."""
        import ssl

        if isinstance(sock, ssl.SSLSocket):
            try:
                sock = sock.unwrap()  # close_notify both ways: the receiver read up to it
            except (ssl.SSLError, OSError, ValueError):
                pass
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        while True:
            try:
                chunk = sock.recv(4096)
            except ssl.SSLError as exc:
                if "EOF" in str(exc) or "closed" in str(exc).lower():
                    return
                raise
            if not chunk:
                return
