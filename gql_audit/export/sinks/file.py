"""``file:///path``: JSON lines, appended; a batch is acknowledged once written and synced to disk."""

from __future__ import annotations

import os
from collections.abc import Sequence
from urllib.parse import unquote

from gql_audit.export.sinks import Message, Sink, SinkError, SinkSpec, encode


class FileSink(Sink):
    def __init__(self, spec: SinkSpec) -> None:
        super().__init__(spec)
        self.path = unquote(spec.parts.path)
        self.fd: int | None = None

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        # A line cut short (the machine stopped mid-write) is ended, so the next one stands alone.
        size = os.fstat(fd).st_size
        if size:
            with open(self.path, "rb") as file:
                file.seek(size - 1)
                if file.read(1) != b"\n":
                    os.write(fd, b"\n")
        return fd

    def send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        data = b"".join(encode(message.body) + b"\n" for message in messages)
        try:
            if self.fd is None:
                self.fd = self._open()
            view = memoryview(data)
            while view:
                written = os.write(self.fd, view)
                view = view[written:]
            os.fsync(self.fd)
        except OSError as exc:
            self.close()
            raise SinkError(f"{self.spec.public_url}: {exc.strerror or exc}") from exc

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            finally:
                self.fd = None
