"""The access stores, one module each behind :class:`AccessStore`; ``ACCESS_STORE`` chooses.

- ``"gql_audit"``: :class:`~gql_audit.store.backends.reads.ReadsStore`, one ``RequestReads``
  row per request;
- ``"auditlog"``: :class:`~gql_audit.store.backends.auditlog.AuditlogStore`, one ACCESS
  ``LogEntry`` per object.
"""

from __future__ import annotations

from typing import Any

from gql_audit import context
from gql_audit.conf import conf


class AccessStore:
    """Where the reads of a request go. A store writes inside the caller's transaction."""

    #: The record kind a seal names what this store writes (``gql_audit.evidence.sealing``).
    seal_kind: str

    def save(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> tuple[list[Any], list[Any]]:
        """Write ``records`` read by ``reader``. Returns what a seal and the export's outbox list of
        them (rows or primary keys; nothing when neither ``sealed`` nor ``EXPORT``) and the rows left
        for the seal's own statement to insert."""
        raise NotImplementedError

    def save_alone(
        self, ctx: context.RequestContext, records: list[Any], alias: str, reader: context.Reader, *, sealed: bool
    ) -> bool:
        """Write ``records`` (and their seal) in one statement of its own, outside any
        transaction, when the store and the database allow it: True when done."""
        return False


def access_store() -> AccessStore:
    """The store ``ACCESS_STORE`` names (built once per settings)."""

    def build() -> AccessStore:
        if conf.ACCESS_STORE == "auditlog":
            from gql_audit.store.backends.auditlog import AuditlogStore

            return AuditlogStore()
        from gql_audit.store.backends.reads import ReadsStore

        return ReadsStore()

    store: AccessStore = conf.derived("access_store", build)
    return store
