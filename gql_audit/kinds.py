"""The catalogue of security event kinds: each kind's label and severity, in one place.

``SecurityEvent.kind`` takes its choices from here, and ``record_event`` its
severities; docs/events.md describes each.
"""

from __future__ import annotations

#: Kind -> (label, severity).
KINDS: dict[str, tuple[str, str]] = {
    "token_invalid": ("token invalid", "warning"),
    "token_expired": ("token expired", "info"),
    "unauthenticated": ("unauthenticated", "info"),
    "forbidden": ("forbidden", "warning"),
    "graphql_error": ("GraphQL error", "error"),
    "db_error": ("database error", "error"),
    "db_retry": ("database retry", "warning"),
    "cert_failed": ("certificate failed", "warning"),
    "cert_header_untrusted": ("certificate header untrusted", "warning"),
    "login_failed": ("login failed", "warning"),
    "task_failed": ("task failed", "error"),
    "query_limit": ("query over a limit", "warning"),
    "operation_unknown": ("operation not in the allow-list", "warning"),
    "throttled": ("throttled", "warning"),
    "throttle_unavailable": ("throttle cache unavailable", "error"),
    # Who logged in, and who read the trail itself (PCI DSS 10.2.1.3, ASVS 16.3.1).
    "login_succeeded": ("login succeeded", "info"),
    "trail_accessed": ("audit trail accessed", "info"),
}

SEVERITIES = ("info", "warning", "error")

#: Kind -> severity.
SEVERITY = {kind: severity for kind, (_, severity) in KINDS.items()}
