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
from typing import Any

from gql_audit import context

#: Attribute of a record holding a structured payload gql_audit logged.
PAYLOAD = "gql_audit_payload"

_STANDARD = frozenset(
    logging.LogRecord("", 0, "", 0, "", (), None).__dict__.keys() | {"message", "asctime", "taskName"}
)
_CONTEXT_KEYS = ("request_id", "actor_id", "operation", "client_cert_fingerprint", "db_node")


class ContextFilter(logging.Filter):
    """Add ``request_id``, ``actor_id``, ``operation``, ``client_cert_fingerprint``, ``db_node``."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = context.current()
        if ctx is None:
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


def _actor_id(ctx: context.RequestContext) -> Any:
    # Never load a lazy session user from inside logging: the query would log
    # a record, which would come back here.
    from django.utils.functional import SimpleLazyObject, empty

    user = getattr(ctx.request, "user", None)
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        return None
    return ctx.actor()[0]


def _db_node() -> Any:
    from django.db import connections

    from gql_audit.db import ATTRIBUTE

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
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != PAYLOAD and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=_fallback, ensure_ascii=True, separators=(",", ":"))


def _fallback(value: Any) -> Any:
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
