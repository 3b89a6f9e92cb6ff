"""Database context, transaction retries and the request id in SQL.

- Per connection, once, when Django opens it (``connection_created``): a probe
  for the context every audit record carries (on CockroachDB the session
  variables ``node_id``, ``locality``, ``session_id``; on PostgreSQL the backend
  pid), and ``SET application_name`` when ``APPLICATION_NAME`` is set.
- ``run_in_transaction`` / ``retry_transaction``: run a function in a
  transaction, and on SQLSTATE 40001 roll back and run it again after an
  exponential, jittered pause (``RETRY_BACKOFF``, by default CockroachDB's
  documented client-side retry example), recording every retry as a
  ``db_retry`` security event that names the error's class, SQLSTATE, retry
  reason and transaction, never its text (on CockroachDB the text quotes keys,
  which hold the values of other users' rows).
- With ``SQL_COMMENT`` on, every statement run during a request ends with
  ``/*request_id='...'*/`` (sqlcommenter style), so the database's own logs
  and statement statistics lead back to the request.
"""

from __future__ import annotations

import functools
import logging
import random
import re
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import quote

from django.db import connections, transaction
from django.dispatch import Signal

from gql_audit import context
from gql_audit.conf import DEFAULTS, conf
from gql_audit.dbcontext import ATTRIBUTE, POSTGRES_VENDORS, probe
from gql_audit.errors import sqlstate_of
from gql_audit.events import record_event

logger = logging.getLogger("gql_audit.db")

SERIALIZATION_FAILURE = "40001"
RESULT_UNKNOWN = "40003"  # CockroachDB: "result is ambiguous"

#: Sent on every retry: ``attempt`` (1 for the first failure), ``sqlstate``,
#: ``reason`` and ``txn`` (CockroachDB, or None), ``error``, ``using``.
transaction_retried = Signal()

T = TypeVar("T")

# --- CockroachDB retry errors ---------------------------------------------------

_REASON = re.compile(r"\b(RETRY_[A-Z_]+|ABORT_REASON_[A-Z_]+|ReadWithinUncertaintyIntervalError|WriteTooOldError)\b")
_INJECTED = "inject_retry_errors_enabled"
_DEADLINE = "transaction deadline exceeded"
# The failing transaction prints as ``"<name>" meta={id=...}``; a conflicting one, which
# belongs to another session, as ``conflicting txn: meta={id=...}``, with no name.
_TXN_ID = re.compile(r'"[^"\n]{0,200}" meta=\{id=([0-9a-f]{8})\b')
MAX_PARSED_MESSAGE = 20_000


def parse_retry_error(message: object) -> dict[str, str] | None:
    """The CockroachDB retry reason and transaction id prefix in an error message.

    ``{"reason": "RETRY_SERIALIZABLE", "txn": "07d42834"}``; ``txn`` only when
    the message names the failing transaction (never the conflicting one, which
    is another session's). None for anything else; never raises.
    """
    try:
        text = str(message)[:MAX_PARSED_MESSAGE]
    except Exception:  # noqa: BLE001 - a hostile __str__
        return None
    found = _REASON.search(text)
    if found is not None:
        reason = found.group(1)
    elif _INJECTED in text:
        reason = "INJECTED_RETRY_ERROR"
    elif _DEADLINE in text:
        reason = "RETRY_COMMIT_DEADLINE_EXCEEDED"
    else:
        return None
    result = {"reason": reason}
    txn = _TXN_ID.search(text)
    if txn is not None:
        result["txn"] = txn.group(1)
    return result


# --- retries --------------------------------------------------------------------


def backoff_settings() -> dict[str, float]:
    """``RETRY_BACKOFF`` over its defaults (check ``gql_audit.E002`` vets the values)."""
    given = conf.RETRY_BACKOFF
    return {**DEFAULTS["RETRY_BACKOFF"], **(given if isinstance(given, dict) else {})}


def backoff(attempt: int) -> float:
    """Seconds to wait after failed ``attempt`` (1 for the first failure):
    ``base * 2 ** attempt``, times a random factor in ``[1 - jitter, 1 + jitter]``, at most ``max_wait``."""
    config = backoff_settings()
    jitter = config["jitter"]
    wait = config["base"] * 2 ** min(attempt, 62) * random.uniform(1 - jitter, 1 + jitter)
    return float(min(config["max_wait"], wait))


