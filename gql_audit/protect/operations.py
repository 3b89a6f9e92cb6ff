"""``THROTTLE["operations"]``: every GraphQL operation a client asks for, per
authenticated actor, or per client address (an IPv6 one by its /64) when anonymous."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gql_audit.protect.counters import ThrottleUnavailable, address_key, rate, take
from gql_audit.protect.refusal import Refusal, cache_unavailable, throttled

if TYPE_CHECKING:
    from gql_audit import context


def check_operations(ctx: context.RequestContext, operations: int) -> Refusal | None:
    """Count ``operations`` more for the request's actor (each entry of a batch is one)."""
    limit = rate("operations")
    if limit is None or operations < 1:
        return None
    actor_id = ctx.actor()[0]
    if actor_id is not None:
        counted, scope = f"actor:{actor_id}", "actor"
    else:
        counted, scope = f"address:{address_key(ctx.remote_addr)}", "address"
    try:
        seen, left = take("operations", limit, counted, operations)
    except ThrottleUnavailable as exc:
        cache_unavailable(exc)
        return None
    if seen > limit.limit:
        return throttled("operations", limit, seen, left, scope=scope)
    return None
