"""What a client sent, made fit to store: secrets out, text safe, size bounded.

Three things happen to a client's values before they reach a row or a log line:

- **Redaction by name.** Keys matching ``REDACT_KEYS`` (case-insensitive
  regular expressions searched in the key), and GraphQL variables that feed an
  argument with such a name, have their values replaced.
- **Scrubbing by value.** Error messages echo values (graphql-core's coercion
  errors print the variable: ``Variable '$p' got invalid value 'hunter2'``), so
  a :class:`Scrubber` built from the request's secret values (credentials in
  headers and cookies, secret variables, secret inline arguments) removes them
  from any text, also when the message shows them escaped or cut short.
- **Safe text.** NUL and lone surrogates, which PostgreSQL (text and jsonb)
  and UTF-8 encoders refuse, are written as visible escapes (``\\x00``,
  ``\\udc80``); strings, nesting, list lengths and key counts are bounded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from gql_audit.conf import conf

REDACTED = "[redacted]"
MAX_DEPTH = 6
MAX_ITEMS = 50
#: Secrets shorter than this are scrubbed only where quoted ('abc', "abc"):
#: replacing two letters everywhere would garble every message.
MIN_SCRUB_LENGTH = 4
#: A match of at least this many characters at a secret's start or end counts:
#: graphql-core shows long values cut in the middle (``'abc...xyz'``).
SCRUB_ANCHOR = 8
#: Values of a request looked at for secrets, at most.
MAX_VISITED = 20_000
#: Keys of a record's details that name who acted or who was attacked (the username a
#: login tried, the actor's snapshot): never scrubbed by value. Every value of a request
#: is the client's choice (a cookie ``pref=alice``, a password ``alice``), and scrubbing
#: them there would let a client hide which account it attacked.
IDENTITY_KEYS = frozenset({"username", "actor"})


def _pattern() -> re.Pattern[str]:
    def build() -> re.Pattern[str]:
        parts = [f"(?:{p})" for p in conf.REDACT_KEYS]
        return re.compile("|".join(parts) or r"(?!)", re.IGNORECASE)

    pattern: re.Pattern[str] = conf.derived("redact_pattern", build)
    return pattern


def is_secret_key(key: str) -> bool:
    return bool(_pattern().search(key))


# --- safe text ------------------------------------------------------------------------


def safe_text(value: str) -> str:
    """``value`` with NUL and lone surrogates written as escapes; anything else kept."""
    if value.isascii():
        return value.replace("\x00", "\\x00") if "\x00" in value else value
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value.replace("\x00", "\\x00") if "\x00" in value else value


def safe_data(value: Any) -> Any:
    """A copy of JSON-like ``value`` whose every string (keys too) is :func:`safe_text`."""
    if isinstance(value, str):
        return safe_text(value)
    if isinstance(value, dict):
        return {safe_text(str(k)): safe_data(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [safe_data(v) for v in value]
    return value


def bounded(value: str, limit: int) -> str:
    """``value`` cut at ``limit`` characters, saying how much was left out."""
    return value if len(value) <= limit else value[:limit] + f"...[{len(value) - limit} more]"


def redact(value: Any, *, depth: int = 0) -> Any:
    """A JSON-safe, bounded copy of ``value`` with secrets replaced and text made safe."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return safe_text(bounded(value, conf.REDACT_MAX_LENGTH))
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
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a hostile __repr__
        text = f"<{type(value).__name__}>"
    return redact(text, depth=depth + 1)


# --- secrets in a GraphQL operation ---------------------------------------------------


def operation_secrets(nodes: Any) -> tuple[frozenset[str], list[Any]]:
    """``(variable names, literal values)`` that feed a secret argument in ``nodes``
    (an operation and the fragments it spreads, a whole document, or one node).

    ``tokenAuth(password: $p)`` makes ``$p`` secret whatever the client named
    it; ``tokenAuth(password: "hunter2")`` makes ``"hunter2"`` a value to scrub;
    input-object fields (``{password: $p}``) count too.
    """
    from graphql import ArgumentNode, ObjectFieldNode, VariableNode, visit
    from graphql.language import Visitor
    from graphql.utilities import value_from_ast_untyped

    names: set[str] = set()
    literals: list[Any] = []

    class Finder(Visitor):
        def enter_argument(self, node: ArgumentNode, *args: Any) -> None:
            self._check(node)

        def enter_object_field(self, node: ObjectFieldNode, *args: Any) -> None:
            self._check(node)

        def _check(self, node: ArgumentNode | ObjectFieldNode) -> None:
            if not is_secret_key(node.name.value):
                return
            if isinstance(node.value, VariableNode):
                names.add(node.value.name.value)
            else:
                try:
                    literals.append(value_from_ast_untyped(node.value))
                except Exception:  # noqa: BLE001 - a literal holding variables; those are found apart
                    pass

    for node in nodes if isinstance(nodes, (list, tuple)) else (nodes,):
        try:
            visit(node, Finder())
        except RecursionError:  # a document nested past Python's stack: what was found so far
            pass
    return frozenset(names), literals


