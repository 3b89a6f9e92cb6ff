"""Redaction of user-supplied values before they reach a row or a log line.

Keys matching ``REDACT_KEYS`` (case-insensitive regular expressions searched in
the key) have their values replaced; strings are cut at ``REDACT_MAX_LENGTH``;
nesting, list lengths and key counts are bounded so a hostile payload cannot
make a huge row.
"""

from __future__ import annotations

import re
from typing import Any

from gql_audit.conf import conf

REDACTED = "[redacted]"
MAX_DEPTH = 6
MAX_ITEMS = 50


def _pattern() -> re.Pattern[str]:
    def build() -> re.Pattern[str]:
        parts = [f"(?:{p})" for p in conf.REDACT_KEYS]
        return re.compile("|".join(parts) or r"(?!)", re.IGNORECASE)

    pattern: re.Pattern[str] = conf.derived("redact_pattern", build)
    return pattern


def is_secret_key(key: str) -> bool:
    return bool(_pattern().search(key))


def secret_variables(operation: Any) -> frozenset[str]:
    """Names of the operation's variables that feed a secret argument.

    ``tokenAuth(password: $p)`` makes ``$p`` secret whatever the client named
    it; input-object fields (``{password: $p}``) count too.
    """
    from graphql import ArgumentNode, ObjectFieldNode, VariableNode, visit
    from graphql.language import Visitor

    found: set[str] = set()

    class Finder(Visitor):
        def enter_argument(self, node: ArgumentNode, *args: Any) -> None:
            self._check(node)

        def enter_object_field(self, node: ObjectFieldNode, *args: Any) -> None:
            self._check(node)

        def _check(self, node: ArgumentNode | ObjectFieldNode) -> None:
            if isinstance(node.value, VariableNode) and is_secret_key(node.name.value):
                found.add(node.value.name.value)

    visit(operation, Finder())
    return frozenset(found)


def redact_variables(variables: Any, secret_names: frozenset[str]) -> Any:
    """GraphQL variables, redacted by their own names and by the arguments they feed."""
    if not isinstance(variables, dict):
        return redact(variables)
    return redact({k: (REDACTED if k in secret_names else v) for k, v in variables.items()})


def redact(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy of ``value`` with secrets replaced."""
    limit = conf.REDACT_MAX_LENGTH
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= limit else value[:limit] + f"...[{len(value) - limit} more]"
    if depth >= MAX_DEPTH:
        return "[too deep]"
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for index, (key, item) in enumerate(value.items()):
            if index >= MAX_ITEMS:
                out["[more keys]"] = len(value) - MAX_ITEMS
                break
            key = redact(str(key))
            out[key] = REDACTED if is_secret_key(key) else redact(item, depth=depth + 1)
        return out
    if isinstance(value, (list, tuple)):
        items = [redact(item, depth=depth + 1) for item in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append(f"[{len(value) - MAX_ITEMS} more]")
        return items
    return redact(repr(value), depth=depth + 1)
