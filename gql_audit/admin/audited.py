"""Access to the trail is itself on the trail: each admin page of audit records a staff user
opens leaves a ``trail_accessed`` security event naming the page and its filters
(PCI DSS 10.2.1.3)."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponseBase

from gql_audit.events import record_event

#: Query parameters kept in an event's ``details.filters``, at most, each value cut to this length.
MAX_FILTERS = 20
MAX_FILTER_LENGTH = 200


def filters_of(request: HttpRequest) -> dict[str, str]:
    """The page's query parameters (its filters, search, order and page), bounded."""
    return {key: str(value)[:MAX_FILTER_LENGTH] for key, value in list(request.GET.items())[:MAX_FILTERS]}


def trail_accessed(request: HttpRequest, response: HttpResponseBase, page: str, **details: Any) -> None:
    """Record that ``request``'s user was shown ``page`` (a URL name), when it was shown."""
    if response.status_code != 200:
        return
    record_event(
        "trail_accessed",
        message=f"audit records shown: {page}",
        details={"page": page, "filters": filters_of(request), **details},
    )
