"""``METRICS``: Prometheus counters of what gql_audit sees, through ``prometheus_client``.

Counted where it happens, at the cost of one settings lookup when ``METRICS`` is off:
each GraphQL request and its outcome, each authentication failure, refusal and
database retry (from the security event that records it), each record written or
sent to the fallback log, the time of each audit write. ``gql_audit.views.metrics``
exposes them with the gauges read from the database at scrape time (the outbox's
backlog, the newest checkpoint's age).

Under a server of several processes (gunicorn's workers) set ``PROMETHEUS_MULTIPROC_DIR``
to an empty directory the workers share before they start: each process then writes
its counts there and any worker's ``metrics`` view adds them up
(``prometheus_client``'s multiprocess mode).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gql_audit.conf import conf

PREFIX = "gql_audit"
#: Seconds: an audit write is one transaction of a few statements.
WRITE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

#: Security event kind -> the ``code`` of ``gql_audit_auth_failures_total``.
AUTH_FAILURES = {
    "token_invalid": "TOKEN_INVALID",
    "token_expired": "TOKEN_EXPIRED",
    "login_failed": "LOGIN_FAILED",
    "cert_failed": "CERT_FAILED",
    "unauthenticated": "UNAUTHENTICATED",
}
#: Security event kinds that refuse something, and the rule each names (``details.rule``) when it does not.
REFUSALS = {
    "forbidden": "resolver",
    "unauthenticated": "PUBLIC_FIELDS",
    "query_limit": "QUERY_LIMITS",
    "operation_unknown": "PERSISTED_OPERATIONS",
    "throttled": "THROTTLE",
    "cert_header_untrusted": "TRUSTED_PROXIES",
}
#: ``rule`` label values (anything else is counted as ``other``: a label never takes a client's text).
RULES = frozenset(
    {
        "resolver",
        "PUBLIC_FIELDS",
        "@private",
        "INTROSPECTION",
        "REQUIRE_CLIENT_CERT",
        "csrf",
        "QUERY_LIMITS",
        "PERSISTED_OPERATIONS",
        "THROTTLE",
        "TRUSTED_PROXIES",
    }
)
#: Request outcomes by the codes the request's errors carried, first match wins.
REFUSED_CODES = frozenset({"THROTTLED", "QUERY_TOO_COMPLEX", "OPERATION_NOT_ALLOWED", "PERSISTED_QUERY_NOT_FOUND"})
DENIED_CODES = frozenset(
    {"UNAUTHENTICATED", "TOKEN_EXPIRED", "TOKEN_INVALID", "FORBIDDEN", "LOGIN_FAILED", "AUTH_UNAVAILABLE"}
)
OPERATION_TYPES = frozenset({"query", "mutation", "subscription"})


def enabled() -> bool:
    return bool(conf.METRICS)


class _Metrics:
    """The process's metric objects, made on first use (after ``PROMETHEUS_MULTIPROC_DIR`` is set)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram

        self.requests = Counter(
            f"{PREFIX}_requests", "GraphQL requests, by operation type and outcome.", ["operation_type", "outcome"]
        )
        self.auth_failures = Counter(f"{PREFIX}_auth_failures", "Authentication failures, by code.", ["code"])
        self.refusals = Counter(f"{PREFIX}_refusals", "Requests or fields refused, by the rule that refused.", ["rule"])
        self.records_written = Counter(
            f"{PREFIX}_records_written", "Audit records written to the database, by kind.", ["kind"]
        )
        self.records_fallback = Counter(
            f"{PREFIX}_records_fallback",
            "Audit records the database did not take, written to the fallback log instead, by kind.",
            ["kind"],
        )
        self.audit_write = Histogram(
            f"{PREFIX}_audit_write_seconds", "Time to write a request's audit records.", buckets=WRITE_BUCKETS
        )
        self.db_retries = Counter(f"{PREFIX}_db_retries", "Transactions retried, by SQLSTATE.", ["sqlstate"])


_made: list[_Metrics] = []


def _metrics() -> _Metrics:
    if not _made:
        _made.append(_Metrics())
    return _made[0]


def request_done(operation: Any, codes: Iterable[str], status: int) -> None:
    """A request that ran (or tried to run) a GraphQL operation has been answered."""
    if not conf.METRICS:
        return
    kind = operation.get("type") if isinstance(operation, dict) else None
    found = set(codes)
    if status == 503:  # FAIL_CLOSED: the records could not be written
        outcome = "audit_unavailable"
    elif found & REFUSED_CODES:
        outcome = "refused"
    elif found & DENIED_CODES:
        outcome = "denied"
    elif found or status >= 400:
        outcome = "error"
    else:
        outcome = "ok"
    _metrics().requests.labels(kind if kind in OPERATION_TYPES else "none", outcome).inc()


def event_recorded(kind: str, details: dict[str, Any] | None, sqlstate: str) -> None:
    """A security event was recorded: count the failure, refusal or retry it stands for."""
    if not conf.METRICS:
        return
    metrics = _metrics()
    details = details or {}
    code = AUTH_FAILURES.get(kind)
    if kind == "db_error" and details.get("code") == "AUTH_UNAVAILABLE":
        code = "AUTH_UNAVAILABLE"
    if code is not None:
        metrics.auth_failures.labels(code).inc()
    if kind in REFUSALS:
        rule = details.get("rule") or REFUSALS[kind]
        if details.get("enforced", True):  # measured or observed only: served
            metrics.refusals.labels(rule if rule in RULES else "other").inc()
    if kind == "db_retry":
        state = sqlstate if len(sqlstate) == 5 and sqlstate.isalnum() else "other"
        metrics.db_retries.labels(state).inc()


def records_written(kind: str, count: int) -> None:
    if conf.METRICS and count:
        _metrics().records_written.labels(kind).inc(count)


def records_fallback(kind: str, count: int) -> None:
    if conf.METRICS and count:
        _metrics().records_fallback.labels(kind).inc(count)


def audit_write_took(seconds: float) -> None:
    if conf.METRICS:
        _metrics().audit_write.observe(seconds)
