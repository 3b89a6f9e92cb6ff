"""What a refused request is told, and the events that put refusals on the trail.

Every protection refuses the same way: a :class:`Refusal` names the error code,
the rule (``details.rule`` of its event, ``extensions.rule`` of its error) and
the HTTP status; :func:`respond` turns it into the response sent instead of
running the view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.http import JsonResponse

from gql_audit.conf import conf
from gql_audit.errors import MESSAGES, THROTTLED
from gql_audit.events import record_event

if TYPE_CHECKING:
    from gql_audit import context
    from gql_audit.protect.counters import Rate, ThrottleUnavailable

#: Rule names, as refusal events' ``details.rule`` and errors' ``extensions.rule`` give them.
RULE_LIMITS = "QUERY_LIMITS"
RULE_ALLOW_LIST = "PERSISTED_OPERATIONS"
RULE_THROTTLE = "THROTTLE"


@dataclass
class Refusal:
    """What the client is told instead of running the view."""

    code: str
    rule: str
    status: int
    retry_after: int | None = None

    def body(self, entries: int | None) -> Any:
        error = {"message": MESSAGES[self.code], "extensions": {"code": self.code, "rule": self.rule}}
        one = {"errors": [error]}
        return one if entries is None else [one] * entries


class Refused(JsonResponse):
    """A request refused before the view ran (a limit, the allow-list, a throttle): already on record."""


def respond(ctx: context.RequestContext, refusal: Refusal, entries: int | None = None) -> Refused:
    """The answer to a refused request (``entries``: the size of a refused batch)."""
    ctx.error_codes.add(refusal.code)
    ctx.refused = True
    response = Refused(refusal.body(entries), status=refusal.status, safe=False)
    if refusal.retry_after is not None:
        response["Retry-After"] = str(refusal.retry_after)
    return response


def cache_unavailable(exc: ThrottleUnavailable) -> None:
    """A cache that is down lets requests through (fail open), and says so."""
    record_event(
        "throttle_unavailable",
        message=f"throttle cache {conf.THROTTLE_CACHE!r} unavailable ({exc}); request not throttled",
        details={"rule": RULE_THROTTLE, "cache": conf.THROTTLE_CACHE},
        once=True,
    )


def throttled(name: str, limit: Rate, attempts: int, left: int, **details: Any) -> Refusal:
    """Record a request over the rate ``name``; the refusal it gets."""
    record_event(
        "throttled",
        message=f"over the {name} rate {limit.text}",
        details={"rule": RULE_THROTTLE, "limit": name, "rate": limit.text, "attempts": attempts, **details},
    )
    return Refusal(THROTTLED, RULE_THROTTLE, 429, retry_after=left)
