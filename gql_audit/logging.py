"""JSON log lines that carry the request's audit context.

``ContextFilter`` adds the current request's context to every record that
passes the handler it is attached to, from any logger (Django, graphene, the
database backend). ``JSONFormatter`` writes each record as one JSON object on
one line: values are escaped by ``json.dumps(ensure_ascii=True)``, so
newlines, quotes, control characters, ANSI escapes and undecodable bytes in
user-controlled text can never split or forge a line.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

from gql_audit import context
from gql_audit.compat import is_unevaluated_lazy
from gql_audit.conf import conf
from gql_audit.dbcontext import ATTRIBUTE
from gql_audit.redaction import redact

if TYPE_CHECKING:
    from django.http import HttpRequest

request_logger = logging.getLogger("gql_audit.request")

#: Attribute of a record holding a structured payload gql_audit logged.
PAYLOAD = "gql_audit_payload"

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)
_CONTEXT_KEYS = ("request_id", "actor_id", "operation", "client_cert_fingerprint", "db_node")


class ContextFilter(logging.Filter):
    """Add ``request_id``, ``actor_id``, ``operation``, ``client_cert_fingerprint``, ``db_node``."""

    def filter(self, record: logging.LogRecord) -> bool:
        # Django logs a 4xx or 5xx after the middleware returned: the request still knows its context.
        ctx = context.current() or getattr(getattr(record, "request", None), context.REQUEST_ATTRIBUTE, None)
        if ctx is None:
            if record.name == "django.server":
                record.request_id = _answered_request_id(record)
            for key in _CONTEXT_KEYS:
                if not hasattr(record, key):
                    setattr(record, key, None)
            return True
        record.request_id = ctx.request_id
        record.actor_id = _actor_id(ctx)
        record.operation = ctx.operation
        cert = ctx.client_cert
        record.client_cert_fingerprint = cert.fingerprint_sha256 if cert is not None else None
        record.db_node = _db_node()
        return True


#: The request this thread answered last. Django's development server logs its line for a
#: request (``"POST /graphql/ HTTP/1.1" 200 45``) on the thread that ran the request, after
#: the response left the middleware, when the request's context is already gone.
_answered = threading.local()


def remember_answered(request_id: str, request: HttpRequest) -> None:
    """The middleware, as a response leaves it: this thread answered ``request_id``."""
    _answered.last = (request_id, request.META.get("REQUEST_METHOD"), request.META.get("PATH_INFO"))


def _answered_request_id(record: logging.LogRecord) -> str | None:
    """The request id of the request a ``django.server`` line is about, or None.

    Only the request this thread answered last, and only when the line names its
    method and path (decoded as Django decodes ``PATH_INFO``): a line about a
    request that never reached the middleware gets no id, never another request's.
    """
    last = getattr(_answered, "last", None)
    _answered.last = None
    args = record.args
    if last is None or not isinstance(args, tuple) or not args or not isinstance(args[0], str):
        return None
    words = args[0].split()  # the request line, split as http.server splits it
    if len(words) < 2:
        return None
    request_id, answered_method, answered_path = last
    from django.utils.encoding import repercent_broken_unicode

    path = repercent_broken_unicode(unquote_to_bytes(words[1].split("?", 1)[0])).decode()
    if (words[0], path) != (answered_method, answered_path):
        return None
    answered: str = request_id
    return answered


def _actor_id(ctx: context.RequestContext) -> Any:
    # Never load a lazy session user from inside logging: the query would log
    # a record, which would come back here (and a dying worker has no time for it).
    if is_unevaluated_lazy(getattr(ctx.request, "user", None)):
        return None
    return ctx.actor()[0]


def _json(value: Any) -> str:
    return json.dumps(value, default=str, ensure_ascii=True, separators=(",", ":"), sort_keys=True)


def log_payload(logger: logging.Logger, level: int, payload: dict[str, Any]) -> None:
    """The message is the JSON itself (readable with any formatter); the payload
    rides along for :class:`JSONFormatter` to merge."""
    if not logger.isEnabledFor(level):
        return
    text = _json(payload)
    logger.log(level, "%s", text, extra={PAYLOAD: json.loads(text)})


def log_request(ctx: context.RequestContext, status: int) -> None:
    """One ``gql_audit.request`` line per GraphQL operation (``REQUEST_LOG``).

    Variables are logged by name; their values only with
    ``LOG_VARIABLE_VALUES``, and then redacted and scrubbed of secrets.
    """
    if not conf.REQUEST_LOG or (ctx.operation is None and not ctx.error_codes):
        return
    if not request_logger.isEnabledFor(logging.INFO):
        return
    variables = ctx.variables
    if isinstance(variables, dict):
        logged: Any = (
            ctx.scrubber().data(ctx.redacted_variables(), record=False)
            if conf.LOG_VARIABLE_VALUES
            else sorted(variables)[:50]
        )
    else:
        logged = None
    cert = ctx.client_cert
    log_payload(
        request_logger,
        logging.INFO,
        {
            "event": "graphql_request",
            "request_id": ctx.request_id,
            "client_request_id": ctx.client_request_id,
            "operation": ctx.operation,
            "variables": logged,
            "status": status,
            "duration_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
            "error_codes": sorted(ctx.error_codes),
            "objects_accessed": ctx.objects_accessed,
            "actor_id": ctx.actor()[0],
            "remote_addr": ctx.remote_addr,
            "client_cert_fingerprint": cert.fingerprint_sha256 if cert is not None else None,
            "db_retries": ctx.db_retries,
        },
    )


audit_logger = logging.getLogger("gql_audit.audit")


def log_failed_entry(sender: Any, instance: Any, action: Any, changes: Any, entry: Any, error: BaseException) -> None:
    """A change entry auditlog could not INSERT, complete, as one ``gql_audit.audit`` line.

    ``entry`` is the ``LogEntry`` whose save failed (stamped with the actor and
    context), or None when auditlog failed before building it.
    """
    ctx = context.current()
    from auditlog import get_logentry_model

    payload: dict[str, Any] = {
        "event": "change_entry_unwritten",
        # auditlog logs an update before saving it (the failure stops the save),
        # a creation or deletion after (only a transaction takes it back).
        "change_saved": action != get_logentry_model().Action.UPDATE,
        "error": f"{type(error).__name__}: {error}"[:1000],
        "model": getattr(getattr(sender, "_meta", None), "label", str(sender)),
        "object_pk": str(getattr(instance, "pk", "")),
        "action": action,
    }
    if entry is not None:
        payload.update(
            {
                "object_repr": entry.object_repr,
                "changes": redact(entry.changes),
                "actor_id": entry.actor_id,
                "actor_email": entry.actor_email,
                "cid": entry.cid,
                "remote_addr": entry.remote_addr,
                "timestamp": entry.timestamp,
                "additional_data": redact(entry.additional_data),
            }
        )
    else:
        payload["changes"] = redact(changes)
        if ctx is not None:
            payload.update({"actor_id": ctx.actor()[0], "cid": ctx.request_id, "actor": ctx.actor_snapshot()})
    if ctx is not None:
        payload = ctx.scrubber().data(payload)
    log_payload(audit_logger, logging.ERROR, payload)


def trace(ctx: context.RequestContext) -> dict[str, Any]:
    """Who and what a request was, from what it already holds (no query, no I/O)."""
    return {
        "request_id": ctx.request_id,
        "actor_id": _actor_id(ctx),
        "operation": ctx.operation,
        "path": ctx.path,
        "remote_addr": ctx.remote_addr,
        "elapsed_ms": round((time.perf_counter() - ctx.started) * 1000, 3),
        "pending_reads": len(ctx.accessed or ()),
        "pending_events": len(ctx.events),
    }


def log_aborted(ctx: context.RequestContext, reason: str) -> None:
    """A request that will never finish (the worker is being killed, the task cancelled)."""
    if ctx.aborted:
        return
    ctx.aborted = True
    try:
        log_payload(request_logger, logging.ERROR, {"event": "request_aborted", "reason": reason, **trace(ctx)})
    except Exception:  # noqa: BLE001 - dying already; never mask the real exit
        pass


def log_in_flight(reason: str = "worker_abort") -> int:
    """Log every request this process is handling, one ``request_aborted`` line each.

    For a server's last-gasp hook, such as gunicorn's ``worker_abort`` (called
    when a worker is killed for its timeout): requests in other threads than
    the one interrupted are otherwise gone without a word. Returns how many
    were logged.
    """
    contexts = context.in_flight()
    for ctx in contexts:
        log_aborted(ctx, reason)
    return len(contexts)


def _db_node() -> Any:
    from django.db import connections

    data = getattr(connections["default"], ATTRIBUTE, None) or {}
    return data.get("node_id") or data.get("backend_pid")


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, context, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        payload = getattr(record, PAYLOAD, None)
        if isinstance(payload, dict):
            out["message"] = payload.get("event", record.getMessage())
            out.update(payload)
        else:
            out["message"] = record.getMessage()
            if record.name == "django.server":
                out["message"] = _QUERY_STRING.sub("?[query string not logged]", out["message"])
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != PAYLOAD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=_fallback, ensure_ascii=True, separators=(",", ":"))


#: A query string in a request line: GraphQL over GET carries variables (passwords) there.
_QUERY_STRING = re.compile(r"\?[^\s\"']*")


def _fallback(value: Any) -> Any:
    from django.http import HttpRequest

    if isinstance(value, HttpRequest):  # Django's loggers pass the request: never its query string
        return f"{value.method} {value.path}"
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


def logging_config(level: str = "INFO", *, stream: str = "ext://sys.stdout") -> dict[str, Any]:
    """A ``LOGGING`` dict: everything as JSON lines on ``stream``, with the request context."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"gql_audit_context": {"()": "gql_audit.logging.ContextFilter"}},
        "formatters": {"gql_audit_json": {"()": "gql_audit.logging.JSONFormatter"}},
        "handlers": {
            "gql_audit_json": {
                "class": "logging.StreamHandler",
                "stream": stream,
                "filters": ["gql_audit_context"],
                "formatter": "gql_audit_json",
            }
        },
        "root": {"handlers": ["gql_audit_json"], "level": level},
        "loggers": {
            "django": {"handlers": ["gql_audit_json"], "level": level, "propagate": False},
            "gql_audit": {"handlers": ["gql_audit_json"], "level": "INFO", "propagate": False},
        },
    }
