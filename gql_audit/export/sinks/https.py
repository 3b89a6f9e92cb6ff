"""``https://host[:port]/path``: a JSON array of events per POST; a 2xx answer acknowledges it.

The shape Splunk's HTTP Event Collector (``/services/collector/raw``) and most HTTP
log intakes take. Credentials in the URL (``https://user:password@host/``) are sent as
HTTP Basic authentication, never logged; ``headers`` in the sink's mapping add others
(``{"Authorization": "Splunk <token>"}``). A batch larger than ``MAX_BODY`` is sent in
several POSTs, each acknowledged before the next.
"""

from __future__ import annotations

import base64
import http.client
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote

from gql_audit.export.sinks import Message, Sink, SinkError, SinkSpec, encode, ssl_context

#: Bytes of one POST's body at most (a single larger event is sent alone).
MAX_BODY = 4 * 1024 * 1024
#: Bytes of an answer read at most (the answer itself is not used).
MAX_ANSWER = 64 * 1024


class HttpsSink(Sink):
    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        parts = spec.parts
        self.host = parts.hostname or ""
        self.port = parts.port or 443
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.headers = {"Content-Type": "application/json", "User-Agent": "gql_audit", **spec.headers}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}".encode()
            self.headers.setdefault("Authorization", "Basic " + base64.b64encode(pair).decode())
        self.connection: http.client.HTTPSConnection | None = None
        self._context: Any = None

    def send(self, messages: Sequence[Message]) -> None:
        bodies: list[bytes] = []
        size = 0
        for message in messages:
            body = encode(message.body)
            if bodies and size + len(body) + 1 > MAX_BODY:
                self._post(bodies)
                bodies, size = [], 0
            bodies.append(body)
            size += len(body) + 1
        if bodies:
            self._post(bodies)

    def _post(self, bodies: list[bytes]) -> None:
        data = b"[" + b",".join(bodies) + b"]"
        for attempt in (1, 2):
            connection = self._connection()
            try:
                connection.request("POST", self.path, body=data, headers=self.headers)
                response = connection.getresponse()
                response.read(MAX_ANSWER)
                status = response.status
                if response.will_close or response.length:
                    self.close()
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                # A kept-alive connection the server closed meanwhile: once more on a new one.
                if attempt == 1 and isinstance(exc, (http.client.RemoteDisconnected, BrokenPipeError)):
                    continue
                raise SinkError(f"{self.spec.public_url}: {type(exc).__name__}: {exc}") from exc
            if 200 <= status < 300:
                return
            raise SinkError(f"{self.spec.public_url}: answered {status}")

    def _connection(self) -> http.client.HTTPSConnection:
        if self.connection is None:
            if self._context is None:
                self._context = ssl_context(self.spec)
            self.connection = http.client.HTTPSConnection(
                self.host, self.port, timeout=self.spec.timeout, context=self._context
            )
        return self.connection

    def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
            self.connection = None
