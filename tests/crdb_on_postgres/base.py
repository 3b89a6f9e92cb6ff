"""django-cockroachdb's own backend, talking to PostgreSQL.

This is CockroachDB's Django backend on PostgreSQL, not CockroachDB: no CockroachDB
server can run where the tests run. Everything is django-cockroachdb's own code (its
schema editor, features, operations, introspection, and Django's ORM compiling for
it) except three answers PostgreSQL cannot give on its own:

- the version probe (``SELECT VERSION()``) is answered with :data:`SERVER_VERSION`
  without a query, so the backend takes its CockroachDB 25.2 paths;
- the functions CockroachDB's DDL calls and PostgreSQL lacks (``unique_rowid()``,
  ``unordered_unique_rowid()``) are created on the database before migrations;
- the CockroachDB-only spellings in :data:`REWRITES` (inverted and hash-sharded
  indexes, ``table@index``) reach PostgreSQL in PostgreSQL's spelling.

With ``GQL_AUDIT_CRDB_SQL_LOG`` set, every statement the backend sends is appended
to that file as CockroachDB would receive it (parameters rendered, before any
rewrite), once per distinct text and process, for ``crdbparse``.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from typing import Any

import psycopg
from django.utils.functional import cached_property
from django_cockroachdb.base import DatabaseWrapper as CockroachDatabaseWrapper
from django_cockroachdb.introspection import DatabaseIntrospection as CockroachIntrospection

#: The server the probe reports: the release whose grammar ``crdbparse`` carries.
SERVER_VERSION = "CockroachDB CCL v25.2.0 (x86_64-pc-linux-gnu, built 2025/05/12 00:00:00, go1.23.7)"

#: Separates statements in the log (``crdbparse -sep``): a line no statement holds.
SEPARATOR = "\n-- ;; crdb_on_postgres ;;\n"

#: CockroachDB spelling -> PostgreSQL spelling, for the statements PostgreSQL cannot parse.
REWRITES = (
    # CREATE INVERTED INDEX name ON table (column): GIN is PostgreSQL's inverted index.
    (
        re.compile(r"^CREATE INVERTED INDEX (IF NOT EXISTS )?(\S+) ON (\S+) \((.+)\)$", re.S),
        r"CREATE INDEX \1\2 ON \3 USING GIN (\4)",
    ),
    # A hash-sharded index: PostgreSQL gets the plain index (the shard column is CockroachDB's).
    (re.compile(r"\) USING HASH( WITH \([^)]*\))?"), ")"),
    # DROP INDEX table@index: PostgreSQL names indexes alone.
    (re.compile(r"^DROP INDEX (IF EXISTS )?\S+@(\S+)"), r"DROP INDEX \1\2"),
)

#: Created before migrations. ``unique_rowid()`` here is a plain sequence: django-cockroachdb
#: declares auto fields ``integer``, which is 64 bits on CockroachDB and 32 on PostgreSQL.
#: ``unordered_unique_rowid()`` reverses its 31 bits, scattering keys as CockroachDB's does.
FUNCTIONS = (
    "CREATE SEQUENCE IF NOT EXISTS crdb_on_postgres_rowid",
    "CREATE OR REPLACE FUNCTION unique_rowid() RETURNS bigint LANGUAGE sql VOLATILE "
    "AS $$ SELECT nextval('crdb_on_postgres_rowid') $$",
    "CREATE OR REPLACE FUNCTION unordered_unique_rowid() RETURNS bigint LANGUAGE sql VOLATILE "
    "AS $$ SELECT ('0' || reverse((nextval('crdb_on_postgres_rowid') % 2147483648)::bit(31)::text))"
    "::bit(32)::bigint $$",
)


class StatementLog:
    """Distinct statement texts, appended to one file shared by every process of the pass."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen: set[bytes] = set()
        self.lock = threading.Lock()
        self.fd: int | None = None

    def add(self, text: str) -> None:
        digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()
        with self.lock:
            if digest in self.seen:
                return
            self.seen.add(digest)
            if self.fd is None:
                self.fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            # One write per statement with O_APPEND: processes appending at once do not interleave.
            os.write(self.fd, (text + SEPARATOR).encode("utf-8", "backslashreplace"))


_path = os.environ.get("GQL_AUDIT_CRDB_SQL_LOG")
LOG = StatementLog(_path) if _path else None


def to_postgres(query: Any) -> Any:
    """``query`` in PostgreSQL's spelling (:data:`REWRITES`); anything else as it is."""
    if not isinstance(query, str):
        return query
    for pattern, replacement in REWRITES:
        query = pattern.sub(replacement, query)
    return query


def recording(base: type) -> type:
    """A subclass of Django's psycopg cursor class recording and rewriting what it sends."""

    class RecordingCursor(base):  # type: ignore[misc, valid-type]
        def _record(self, query: Any, params: Any) -> None:
            if LOG is not None:
                LOG.add(psycopg.ClientCursor(self.connection).mogrify(query, params))

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            self._record(query, params)
            return super().execute(to_postgres(query), params, **kwargs)

        def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> Any:
            params_seq = list(params_seq)
            for params in params_seq:
                self._record(query, params)
            return super().executemany(to_postgres(query), params_seq, **kwargs)

    return RecordingCursor


class DatabaseIntrospection(CockroachIntrospection):
    #: The access method of a plain index, as the server names it: CockroachDB says
    #: ``prefix``, PostgreSQL ``btree``. Django's schema editor finds the index of a
    #: ``db_index`` field it drops by this name.
    index_default_access_method = "btree"


class DatabaseWrapper(CockroachDatabaseWrapper):
    introspection_class = DatabaseIntrospection

    @cached_property
    def cockroachdb_server_info(self) -> str:
        return SERVER_VERSION

    def get_connection_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super().get_connection_params()
        params["cursor_factory"] = recording(params["cursor_factory"])
        return params

    def prepare_database(self) -> None:
        super().prepare_database()
        with self.cursor():  # connects
            pass
        # psycopg's own cursor: the scaffolding is not part of what is checked.
        with psycopg.Cursor(self.connection) as cursor:
            for statement in FUNCTIONS:
                cursor.execute(statement)
