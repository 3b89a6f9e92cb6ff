"""What a database error says about trying the write again."""

from __future__ import annotations

from gql_audit.errors import sqlstate_of

#: SQLite result codes of a statement the database refused for its content or
#: its table (ERROR: "no such table", TOOBIG, CONSTRAINT, MISMATCH, RANGE): the
#: database itself answers, so other records may still be written.
SQLITE_RECORD_ERRORS = frozenset({1, 18, 19, 20, 25})
#: SQLSTATE classes of a database that is not answering: connection (08),
#: resources (53), operator intervention and timeouts (57), system (58).
UNREACHABLE_CLASSES = frozenset({"08", "53", "57", "58"})


def unreachable(exc: BaseException) -> bool:
    """Whether trying again, record by record, is pointless: the database is not
    answering, or each try would wait out a lock or a timeout again."""
    from django.db import InterfaceError, OperationalError

    if isinstance(exc, InterfaceError):
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = sqlstate_of(exc)
    if sqlstate:
        return sqlstate[:2] in UNREACHABLE_CLASSES
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    if isinstance(code, int):
        return (code & 0xFF) not in SQLITE_RECORD_ERRORS
    return True


def refused_for_content(exc: BaseException) -> bool:
    """Whether the database refused a statement for a value in it (SQLSTATE classes
    22 and 23, SQLite's constraint, mismatch, size and range codes, an encoder's
    error): then trying the records one by one finds the one refused. A missing
    table or privilege would refuse every record alike."""
    from django.db import DataError, IntegrityError

    if isinstance(exc, (DataError, IntegrityError, ValueError)):
        return True
    sqlstate = sqlstate_of(exc)
    if sqlstate:
        return sqlstate[:2] in ("22", "23")
    code = getattr(exc.__cause__, "sqlite_errorcode", None)
    return isinstance(code, int) and (code & 0xFF) in SQLITE_RECORD_ERRORS - {1}
