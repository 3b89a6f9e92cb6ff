"""What a GraphQL document will cost, counted before anything runs.

Depth, aliases and fields are counted on each operation as it will execute:
named fragments are expanded, every spread and inline fragment counted where it
is used (a fragment of 50 aliases spread 100 times is 5,000 aliases). Each
fragment is measured once and its cost reused at every spread, so a document
whose fragments double at each level costs its length to measure, not its
expansion; a fragment cycle (which validation rejects) stops the count.

The result is cached per document text (a bounded LRU): a service's few
documents are parsed and measured once per process.
"""

from __future__ import annotations

import functools
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    parse,
)

#: Counts are saturated here: past it, a document is "more than any limit".
CAP = 10**9
#: Documents kept analysed, and the characters they may hold together.
MAX_CACHED = 512
MAX_CACHED_CHARS = 8_000_000
#: ``max_tokens`` also bounds the text, comments and strings included, at this many characters a token.
CHARACTERS_PER_TOKEN = 64
#: Occurrences of one root field of a mutation kept with their arguments; past it, only counted.
MAX_ROOT_FIELDS = 1000


@dataclass(frozen=True)
class Cost:
    depth: int
    aliases: int
    fields: int
    directives: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "max_depth": self.depth,
            "max_aliases": self.aliases,
            "max_fields": self.fields,
            "max_directives": self.directives,
        }


UNMEASURABLE = Cost(CAP, CAP, CAP, CAP)


@dataclass(frozen=True)
class RootField:
    """A root field of a mutation as it will execute: its name and argument value nodes."""

    name: str
    arguments: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class RootCalls:
    """The occurrences of one root field name in a mutation, as it will execute."""

    #: How many times it runs (aliases, spreads), saturated at ``CAP``.
    count: int
    #: The first ``MAX_ROOT_FIELDS`` occurrences, with their arguments.
    kept: tuple[RootField, ...]


@dataclass(frozen=True)
class Operation:
    name: str | None
    type: str
    cost: Cost
    #: Root fields of a mutation by name, each occurrence counted; empty for queries.
    root_calls: dict[str, RootCalls] = field(default_factory=dict)
    #: Default values of the operation's variables (value nodes), by variable name.
    defaults: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Analysis:
    """A document, measured: its sha256 and each operation's cost."""

    sha256: str
    #: Operations in document order; empty when the document does not parse.
    operations: tuple[Operation, ...]
    #: Each fragment definition no operation spreads, measured as if it were an operation:
    #: validation reads it all the same.
    fragments: tuple[Cost, ...] = ()
    #: Why the document could not be measured ("syntax", "cycle", "too deep", "tokens"), or None.
    problem: str | None = None
    #: The document has more lexical tokens than ``max_tokens`` (what it was parsed with).
    over_tokens: bool = False
    max_tokens: int | None = None
    #: Parsing stopped at ``max_tokens`` (else the document was parsed whole anyway).
    stopped: bool = True

    def operation(self, name: Any) -> Operation | None:
        """The operation that will execute for ``operationName`` = ``name``.

        None when there is none to run (the view reports why). With several
        operations and no name, the view refuses too; None as well. The name
        ``"null"`` is no name, as graphene-django reads it.
        """
        if isinstance(name, str) and name and name != "null":
            return next((op for op in self.operations if op.name == name), None)
        return self.operations[0] if len(self.operations) == 1 else None

    @functools.cached_property
    def _worst(self) -> Cost:
        return self._measure_worst()

    def worst(self) -> Cost:
        """See :meth:`_measure_worst` (worked out once per document)."""
        return self._worst

    def _measure_worst(self) -> Cost:
        """What the whole document asks of the parser and the validator, every operation
        counted, executed or not: the deepest depth, and the aliases, fields and directives
        of every operation as it executes, added up (with those of the fragments no
        operation spreads, which the validator reads as well)."""
        if self.problem is not None and not self.operations:
            # A syntax error, or a parse stopped at max_tokens: the view (or that limit) answers it.
            return UNMEASURABLE if self.problem in ("cycle", "too deep") else Cost(0, 0, 0)
        costs = [op.cost for op in self.operations] + list(self.fragments)
        return Cost(
            max((c.depth for c in costs), default=0),
            _cap(sum(c.aliases for c in costs)),
            _cap(sum(c.fields for c in costs)),
            _cap(sum(c.directives for c in costs)),
        )