def string_literals(text: str) -> list[str]:
    """The string values of a document that does not parse, up to where the lexer stops:
    a syntax error quotes the token it stopped at, and it may be an inline password."""
    from graphql import GraphQLError, Source
    from graphql.language import Lexer, TokenKind

    found: list[str] = []
    lexer = Lexer(Source(text))
    try:
        for _ in range(MAX_VISITED):
            token = lexer.advance()
            if token.kind == TokenKind.EOF:
                break
            if token.kind in (TokenKind.STRING, TokenKind.BLOCK_STRING) and token.value:
                found.append(token.value)
    except GraphQLError:
        pass
    return found


def redact_variables(variables: Any, secret_names: frozenset[str]) -> Any:
    """GraphQL variables, redacted by their own names and by the arguments they feed."""
    if not isinstance(variables, dict):
        return redact(variables)
    return redact({k: (REDACTED if k in secret_names else v) for k, v in variables.items()})


def secret_leaves(value: Any, *, secret: bool = False) -> list[str]:
    """The scalar values inside ``value`` that are secret: all of it when ``secret``,
    else those under a key matching ``REDACT_KEYS``. At most :data:`MAX_VISITED`
    values are looked at: a hostile payload cannot make this slow."""
    found: list[str] = []
    stack: list[tuple[Any, bool, int]] = [(value, secret, 0)]
    visited = 0
    while stack and visited < MAX_VISITED:
        item, is_secret, depth = stack.pop()
        visited += 1
        if isinstance(item, dict):
            if depth < 32:
                stack.extend((v, is_secret or is_secret_key(str(k)), depth + 1) for k, v in list(item.items())[:1000])
        elif isinstance(item, (list, tuple)):
            if depth < 32:
                stack.extend((v, is_secret, depth + 1) for v in item[:1000])
        elif is_secret and item is not None and not isinstance(item, bool):
            found.append(str(item))
    return found


# --- scrubbing by value ----------------------------------------------------------------


class Scrubber:
    """Removes known secret values from text, however an error message rendered them."""

    def __init__(self, secrets: Iterable[str]) -> None:
        forms: set[str] = set()
        quoted: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            # As given, as Python's repr shows it (graphql-core's messages) and as JSON escapes it.
            variants = {secret, repr(secret)[1:-1], json.dumps(secret)[1:-1]}
            for variant in variants:
                if len(variant) >= MIN_SCRUB_LENGTH:
                    forms.add(variant)
                else:
                    quoted.update({f"'{variant}'", f'"{variant}"'})
        # Longest first, so a secret containing another is removed whole.
        self.forms = sorted(forms, key=len, reverse=True)
        self.quoted = sorted(quoted, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.forms or self.quoted)

    def text(self, text: str) -> str:
        for form in self.forms:
            text = _remove(text, form)
        for form in self.quoted:
            text = text.replace(form, REDACTED)
        return text

    def data(self, value: Any, *, record: bool = True) -> Any:
        """A copy of JSON-like ``value`` with :meth:`text` applied to every string, except
        the record's own :data:`IDENTITY_KEYS` (at the top of ``value``, when ``record``):
        a client must not choose what hides who was attacked."""
        if not self:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {
                self.text(str(k)): v if record and k in IDENTITY_KEYS else self.data(v, record=False)
                for k, v in value.items()
            }
        if isinstance(value, (list, tuple)):
            return [self.data(v, record=False) for v in value]
        return value


def _remove(text: str, secret: str) -> str:
    """``text`` with every run that is ``secret``, or at least its first or last
    :data:`SCRUB_ANCHOR` characters onward (a value shown cut short), replaced."""
    if secret in text:
        text = text.replace(secret, REDACTED)
    anchor = min(len(secret), SCRUB_ANCHOR)
    head, tail = secret[:anchor], secret[-anchor:]
    spans: list[tuple[int, int]] = []
    start = text.find(head)
    while start != -1:
        end = start + anchor
        while end < len(text) and end - start < len(secret) and text[end] == secret[end - start]:
            end += 1
        spans.append((start, end))
        start = text.find(head, end)
    start = text.find(tail)
    while start != -1:
        end = start + anchor
        begin = start
        offset = len(secret) - anchor
        while begin > 0 and offset > 0 and text[begin - 1] == secret[offset - 1]:
            begin -= 1
            offset -= 1
        spans.append((begin, end))
        start = text.find(tail, end)
    if not spans:
        return text
    out = []
    position = 0
    for begin, end in sorted(spans):
        if end <= position:
            continue
        out.append(text[position : max(begin, position)])
        out.append(REDACTED)
        position = end
    out.append(text[position:])
    return "".join(out)
