"""Anchors: where each checkpoint is also written, outside the database.

A database restored from an older backup, or truncated, still holds a log that checks
on its own; the newest checkpoint kept elsewhere is what shows it is behind
(``gql_audit_verify --anchor URL``). An anchor is chosen by its URL's scheme:

- ``file:///dir/``: one file per checkpoint in ``dir``, named by its tree size and
  time, created and never overwritten (mount ``dir`` on write-once storage, e.g. an S3
  bucket with Object Lock in compliance mode, for anchors no one can delete).

Other schemes plug in with :func:`register`: a factory taking the URL and returning
an object with ``write(note, size, when)`` and, where the place can be read back,
``notes()``. (The export sinks receive every checkpoint through the outbox instead,
``EXPORT``, as they receive the records.)
"""

from __future__ import annotations

import datetime
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit


class AnchorError(Exception):
    """A checkpoint could not be written to an anchor, or an anchor not read."""


class Anchor(Protocol):
    def write(self, note: str, size: int, when: datetime.datetime) -> None:
        """Keep ``note`` (the checkpoint of ``size`` leaves signed at ``when``); never
        replace one kept before."""

    def notes(self) -> Iterator[str]:
        """Every checkpoint kept (NotImplementedError where the place cannot be read back)."""


#: Scheme -> factory(url) of an anchor.
_schemes: dict[str, Callable[[str], Anchor]] = {}


def register(scheme: str, factory: Callable[[str], Anchor]) -> None:
    """Let ``CHECKPOINTS["anchors"]`` name URLs of ``scheme``, written by ``factory(url)``."""
    _schemes[scheme.lower()] = factory


def schemes() -> list[str]:
    return sorted(_schemes)


def anchor(url: str) -> Anchor:
    """The anchor a URL names; ValueError when its scheme is not one registered."""
    scheme = urlsplit(url).scheme.lower() if isinstance(url, str) else ""
    factory = _schemes.get(scheme)
    if factory is None:
        raise ValueError(f"{url!r}: no anchor for scheme {scheme!r} (known: {', '.join(schemes())})")
    return factory(url)


# --- file:///dir/ --------------------------------------------------------------------------------

#: ``checkpoint-<size, 20 digits>-<YYYYMMDDTHHMMSSZ>.txt``: sorted by name is sorted by size, then time.
_NAME = re.compile(r"checkpoint-(\d{20})-(\d{8}T\d{6}Z)\.txt")
#: A note larger than this in an anchor directory is not read.
MAX_NOTE = 1 << 20


class FileAnchor:
    """``file:///dir/``: a file per checkpoint, created exclusively, synced to disk."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost") or not parts.path.startswith("/"):
            raise ValueError(f"{url!r}: a file anchor is file:///absolute/directory/")
        self.directory = Path(unquote(parts.path))

    @staticmethod
    def name(size: int, when: datetime.datetime) -> str:
        return f"checkpoint-{size:020d}-{when.astimezone(datetime.UTC):%Y%m%dT%H%M%SZ}.txt"

    def write(self, note: str, size: int, when: datetime.datetime) -> None:
        path = self.directory / self.name(size, when)
        data = note.encode()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444)
        except FileExistsError:
            if _read(path) == data:
                return  # written before (a run retried after its commit)
            raise AnchorError(f"{path} exists and holds another checkpoint: nothing was overwritten") from None
        except OSError as exc:
            raise AnchorError(f"cannot create {path}: {exc.strerror}") from None
        try:
            os.write(fd, data)
            os.fsync(fd)
        except OSError as exc:
            raise AnchorError(f"cannot write {path}: {exc.strerror}") from None
        finally:
            os.close(fd)
        _sync_directory(self.directory)

    def notes(self) -> Iterator[str]:
        try:
            names = sorted(entry.name for entry in os.scandir(self.directory) if _NAME.fullmatch(entry.name))
        except OSError as exc:
            raise AnchorError(f"cannot read {self.directory}: {exc.strerror}") from None
        for name in names:
            data = _read(self.directory / name)
            yield data.decode("utf-8", "replace") if data is not None else ""


def _read(path: Path) -> bytes | None:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_NOTE)
    except OSError:
        return None


def _sync_directory(directory: Path) -> None:
    """The new file's name on disk too (a crash right after must not lose it)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # not every filesystem syncs a directory; the file itself is synced
    finally:
        os.close(fd)


register("file", FileAnchor)


def write_all(urls: list[str] | tuple[str, ...], note: str, size: int, when: datetime.datetime) -> list[str]:
    """Write a checkpoint to every anchor: what failed, one line each (the rest are written)."""
    failed = []
    for url in urls:
        try:
            anchor(url).write(note, size, when)
        except (AnchorError, ValueError, OSError) as exc:
            failed.append(f"{url}: {exc}")
    return failed


def kept(url: str) -> list[str]:
    """Every checkpoint an anchor holds (AnchorError when it cannot be read back)."""
    found: Any = anchor(url)
    try:
        return list(found.notes())
    except NotImplementedError:
        raise AnchorError(f"{url}: this anchor cannot be read back") from None
