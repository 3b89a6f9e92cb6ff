"""``THROTTLE["auth_failures"]``: an address that keeps failing to authenticate is refused.

Invalid tokens, certificate failures and failed logins are counted per client
address after each response; once an address reaches the rate, every request
from it is refused before it authenticates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from gql_audit.conf import conf
from gql_audit.protect.counters import ThrottleUnavailable, address_key, count, hit, rate
from gql_audit.protect.refusal import Refusal, cache_unavailable, throttled

if TYPE_CHECKING:
    from gql_audit import context

#: Failures counted against an address's ``auth_failures`` rate.
FAILURE_KINDS = frozenset({"token_invalid", "cert_failed", "login_failed"})


def check_address(ctx: context.RequestContext) -> Refusal | None:
    """Refuse every request from an address past its ``auth_failures`` rate, before it authenticates."""
    limit = rate("auth_failures") if conf.THROTTLE else None
    if limit is None:
        return None
    try:
        failures, left = count("auth_failures", limit, address_key(ctx.remote_addr))
    except ThrottleUnavailable as exc:
        cache_unavailable(exc)
        return None
    if failures >= limit.limit:
        return throttled("auth_failures", limit, failures, left, scope="address")
    return None


def count_failures(ctx: context.RequestContext) -> None:
    """Add this request's authentication and certificate failures to its address's count."""
    limit = rate("auth_failures") if conf.THROTTLE else None
    if limit is None:
        return
    failures = 0
    for event in list(ctx.events.values()):
        if event["kind"] in FAILURE_KINDS:
            failures += event["details"].get("count", 1) if event["kind"] == "login_failed" else 1
    if failures:
        try:
            hit("auth_failures", limit, address_key(ctx.remote_addr), failures)
        except ThrottleUnavailable as exc:
            cache_unavailable(exc)
