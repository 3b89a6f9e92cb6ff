"""``THROTTLE`` for logins: ``login`` per username and address, ``login_username`` per
username across addresses, ``login_address`` per address; counted before any password
is checked.

Every login field of every operation of the request counts, executed or not,
whatever the operation is named and wherever the field stands (aliases,
fragments, batches): each is one attempt. The username is read where the
field's argument takes it: inline, from a variable, or from the variable's
default.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from gql_audit.protect.counters import ThrottleUnavailable, address_key, count, hit, normalised, rate
from gql_audit.protect.refusal import Refusal, cache_unavailable, throttled

if TYPE_CHECKING:
    from gql_audit import context
    from gql_audit.protect.document import Operation, RootField


def username(root_field: RootField, path: tuple[str, ...], variables: Any) -> Any:
    """The username a login field tries (None when it cannot be read: still an attempt)."""
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


def with_defaults(operation: Operation, variables: Any) -> dict[str, Any]:
    """The request's variables, each missing one taking its default from the operation."""
    from graphql import value_from_ast_untyped

    given = variables if isinstance(variables, dict) else {}
    if not operation.defaults:
        return given
    merged: dict[str, Any] = {}
    for name, node in operation.defaults.items():
        try:
            merged[name] = value_from_ast_untyped(node)
        except Exception:  # noqa: BLE001 - a default no parser could read: validation refuses it
            continue
    return {**merged, **given}


def attempts(schema: Any, operations: list[tuple[Operation, Any]]) -> list[tuple[Any, int]]:
    """``(username tried, attempts)`` of every login field of ``operations`` (each with its variables)."""
    from gql_audit.visibility import login_arguments

    logins = login_arguments(schema) if schema is not None else {}
    found: list[tuple[Any, int]] = []
    for operation, variables in operations:
        for name, path in logins.items():
            calls = operation.root_calls.get(name)
            if calls is None:
                continue
            values = with_defaults(operation, variables)
            tried: Any = None
            for root_field in calls.kept:
                tried = username(root_field, path, values)
                found.append((tried, 1))
            if calls.count > len(calls.kept):  # past those kept: counted against the last username read
                found.append((tried, calls.count - len(calls.kept)))
    return found


def check_logins(ctx: context.RequestContext, schema: Any, operations: list[tuple[Operation, Any]]) -> Refusal | None:
    """Count each login the request would attempt; refuse before any password is hashed."""
    tried = attempts(schema, operations)
    if not tried:
        return None
    total = sum(n for _, n in tried)
    by_user: dict[str, tuple[Any, int]] = {}
    for value, n in tried:
        key = normalised(value)
        by_user[key] = (value, by_user.get(key, (value, 0))[1] + n)
    client = address_key(ctx.remote_addr)
    try:
        per_address = rate("login_address")
        if per_address is not None:
            seen, left = hit("login_address", per_address, client, total)
            if seen > per_address.limit:
                return throttled("login_address", per_address, seen, left, scope="address")
        for name, scope in (("login", "username+address"), ("login_username", "username")):
            limit = rate(name)
            if limit is None:
                continue
            for key, (value, n) in by_user.items():
                counted = f"{key}\x00{client}" if name == "login" else key
                seen, left = hit(name, limit, counted, n)
                if seen > limit.limit:
                    return throttled(name, limit, seen, left, scope=scope, username=value)
        failures = rate("auth_failures")
        if failures is not None:
            seen, left = count("auth_failures", failures, client)
            if seen + total > failures.limit:
                return throttled("auth_failures", failures, seen + total, left, scope="address")
    except ThrottleUnavailable as exc:
        cache_unavailable(exc)
    return None
