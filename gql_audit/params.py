"""The GraphQL parameters of an HTTP request, read the way graphene-django reads them.

For gql_audit's own needs after the view (which values are secret, whether a
body was a GraphQL one): never raises, never reads a body twice from the socket
(Django keeps what the view read in ``request.body``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest

FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def content_type(request: HttpRequest) -> str:
    """The media type, as graphene-django reads it."""
    meta = request.META
    return str(meta.get("CONTENT_TYPE", meta.get("HTTP_CONTENT_TYPE", "")) or "").split(";", 1)[0].strip().lower()


def body_data(request: HttpRequest) -> Any:
    """The parsed body: a dict (or a list, for a batch) for JSON, the query for
    ``application/graphql``, the form, or the ``operations`` of a multipart form
    (the GraphQL multipart request specification, graphene-file-upload's), else None."""
    kind = content_type(request)
    try:
        if kind == "application/json":
            return json.loads(request.body.decode("utf-8"))
        if kind == "application/graphql":
            return {"query": request.body.decode("utf-8")}
        if kind in FORM_TYPES:
            operations = request.POST.get("operations")
            return json.loads(operations) if operations is not None else request.POST
    except Exception:  # noqa: BLE001 - invalid JSON, too deep, not UTF-8, a broken form: no data
        return None
    return None


def graphql_params(request: HttpRequest | None) -> tuple[Any, Any]:
    """``(query, variables)`` as sent; either may be None or of any type."""
    if request is None:
        return None, None
    body = body_data(request)  # graphene-django reads a GET's body too
    # A dict or a QueryDict; a JSON list or scalar holds no parameters.
    data: Any = body if hasattr(body, "get") else {}
    try:
        query = request.GET.get("query") or data.get("query")
        variables = request.GET.get("variables") or data.get("variables")
    except Exception:  # noqa: BLE001 - a query string Django refuses (too many fields): no parameters
        return None, None
    if isinstance(variables, str):
        try:
            variables = json.loads(variables)
        except (ValueError, RecursionError):
            variables = None
    return query, variables
