"""gql_audit: the audit and authentication layer for Django GraphQL services."""

from __future__ import annotations

from typing import Any

from gql_audit.visibility import private, public

__all__ = ["audit_access", "private", "public"]


def __getattr__(name: str) -> Any:
    # audit_access needs Django's app registry: import it on first use only.
    if name == "audit_access":
        from gql_audit.access import audit_access

        return audit_access
    raise AttributeError(f"module 'gql_audit' has no attribute {name!r}")


__version__ = "0.2.0"
