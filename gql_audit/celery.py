"""Celery: a task published during a request carries its request id and actor.

Connected by ``GqlAuditConfig.ready()`` when Celery is installed (the ``celery``
extra); nothing here is imported otherwise.

- Publishing (``delay()``, ``apply_async()``) inside a request adds a
  ``gql_audit`` message header: the request id, the actor's primary key and
  ``{"id", "username"}`` snapshot, and the operation.
- In the worker, a task with that header runs in a context of its own, bound
  for the task's duration: change entries saved by the task name that actor and
  that request id (auditlog's ``cid``), reads and events it records carry them,
  with ``task: {"id", "name"}`` in their ``"gql_audit"`` object; what the task
  recorded is written when it ends, whether it succeeded or not.
- A task that raises is a ``task_failed`` security event (``db_error`` with the
  SQLSTATE when a database refused it), in the request's trail.

The worker believes the header as it believes the rest of the message: whoever
can publish to the broker can run tasks. A header that is not well formed is
ignored (the task runs without a request context).
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from celery.signals import before_task_publish, task_failure, task_postrun, task_prerun

from gql_audit import context
from gql_audit.access import registered_models
from gql_audit.auth import describe_dependency_failure
from gql_audit.conf import conf
from gql_audit.events import classify_resolver_error, record_event
from gql_audit.net import REQUEST_ID_PATTERN
from gql_audit.redaction import Scrubber, safe_text, secret_leaves
from gql_audit.store import flush, index

HEADER = "gql_audit"
#: An error's text is looked at up to here (an event keeps 2,000 characters of it).
MAX_MESSAGE = 4000

logger = logging.getLogger("gql_audit.celery")

#: task id -> the context token of the task running it (a worker thread runs one task at a time).
_running: dict[str, tuple[context.RequestContext, Any]] = {}


def connect() -> None:
    """Connect the receivers (idempotent)."""
    before_task_publish.connect(add_header, dispatch_uid="gql_audit.celery.add_header", weak=False)
    task_prerun.connect(enter_task, dispatch_uid="gql_audit.celery.enter_task", weak=False)
    task_failure.connect(task_failed, dispatch_uid="gql_audit.celery.task_failed", weak=False)
    task_postrun.connect(leave_task, dispatch_uid="gql_audit.celery.leave_task", weak=False)


def add_header(sender: Any = None, headers: dict[str, Any] | None = None, **kwargs: Any) -> None:
    """``before_task_publish``: the current request's id and actor, as a message header."""
    ctx = context.current()
    if ctx is None or headers is None:
        return
    actor = ctx.actor_snapshot()
    headers[HEADER] = {"request_id": ctx.request_id, "actor": actor, "operation": ctx.operation}


def _header(task: Any) -> dict[str, Any] | None:
    request = getattr(task, "request", None)
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    if not isinstance(value, dict):
        return None
    request_id = value.get("request_id")
    if not isinstance(request_id, str) or not REQUEST_ID_PATTERN.fullmatch(request_id):
        return None
    return value


#: What a header may say of the publishing request's operation (GraphQL's own name syntax).
_OPERATION_TYPES = frozenset({"query", "mutation", "subscription"})
_NAME = re.compile(r"[_A-Za-z][_0-9A-Za-z]{0,254}")
_HASH = re.compile(r"[0-9a-f]{64}")


def _operation(value: Any) -> dict[str, Any] | None:
    """The operation a header names, each part kept only when well formed: whoever can
    publish to the broker chooses it, and a record must not carry what it likes."""
    if not isinstance(value, dict) or value.get("type") not in _OPERATION_TYPES:
        return None
    name, sha256 = value.get("name"), value.get("hash")
    return {
        "type": value["type"],
        "name": name if isinstance(name, str) and _NAME.fullmatch(name) else None,
        "hash": sha256 if isinstance(sha256, str) and _HASH.fullmatch(sha256) else None,
    }


def _actor(snapshot: Any) -> Any:
    """The user a task acts for: the publishing request's, loaded again (None if gone)."""
    if not isinstance(snapshot, dict) or snapshot.get("id") is None:
        return None
    from django.contrib.auth import get_user_model

    model = get_user_model()
    try:
        return model._default_manager.filter(pk=snapshot["id"]).first()
    except (ValueError, TypeError):  # a key the user model cannot hold
        return None


def enter_task(sender: Any = None, task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    """``task_prerun``: bind the task's context when it was published by a request."""
    if task is None or task_id is None or context.current() is not None:
        return  # run eagerly inside a request: it records into the request's context
    header = _header(task)
    if header is None:
        return
    ctx = context.RequestContext(
        request_id=header["request_id"],
        started=time.perf_counter(),
        acting_user=_actor(header.get("actor")),
        task={"id": safe_text(str(task_id))[:255], "name": safe_text(str(getattr(task, "name", "")))[:255]},
    )
    ctx.operation = _operation(header.get("operation"))
    if conf.ACCESS_LOG:
        ctx.accessed = {}
        ctx.audited = registered_models()
    _running[task_id] = (ctx, context.bind(ctx))


def task_failed(
    sender: Any = None,
    task_id: str | None = None,
    exception: BaseException | None = None,
    args: Any = None,
    kwargs: Any = None,
    **rest: Any,
) -> None:
    """``task_failure``: the failure, as an event of the publishing request."""
    if task_id not in _running or not isinstance(exception, Exception):
        return
    kind, sqlstate = classify_resolver_error(exception)
    if kind == "db_error":
        # A worker's connection errors name hosts and users: the class, SQLSTATE and server's words only.
        message = describe_dependency_failure(exception)[0]
    else:
        # An error echoes what the task was given (a password passed to it): every argument is
        # scrubbed from its text, as the secrets of a request are.
        given = secret_leaves([args, kwargs], secret=True)
        kind, message = "task_failed", Scrubber(given).text(str(exception)[:MAX_MESSAGE])
    record_event(
        kind,
        message=message,
        sqlstate=sqlstate,
        details={"exception": type(exception).__name__, "task": getattr(sender, "name", None)},
    )


def leave_task(sender: Any = None, task_id: str | None = None, **kwargs: Any) -> None:
    """``task_postrun``: write what the task recorded, and unbind its context."""
    entry = _running.pop(task_id, None) if task_id is not None else None
    if entry is None:
        return
    ctx, token = entry
    try:
        flush(ctx)
    except Exception:  # noqa: BLE001 - a task's outcome must not change because auditing failed
        logger.exception("gql_audit could not write the records of task %s", ctx.task)
    finally:
        context.reset(token)
    index.catch_up_when_due()  # a worker serves no response: its writes are indexed here
