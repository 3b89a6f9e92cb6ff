"""The admin as an auditor's tool: reads, change entries and security events, read-only.

Three lists (the ``gql_audit`` store's reads, auditlog's entries, security
events), each record's gql_audit context laid out for people, filters by
actor, object, kind, time and request id, a page joining every record of one
request (``admin:gql_audit_trail``), and :class:`AccessHistoryAdminMixin` for
a service's own ``ModelAdmin``. Nobody adds, changes or deletes a record here,
superusers included. Lists never count a whole table: see :class:`CappedPaginator`.

auditlog's own ``LogEntryAdmin`` is replaced by :class:`LogEntryAdmin` (the
same URLs), which shows ACCESS entries' fields read and every entry's context.

One module a job:

- :mod:`~gql_audit.admin.display`: stored text made visible and escaped, links, times, tables;
- :mod:`~gql_audit.admin.filters`: the lists' filters;
- :mod:`~gql_audit.admin.base`: what every record's admin shares (read-only, capped counts, permissions);
- :mod:`~gql_audit.admin.reads`, :mod:`~gql_audit.admin.entries`, :mod:`~gql_audit.admin.events`:
  each record's admin;
- :mod:`~gql_audit.admin.trail`: the request trail page;
- :mod:`~gql_audit.admin.history`: :class:`AccessHistoryAdminMixin`, an object's access history.
"""

from __future__ import annotations

from django.apps import apps
from django.core.exceptions import ImproperlyConfigured

if not apps.is_installed("auditlog"):
    # Imported by the admin's autodiscovery while Django starts, before any system
    # check runs: said here in E008's words rather than as auditlog's own error.
    raise ImproperlyConfigured(
        "gql_audit.E008: 'auditlog' is not in INSTALLED_APPS; gql_audit writes and shows "
        "django-auditlog entries. Add 'auditlog' to INSTALLED_APPS (see docs/installation.md)."
    )

from gql_audit.admin.base import CappedPaginator  # noqa: E402 - after the check above
from gql_audit.admin.display import trail_url
from gql_audit.admin.entries import LogEntryAdmin, replace_auditlogs_admin
from gql_audit.admin.events import SecurityEventAdmin
from gql_audit.admin.history import AccessHistoryAdminMixin
from gql_audit.admin.reads import RequestReadsAdmin

__all__ = [
    "AccessHistoryAdminMixin",
    "CappedPaginator",
    "LogEntryAdmin",
    "RequestReadsAdmin",
    "SecurityEventAdmin",
    "replace_auditlogs_admin",
    "trail_url",
]
