"""Writing what a request recorded: reads, change-entry seals and security events.

:func:`flush` runs in ``AuditContextMiddleware`` after the view returned, so it is
outside the view's transaction (``ATOMIC_REQUESTS``, ``ATOMIC_MUTATIONS``): a
rollback of the request cannot take the audit rows with it. Everything is
written in one transaction on ``AUDIT_DATABASE``. If the write fails, every
record goes, complete, to the ``gql_audit.audit`` logger as JSON, and with
``FAIL_CLOSED`` the middleware answers 503.

One module a job:

- :mod:`~gql_audit.store.records`: a request's reads as records, one per object;
- :mod:`~gql_audit.store.backends`: the access stores ``ACCESS_STORE`` chooses, behind one interface;
- :mod:`~gql_audit.store.index`: the object index of reads ("who read this object"), built in bulk on SQLite;
- :mod:`~gql_audit.store.events`: security event rows;
- :mod:`~gql_audit.store.fallback`: the records as log lines, when the database cannot take them;
- :mod:`~gql_audit.store.faults`: what a database error says about trying again;
- :mod:`~gql_audit.store.observe`: who is told of every row written (``gql_audit.testing.capture``);
- :mod:`~gql_audit.store.write`: the write itself, sealed, retried, narrowed down after a failure.
"""

from __future__ import annotations

from gql_audit.store.observe import observers
from gql_audit.store.records import object_key
from gql_audit.store.write import audit_alias, flush, seal_quietly, use_retries, write, write_now

__all__ = ["audit_alias", "flush", "object_key", "observers", "seal_quietly", "use_retries", "write", "write_now"]
