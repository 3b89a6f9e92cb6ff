"""``THROTTLE["login"]`` and ``["login_address"]``: login attempts, counted before any password is checked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gql_audit.protect.counters import ThrottleUnavailable, count, hit, normalised, rate
from gql_audit.protect.failures import address
from gql_audit.protect.refusal import Refusal, cache_unavailable, throttled

if TYPE_CHECKING:
    from gql_audit import context
    from gql_audit.protect.document import Operation


def username(root_field: Any, path: tuple[str, ...], variables: Any) -> Any:
    from graphql import Undefined, value_from_ast_untyped

    arguments = dict(root_field.arguments)
    node = arguments.get(path[0])
    if node is None:
        return None
    try:
        value = value_from_ast_untyped(node, variables if isinstance(variables, dict) else None)
    except Exception:  # noqa: BLE001 - a value no parser could read: no username, still an attempt
        return None
    for key in path[1:]:
        value = value.get(key) if isinstance(value, dict) else None
    return None if value is Undefined else value


def check_logins(ctx: context.RequestContext, schema: Any, operation: Operation, variables: Any) -> Refusal | None:
    """Count each login this operation would attempt; refuse before any password is hashed."""
    from gql_audit.visibility import login_arguments

    logins = login_arguments(schema) if schema is not None else {}
    attempts = [(rf, logins[rf.name]) for rf in operation.root_fields if rf.name in logins]
    if not attempts:
        return None
    total = len(attempts) if not operation.truncated else max(len(attempts), 1000)
    by_user: dict[str, tuple[Any, int]] = {}
    for root_field, path in attempts:
        tried = username(root_field, path, variables)
        key = normalised(tried)
        by_user[key] = (tried, by_user.get(key, (tried, 0))[1] + 1)
    client = address(ctx)
    try:
        per_address = rate("login_address")
        if per_address is not None:
            seen, left = hit("login_address", per_address, client, total)
            if seen > per_address.limit:
                return throttled("login_address", per_address, seen, left, scope="address")
        per_user = rate("login")
        if per_user is not None:
            for key, (tried, n) in by_user.items():
                seen, left = hit("login", per_user, key, n)
                if seen > per_user.limit:
                    return throttled("login", per_user, seen, left, scope="username", username=tried)
        failures = rate("auth_failures")
        if failures is not None:
            seen, left = count("auth_failures", failures, client)
            if seen + total > failures.limit:
                return throttled("auth_failures", failures, seen + total, left, scope="address")
    except ThrottleUnavailable as exc:
        cache_unavailable(exc)
    return None