class _Cycle(Exception):
    pass


def _cap(value: int) -> int:
    return value if value < CAP else CAP


class _Measure:
    """Costs of the fragments of one document, each computed once."""

    def __init__(self, fragments: dict[str, FragmentDefinitionNode]) -> None:
        self.fragments = fragments
        self.done: dict[str, Cost] = {}
        #: Each fragment's fields by response name (what a spread merges into its selection set).
        self.names: dict[str, dict[str, int]] = {}
        self.visiting: set[str] = set()
        self.calls_done: dict[str, dict[str, RootCalls]] = {}

    def fragment(self, name: str) -> Cost:
        return self._fragment(name)[0]

    def _fragment(self, name: str) -> tuple[Cost, dict[str, int]]:
        cost = self.done.get(name)
        if cost is not None:
            return cost, self.names[name]
        definition = self.fragments.get(name)
        if definition is None:  # validation reports the unknown fragment
            return Cost(0, 0, 0), {}
        if name in self.visiting:
            raise _Cycle(name)
        self.visiting.add(name)
        cost, self.names[name] = self._selections(definition.selection_set)
        self.done[name] = cost
        self.visiting.discard(name)
        return cost, self.names[name]

    def selections(self, selection_set: SelectionSetNode | None) -> Cost:
        return self._selections(selection_set)[0]

    def _selections(self, selection_set: SelectionSetNode | None) -> tuple[Cost, dict[str, int]]:
        """The counts of a selection set, and how many fields of each response name it merges.

        graphql-core's validation compares every two fields of one response name that a
        selection set merges (its own, its inline fragments', the fragments it spreads):
        the n-th field of a name counts n, so that ``max_fields`` bounds that work too.
        """
        depth = aliases = fields = directives = 0
        names: dict[str, int] = {}
        pending = [selection_set.selections] if selection_set is not None else []
        while pending:
            for selection in pending.pop():
                directives += len(selection.directives or ())
                if isinstance(selection, FieldNode):
                    key = (selection.alias or selection.name).value
                    seen = names[key] = names.get(key, 0) + 1
                    below = self.selections(selection.selection_set)
                    depth = max(depth, below.depth + 1)
                    aliases += below.aliases + (selection.alias is not None)
                    fields += below.fields + seen
                    directives += below.directives
                elif isinstance(selection, InlineFragmentNode):
                    pending.append(selection.selection_set.selections)  # merged with this set's fields
                elif isinstance(selection, FragmentSpreadNode):
                    below, spread = self._fragment(selection.name.value)
                    for key, count in spread.items():
                        fields += count * names.get(key, 0)  # compared with each field of that name here
                        names[key] = names.get(key, 0) + count
                    depth = max(depth, below.depth)
                    aliases += below.aliases
                    fields += below.fields
                    directives += below.directives
        return Cost(_cap(depth), _cap(aliases), _cap(fields), _cap(directives)), names

    def root_calls(self, selection_set: SelectionSetNode | None) -> dict[str, RootCalls]:
        """Every root field by name as it will execute, fragments expanded and each counted
        where it is spread (a fragment's are worked out once), the first occurrences kept."""
        calls: dict[str, RootCalls] = {}
        for selection in selection_set.selections if selection_set is not None else ():
            if isinstance(selection, FieldNode):
                args = tuple((a.name.value, a.value) for a in selection.arguments or ())
                _add(calls, {selection.name.value: RootCalls(1, (RootField(selection.name.value, args),))})
            elif isinstance(selection, InlineFragmentNode):
                _add(calls, self.root_calls(selection.selection_set))
            elif isinstance(selection, FragmentSpreadNode):
                name = selection.name.value
                if name not in self.calls_done:
                    definition = self.fragments.get(name)
                    # A cycle was refused by selections() before this runs.
                    self.calls_done[name] = self.root_calls(definition.selection_set if definition else None)
                _add(calls, self.calls_done[name])
        return calls


def _add(calls: dict[str, RootCalls], more: dict[str, RootCalls]) -> None:
    for name, found in more.items():
        before = calls.get(name)
        if before is None:
            calls[name] = found
        else:
            kept = before.kept + found.kept[: max(MAX_ROOT_FIELDS - len(before.kept), 0)]
            calls[name] = RootCalls(_cap(before.count + found.count), kept)


