"""Persisted operations: the manifest of documents a service allows, by sha256.

A manifest is a JSON object mapping the sha256 (lower-case hex) of each
document's UTF-8 text to that text, as ``gql_audit_manifest`` writes it from a
directory of ``.graphql`` files. It is read once per settings generation.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from gql_audit.conf import conf
from gql_audit.protect.document import document_hash

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class ManifestError(ValueError):
    """The manifest cannot be read, or is not a map of sha256 -> document."""


def read_manifest(path: Any) -> dict[str, str]:
    """The manifest at ``path``, each key checked against its document's hash."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, TypeError, ValueError, RecursionError) as exc:
        raise ManifestError(f"cannot be read: {exc}") from exc
    if not isinstance(raw, dict):
        raise ManifestError("is not a JSON object of sha256 -> document")
    manifest: dict[str, str] = {}
    for key, document in raw.items():
        if not isinstance(document, str):
            raise ManifestError(f"entry {key[:80]!r} is not a document string")
        if key != document_hash(document):
            raise ManifestError(f"entry {key[:80]!r} is not the sha256 of its document")
        manifest[key] = document
    return manifest


def manifest() -> dict[str, str]:
    """The configured manifest (empty when none or unreadable: the system check says why)."""

    def build() -> dict[str, str]:
        settings = conf.PERSISTED_OPERATIONS or {}
        try:
            return read_manifest(settings.get("manifest"))
        except ManifestError:
            return {}

    found: dict[str, str] = conf.derived("persisted_manifest", build)
    return found


def requested_hash(data: Any, query_params: Any) -> str | None:
    """The hash a request names instead of a document, as sent (not checked), or None.

    Apollo's ``extensions.persistedQuery.sha256Hash`` or the ``documentId``
    parameter (bare hex or ``sha256:<hex>``), in the body or, for a GET, the
    query string (``extensions`` JSON-encoded there).
    """
    value: Any = None
    for source in (query_params, data):
        if not hasattr(source, "get"):
            continue
        try:
            extensions = source.get("extensions")
            document_id = source.get("documentId")
        except Exception:  # noqa: BLE001 - a query string Django refuses: nothing named
            continue
        if isinstance(extensions, str):
            try:
                extensions = json.loads(extensions)
            except (ValueError, RecursionError):
                extensions = None
        if isinstance(extensions, dict) and isinstance(extensions.get("persistedQuery"), dict):
            value = extensions["persistedQuery"].get("sha256Hash")
        if value is None and document_id is not None:
            value = document_id
        if value is not None:
            break
    if value is None:
        return None
    # Anything but a string names no document; its type is what the event can say.
    text = value if isinstance(value, str) else f"<{type(value).__name__}>"
    return text[len("sha256:") :] if text.startswith("sha256:") else text


def lookup(sha256: str) -> str | None:
    """The allowed document of hash ``sha256`` (any case), or None."""
    key = sha256.lower()
    if not SHA256_HEX.fullmatch(key):
        return None
    return manifest().get(key)
