"""gql_audit: the audit and authentication layer for Django GraphQL services."""

from __future__ import annotations

from gql_audit.visibility import private, public

__all__ = ["private", "public"]
__version__ = "0.1.0"
