"""Signed checkpoints: C2SP ``signed-note`` and ``tlog-checkpoint``, Ed25519 through ``cryptography``.

A checkpoint's text is the origin line, the tree size in decimal, the base64 root hash,
then extension lines (gql_audit writes one: ``time 2026-12-02T10:00:00Z``), each ending
in a newline. The signed note is that text, a blank line, and a signature line per key::

    — <key name> <base64(4-byte key ID || Ed25519 signature of the text)>

The key name is the origin; the key ID is the first four bytes of
``SHA-256(key name || 0x0A || 0x01 || 32-byte public key)``. A verifier ignores lines
from keys it does not know, rejects the note if a known key's line fails, and accepts
it only if a known key's line verifies (C2SP signed-note, "Signatures").

No Django: an auditor checks a checkpoint with this module and ``cryptography`` alone.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "Checkpoint",
    "PublicKey",
    "checkpoint_text",
    "load_private_key",
    "load_public_key",
    "open_note",
    "parse_checkpoint",
    "sign_note",
]

#: The signature type byte of Ed25519 in C2SP signed notes.
ED25519 = b"\x01"
SIGNATURE_PREFIX = "\u2014 "
#: The time extension line gql_audit writes after the root hash.
TIME_PREFIX = "time "
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
#: Notes longer than this are refused before they are parsed.
MAX_NOTE = 1 << 20
#: More signature lines than this are refused (the spec asks verifiers to accept 16).
MAX_SIGNATURES = 100
_SIZE = re.compile(r"0|[1-9][0-9]*")


def valid_name(name: str) -> bool:
    """A key name (an origin): not empty, no Unicode space, no ``+``."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and name.isprintable()


@dataclass(frozen=True)
class PublicKey:
    """An Ed25519 public key that signs under ``name``: its C2SP key ID is ``key_id``."""

    name: str
    key: Ed25519PublicKey
    raw: bytes = field(repr=False)

    @property
    def key_id(self) -> bytes:
        return key_id(self.name, self.raw)


def key_id(name: str, raw: bytes) -> bytes:
    """``SHA-256(key name || 0x0A || 0x01 || public key)[:4]``."""
    return hashlib.sha256(name.encode() + b"\n" + ED25519 + raw).digest()[:4]


def _raw(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from its PEM; ValueError for anything else."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"not an Ed25519 public key but {type(key).__name__}")
    return key


def load_private_key(pem: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from its PEM (PKCS#8, unencrypted); ValueError for anything else."""
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"not an Ed25519 private key but {type(key).__name__}")
    return key


def public_key(name: str, key: Ed25519PublicKey) -> PublicKey:
    return PublicKey(name, key, _raw(key))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint's text, parsed."""

    origin: str
    size: int
    root: bytes
    #: The time extension line's value (None when the note has none).
    time: datetime.datetime | None
    extensions: tuple[str, ...] = ()


def format_time(when: datetime.datetime) -> str:
    return when.astimezone(datetime.UTC).strftime(TIME_FORMAT)


def checkpoint_text(origin: str, size: int, root: bytes, when: datetime.datetime) -> str:
    """The note text of a checkpoint: origin, size, base64 root, the time extension line."""
    if not valid_name(origin):
        raise ValueError(f"an origin has no spaces and no '+': {origin!r}")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n{TIME_PREFIX}{format_time(when)}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint's note text, checked line by line; ValueError naming what is wrong."""
    if not text.endswith("\n"):
        raise ValueError("checkpoint text does not end with a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3 or any(not line for line in lines):
        raise ValueError("checkpoint text is not an origin, a size and a root hash, on lines of their own")
    origin, size_text, root_text, *extensions = lines
    if not valid_name(origin):
        raise ValueError("checkpoint origin is not a key name")
    if not _SIZE.fullmatch(size_text):
        raise ValueError("checkpoint tree size is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("checkpoint root hash is not base64") from None
    if len(root) != 32 or base64.b64encode(root).decode() != root_text:
        raise ValueError("checkpoint root hash is not 32 bytes in base64")
    when = None
    for line in extensions:
        if line.startswith(TIME_PREFIX):
            try:
                when = datetime.datetime.strptime(line[len(TIME_PREFIX) :], TIME_FORMAT).replace(tzinfo=datetime.UTC)
            except ValueError:
                raise ValueError("checkpoint time is not YYYY-MM-DDTHH:MM:SSZ") from None
    return Checkpoint(origin, int(size_text), root, when, tuple(extensions))


def sign_note(text: str, name: str, private_key: Ed25519PrivateKey) -> str:
    """``text`` signed by ``private_key`` under ``name``: the whole note."""
    if not text.endswith("\n") or "\n\n" in text or any(c < " " and c != "\n" for c in text):
        raise ValueError("a note's text ends with a newline, has no blank line and no control character")
    if not valid_name(name):
        raise ValueError(f"a key name has no spaces and no '+': {name!r}")
    signer = public_key(name, private_key.public_key())
    signature = base64.b64encode(signer.key_id + private_key.sign(text.encode())).decode()
    return f"{text}\n{SIGNATURE_PREFIX}{name} {signature}\n"


def open_note(note: str, keys: Iterable[PublicKey]) -> tuple[str, PublicKey]:
    """The text of ``note`` and the key whose signature on it verified; ValueError naming
    what failed (the note is malformed, a known key's signature fails, or no known key signed)."""
    if not isinstance(note, str):
        raise ValueError("a note is text")
    if len(note) > MAX_NOTE:
        raise ValueError("note too long")
    if any(c < " " and c != "\n" for c in note):
        raise ValueError("note holds a control character")
    try:
        note.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("note is not valid UTF-8") from None
    split = note.rfind("\n\n")
    if split < 0 or not note.endswith("\n"):
        raise ValueError("note has no blank line before its signatures")
    text, lines = note[: split + 1], note[split + 2 : -1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise ValueError("note has too many signatures")
    known = {(key.name, key.key_id): key for key in keys}
    verified: PublicKey | None = None
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise ValueError("note signature line does not start with an em dash and a space")
        name, _, signature = line[len(SIGNATURE_PREFIX) :].partition(" ")
        if not valid_name(name) or not signature or " " in signature:
            raise ValueError("note signature line is not a key name and a signature")
        try:
            data = base64.b64decode(signature, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("note signature is not base64") from None
        if base64.b64encode(data).decode() != signature:
            # Unused low bits set in the last character: another spelling of the same bytes.
            raise ValueError("note signature is not canonical base64") from None
        if len(data) < 5:
            raise ValueError("note signature is too short")
        key = known.get((name, data[:4]))
        if key is None:
            continue  # another key's signature (a witness, a rotated key): ignored
        try:
            key.key.verify(data[4:], text.encode())
        except InvalidSignature:
            raise ValueError(f"note signature by {name} ({data[:4].hex()}) does not verify") from None
        verified = verified or key
    if verified is None:
        raise ValueError("note is signed by no known key")
    return text, verified