def describe_retry(exc: BaseException, sqlstate: str, parsed: dict[str, str]) -> str:
    """What a retry event says of its error: class, SQLSTATE and CockroachDB's reason, no text."""
    text = f"{type(exc).__name__} (SQLSTATE {sqlstate})"
    return f"{text}: {parsed['reason']}" if "reason" in parsed else text


def _retryable(sqlstate: str, idempotent: bool) -> bool:
    # 40003: the commit may or may not have happened; running it again is only
    # safe when doing it twice does no harm.
    return sqlstate == SERIALIZATION_FAILURE or (idempotent and sqlstate == RESULT_UNKNOWN)


def run_in_transaction(
    fn: Callable[..., T],
    *args: Any,
    using: str = "default",
    max_attempts: int = 5,
    idempotent: bool = False,
    **kwargs: Any,
) -> T:
    """Run ``fn(*args, **kwargs)`` in a transaction on ``using``, retrying serialization failures.

    On SQLSTATE 40001 the transaction is rolled back and ``fn`` runs again from
    the start (on CockroachDB too: a full rerun is what the client-side retry
    protocol amounts to when the transaction's work is a Python function),
    after the pause [`backoff`][gql_audit.db.backoff] draws (``RETRY_BACKOFF``).
    Each retry is a ``db_retry`` security event. 40003 ("result is ambiguous") is retried only with
    ``idempotent=True``. After ``max_attempts`` the last error is raised and a
    ``db_error`` event records it.

    Inside an outer transaction (``atomic`` block) nothing can be retried
    alone: the failure aborted the outer transaction too. ``fn`` then runs once,
    in a savepoint, and the error goes up to whoever owns the outer
    transaction, such as an outer ``run_in_transaction``.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if connections[using].in_atomic_block:
        with transaction.atomic(using=using):
            return fn(*args, **kwargs)
    attempt = 0
    while True:
        attempt += 1
        try:
            with transaction.atomic(using=using):
                return fn(*args, **kwargs)
        except Exception as exc:
            sqlstate = sqlstate_of(exc)
            if not _retryable(sqlstate, idempotent):
                raise
            parsed = parse_retry_error(exc) or {}
            if attempt >= max_attempts:
                record_event(
                    "db_error",
                    message=f"transaction failed after {attempt} attempts: {describe_retry(exc, sqlstate, parsed)}",
                    sqlstate=sqlstate,
                    details={"attempts": attempt, "exhausted": True, **parsed, "using": using},
                )
                raise
            _note_retry(exc, attempt, sqlstate, parsed, using)
            time.sleep(backoff(attempt))


def _note_retry(exc: Exception, attempt: int, sqlstate: str, parsed: dict[str, str], using: str) -> None:
    ctx = context.current()
    if ctx is not None:
        ctx.db_retries += 1
    record_event(
        "db_retry",
        message=describe_retry(exc, sqlstate, parsed),
        sqlstate=sqlstate,
        details={"attempt": attempt, "error": type(exc).__name__, **parsed, "using": using},
        merge=False,
    )
    announce_retry(run_in_transaction, attempt, sqlstate, parsed, exc, using)


def retry_transaction(
    fn: Callable[..., T] | int | None = None,
    *,
    using: str = "default",
    max_attempts: int = 5,
    idempotent: bool = False,
) -> Any:
    """Decorator form of [`run_in_transaction`][gql_audit.db.run_in_transaction].

    ``@retry_transaction``, ``@retry_transaction(max_attempts=8)`` or ``@retry_transaction(8)``.
    """
    if isinstance(fn, int) and not isinstance(fn, bool):  # the attempts, given positionally
        max_attempts, fn = fn, None
    if fn is not None and not callable(fn):
        raise TypeError(f"retry_transaction takes a function or max_attempts, not {type(fn).__name__}")

    def decorate(function: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> T:
            return run_in_transaction(
                function, *args, using=using, max_attempts=max_attempts, idempotent=idempotent, **kwargs
            )

        return wrapper

    return decorate(fn) if fn is not None else decorate


# --- per-connection context ----------------------------------------------------


def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
    """``connection_created``: name the application, probe once, add the SQL comment."""
    try:
        name = conf.APPLICATION_NAME
        if name and connection.vendor in POSTGRES_VENDORS:
            with connection.cursor() as cursor:
                cursor.execute("SELECT set_config('application_name', %s, false)", [name])
        setattr(connection, ATTRIBUTE, probe(connection))
    except Exception:  # noqa: BLE001 - context is a nicety; the connection must still work
        logger.warning("database context probe failed on %r", connection.alias, exc_info=True)
        setattr(connection, ATTRIBUTE, {})
    # Only where it is wanted: every statement would otherwise pay for the wrapper.
    if conf.SQL_COMMENT and sql_comment not in connection.execute_wrappers:
        connection.execute_wrappers.append(sql_comment)


# --- request id in SQL -----------------------------------------------------------


def request_comment(request_id: str, *, with_params: bool) -> str:
    """The sqlcommenter comment for ``request_id``, ready to append to a statement.

    The value is URL-encoded (sqlcommenter's rule; ``:`` becomes ``%3A``). When
    the statement has parameters the driver reads ``%`` as the start of a
    placeholder (psycopg) or Django turns ``%%`` back into ``%`` (SQLite), so
    each ``%`` is doubled then; without parameters it is sent as it is.
    """
    value = quote(request_id, safe="")
    if with_params:
        value = value.replace("%", "%%")
    return f" /*request_id='{value}'*/"


def sql_comment(execute: Callable[..., Any], sql: str, params: Any, many: bool, context_: dict[str, Any]) -> Any:
    """An execute wrapper, on connections opened while ``SQL_COMMENT`` is on:
    append ``/*request_id='...'*/`` during a request (still only while it is on)."""
    if conf.SQL_COMMENT:
        ctx = context.current()
        if ctx is not None and isinstance(sql, str):
            sql += request_comment(ctx.request_id, with_params=params is not None)
    return execute(sql, params, many, context_)


def announce_retry(
    sender: Any, attempt: int, sqlstate: str, parsed: dict[str, Any], exc: BaseException, using: str
) -> None:
    """Send :data:`transaction_retried` for one retry (of ``run_in_transaction`` or an audit write)."""
    transaction_retried.send(
        sender=sender,
        attempt=attempt,
        sqlstate=sqlstate,
        reason=parsed.get("reason"),
        txn=parsed.get("txn"),
        error=exc,
        using=using,
    )


# --- gql_audit's own writes, run again after a serialization failure -------------------

#: Attempts of one audit write at most: writes are short, and a record that cannot be
#: sealed is weaker evidence, so it gets more chances than a service's transaction.
AUDIT_WRITE_ATTEMPTS = 10


def retry_write(
    attempt: Callable[[list[dict[str, Any]]], T],
    *,
    using: str = "default",
    max_attempts: int = AUDIT_WRITE_ATTEMPTS,
    on_retry: Callable[[BaseException], None] | None = None,
) -> T:
    """Run ``attempt``, one of gql_audit's own writes (the records of a request and their
    seal, a purge batch, a checkpoint), and run it again after a serialization failure
    (SQLSTATE 40001), with :func:`run_in_transaction`'s backoff.

    ``attempt`` opens its own transaction, or is one statement in autocommit. It is
    given the ``db_retry`` events of the attempts that failed before it, to write in
    the same transaction as its records: written apart they would be a write of their
    own, which could fail the same way. ``on_retry`` is told of each failure before
    the next attempt. Inside an outer transaction nothing can be retried alone:
    ``attempt`` runs once.
    """
    from gql_audit.events import build_event

    retries: list[dict[str, Any]] = []
    attempts = 1 if connections[using].in_atomic_block else max_attempts
    number = 0
    while True:
        number += 1
        try:
            return attempt(list(retries))
        except Exception as exc:
            sqlstate = sqlstate_of(exc)
            if sqlstate != SERIALIZATION_FAILURE or number >= attempts:
                raise
            parsed = parse_retry_error(exc) or {}
            ctx = context.current()
            if ctx is not None:
                ctx.db_retries += 1
            # Said as a retry of the service's own transactions is: class, SQLSTATE, reason.
            details = {"attempt": number, "error": type(exc).__name__, **parsed, "using": using, "write": "audit"}
            message = describe_retry(exc, sqlstate, parsed)
            retries.append(build_event("db_retry", ctx, message=message, sqlstate=sqlstate, details=details))
            announce_retry(retry_write, number, sqlstate, parsed, exc, using)
            if on_retry is not None:
                on_retry(exc)
            time.sleep(backoff(number))
