"""``QUERY_LIMITS``: a request over a limit is recorded, and refused in ``enforce`` mode.

Every limit counts every operation of the request, executed or not (each
operation and fragment of each document, each entry of a batch): the parser
and the validator read all of them. ``max_request_bytes`` is checked on the
body as received, before anything parses it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gql_audit.compat import received_body_size
from gql_audit.errors import QUERY_TOO_COMPLEX
from gql_audit.events import record_event
from gql_audit.protect.refusal import RULE_LIMITS, Refusal

if TYPE_CHECKING:
    from django.http import HttpRequest

    from gql_audit.protect.document import Analysis

#: Status of a body refused for its size: the HTTP word for it.
TOO_LARGE = 413


def exceeded(found: dict[str, int], limits: dict[str, Any], enforced: bool, problem: str | None = None) -> bool:
    """Record a ``query_limit`` event for each limit ``found`` goes over; whether any does."""
    over = False
    for name, value in found.items():
        maximum = limits.get(name)
        if not isinstance(maximum, int) or isinstance(maximum, bool) or value <= maximum:
            continue
        over = True
        record_event(
            "query_limit",
            message=f"{name} {maximum} exceeded" + (f": {problem}" if problem else ""),
            details={"rule": RULE_LIMITS, "limit": name, "value": value, "max": maximum, "enforced": enforced},
        )
    return over


def refusal(over: bool, enforced: bool, status: int = 400) -> Refusal | None:
    return Refusal(QUERY_TOO_COMPLEX, RULE_LIMITS, status) if over and enforced else None


def check_size(request: HttpRequest, limits: dict[str, Any], enforced: bool) -> Refusal | None:
    """``max_request_bytes``: the body as received, before it is read or parsed."""
    if "max_request_bytes" not in limits:
        return None
    size = received_body_size(request)
    over = size is not None and exceeded({"max_request_bytes": size}, limits, enforced)
    return refusal(over, enforced, TOO_LARGE)


def check_batch(entries: int, limits: dict[str, Any], enforced: bool) -> Refusal | None:
    """``max_batch``: the operations of one batched request."""
    return refusal(exceeded({"max_batch": entries}, limits, enforced), enforced)


def check_documents(
    analyses: list[Analysis], costs: list[int], limits: dict[str, Any], enforced: bool
) -> Refusal | None:
    """Depth (the deepest), aliases, fields, directives and cost (added up over every
    operation of every document of the request), and tokens (per document)."""
    return measure_documents(analyses, costs, limits, enforced)[0]


def measure_documents(
    analyses: list[Analysis], costs: list[int], limits: dict[str, Any], enforced: bool
) -> tuple[Refusal | None, bool]:
    """:func:`check_documents`, and whether the documents go over any limit (recorded, refused or not)."""
    found: dict[str, int] = {}
    problem = None
    for analysis in analyses:
        if analysis.over_tokens:
            # The parser stopped counting there: the value says "more than max".
            found["max_tokens"] = limits["max_tokens"] + 1
        for name, value in analysis.worst().as_dict().items():
            found[name] = max(found.get(name, 0), value) if name == "max_depth" else found.get(name, 0) + value
        problem = problem or analysis.problem
    if costs:
        found["max_cost"] = sum(costs)
    over = exceeded(found, limits, enforced, problem)
    return refusal(over, enforced), over