def _parse(text: str, max_tokens: int | None, stop: bool) -> tuple[DocumentNode | None, str | None, bool]:
    """``(document or None, problem, over max_tokens)``: parsing stops at ``max_tokens``
    lexical tokens and, unless ``stop``, starts again in full. The parser counts no
    comment and a string as one token, so a text longer than ``CHARACTERS_PER_TOKEN``
    characters a token allowed is over the limit before it is read."""
    if max_tokens is not None and len(text) > max_tokens * CHARACTERS_PER_TOKEN:
        if stop:
            return None, "tokens", True
        document, problem, _ = _parse(text, None, stop)
        return document, problem, True
    try:
        return parse(text, no_location=True, max_lexical_tokens=max_tokens), None, False
    except GraphQLError as exc:
        message = str(exc.message)
        if max_tokens is not None and f"Document contains more than {max_tokens} tokens" in message:
            if stop:
                return None, "tokens", True
            document, problem, _ = _parse(text, None, stop)
            return document, problem, True
        # graphql-core refuses documents nested past its parser's limit in its own words.
        return None, "too deep" if "nested" in message else "syntax", False
    except RecursionError:
        return None, "too deep", False


def _analyse(text: str, max_tokens: int | None = None, stop: bool = True) -> Analysis:
    sha256 = document_hash(text)
    document, problem, over = _parse(text, max_tokens, stop)
    if document is None:
        return Analysis(sha256, (), (), problem, over, max_tokens, stop)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    measure = _Measure(fragments)
    operations = []
    try:
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            below = measure.selections(definition.selection_set)
            variables = definition.variable_definitions or ()
            own = len(definition.directives or ()) + sum(len(v.directives or ()) for v in variables)
            cost = Cost(below.depth, below.aliases, below.fields, _cap(below.directives + own))
            kind = definition.operation.value
            calls = measure.root_calls(definition.selection_set) if kind == "mutation" else {}
            defaults = {v.variable.name.value: v.default_value for v in variables if v.default_value is not None}
            name = definition.name.value if definition.name is not None else None
            operations.append(Operation(name, kind, cost, calls, defaults))
        spread = set(measure.done)  # the fragments the operations reached
        standalone = tuple(
            _with_directives(measure.fragment(name), len(definition.directives or ()))
            for name, definition in fragments.items()
            if name not in spread
        )
    except _Cycle:
        return Analysis(sha256, (), (), "cycle", over, max_tokens, stop)
    except RecursionError:
        return Analysis(sha256, (), (), "too deep", over, max_tokens, stop)
    return Analysis(sha256, tuple(operations), standalone, None, over, max_tokens, stop)


def _with_directives(cost: Cost, more: int) -> Cost:
    return Cost(cost.depth, cost.aliases, cost.fields, _cap(cost.directives + more))


def document_hash(text: str) -> str:
    """The sha256 hex of a document's UTF-8 text, as persisted-operation manifests key it."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


_cache: OrderedDict[str, Analysis] = OrderedDict()
_cached_chars = 0
_lock = threading.Lock()


def analyse(text: str, max_tokens: int | None = None, *, stop: bool = True) -> Analysis:
    """The measured document ``text`` (cached: a repeated document pays once).

    With ``max_tokens``, a document of more lexical tokens is marked
    ``over_tokens``; with ``stop`` it is not parsed past them (and not measured).
    """
    global _cached_chars
    with _lock:
        hit = _cache.get(text)
        if hit is not None and hit.max_tokens == max_tokens and hit.stopped == stop:
            _cache.move_to_end(text)
            return hit
    result = _analyse(text, max_tokens, stop)
    if len(text) > MAX_CACHED_CHARS // 8:
        return result
    with _lock:
        if _cache.pop(text, None) is None:
            _cached_chars += len(text)
        _cache[text] = result
        while len(_cache) > MAX_CACHED or _cached_chars > MAX_CACHED_CHARS:
            old, _ = _cache.popitem(last=False)
            _cached_chars -= len(old)
    return result


def over_limits(cost: Cost, limits: dict[str, Any]) -> list[tuple[str, int, int]]:
    """``(limit name, value, maximum)`` of each limit ``cost`` goes over."""
    counted = cost.as_dict()
    return [
        (name, counted[name], maximum)
        for name, maximum in limits.items()
        if name in counted and isinstance(maximum, int) and counted[name] > maximum
    ]
