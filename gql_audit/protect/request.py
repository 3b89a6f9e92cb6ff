"""What an HTTP request asks to run, read as it was received, whichever view will run it.

graphene-django reads the ``query``, ``variables`` and ``operationName``
parameters from the query string first, then from a JSON object (or, for a
batch, each object of a JSON list), an ``application/graphql`` body or a form;
graphene-file-upload reads the ``operations`` field of a multipart body (the
GraphQL multipart request specification: an object, or a list for a batch).
Every one of those forms is read here, whatever the view's class or ``batch``
flag says, so that no form reaches a view unseen.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gql_audit.params import body_data, content_type

if TYPE_CHECKING:
    from django.http import HttpRequest


@dataclass
class Entry:
    """One GraphQL request inside an HTTP request (a batch holds several)."""

    #: Where its parameters are read: the object sent (a dict or a ``QueryDict``).
    data: Any
    query: Any
    operation_name: Any
    #: Parsed from JSON when sent as text; None when absent or unreadable.
    variables: Any


@dataclass
class GraphQLRequest:
    """Every GraphQL request an HTTP request holds."""

    entries: list[Entry]
    #: The body was a list (a batch), whatever the view does with it.
    batch: bool
    #: Why an entry cannot be read as a GraphQL request, or None.
    problem: str | None = None
    #: The entries of a batch, read or not (one answer each).
    size: int = 1


def _variables(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except (ValueError, RecursionError):
            return None
    return value


def _shape(request: HttpRequest, body: Any) -> str | None:
    """What is wrong with a body no view can run (graphene-file-upload's answers a 500), or None."""
    if isinstance(body, list):
        return "an empty batch" if not body else None
    if body is None:
        if content_type(request) == "multipart/form-data":
            try:
                if request.POST.get("operations") is not None:
                    return "the operations field is not JSON"
            except Exception:  # noqa: BLE001 - a form Django refuses: the view answers it
                return None
        return None  # no body, or JSON the view refuses in its own words
    return None if hasattr(body, "get") else "the body is not a GraphQL request object"


def read(request: HttpRequest) -> GraphQLRequest:
    """The GraphQL requests ``request`` holds, as the view will read them."""
    body = body_data(request)
    batch = isinstance(body, list)
    problem = _shape(request, body)
    if problem is not None:
        return GraphQLRequest([], batch, problem, len(body) if batch else 1)
    objects = body if batch else [body if hasattr(body, "get") else {}]
    try:
        query_string = request.GET
        from_url = (query_string.get("query"), query_string.get("operationName"), query_string.get("variables"))
    except Exception:  # noqa: BLE001 - a query string Django refuses: the view answers it
        return GraphQLRequest([], batch, "the query string cannot be read", len(objects))
    entries: list[Entry] = []
    for index, data in enumerate(objects):
        if not hasattr(data, "get"):
            return GraphQLRequest(entries, batch, f"batch entry {index} is not an object", len(objects))
        query = from_url[0] or data.get("query")
        name = from_url[1] or data.get("operationName")
        entries.append(Entry(data, query, name, _variables(from_url[2] or data.get("variables"))))
    return GraphQLRequest(entries, batch, None, len(objects))
