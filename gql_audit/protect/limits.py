"""``QUERY_LIMITS``: an operation over a limit is recorded, and refused in ``enforce`` mode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gql_audit.errors import QUERY_TOO_COMPLEX
from gql_audit.events import record_event
from gql_audit.protect.document import over_limits
from gql_audit.protect.refusal import RULE_LIMITS, Refusal

if TYPE_CHECKING:
    from gql_audit.protect.document import Analysis, Operation


def check_limits(
    analysis: Analysis, operation: Operation | None, limits: dict[str, int], enforced: bool
) -> Refusal | None:
    cost = operation.cost if operation is not None else analysis.worst()
    exceeded = over_limits(cost, limits)
    if analysis.over_tokens:
        # The parser stopped counting there: the value says "more than max".
        exceeded.insert(0, ("max_tokens", limits["max_tokens"] + 1, limits["max_tokens"]))
    for name, value, maximum in exceeded:
        record_event(
            "query_limit",
            message=f"{name} {maximum} exceeded" + (f": {analysis.problem}" if analysis.problem else ""),
            details={"rule": RULE_LIMITS, "limit": name, "value": value, "max": maximum, "enforced": enforced},
        )
    if exceeded and enforced:
        return Refusal(QUERY_TOO_COMPLEX, RULE_LIMITS, 400)
    return None
