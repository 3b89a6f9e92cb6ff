"""``QUERY_LIMITS["max_cost"]``: an operation's estimated cost, as the GraphQL cost
directive specification (IBM) computes it, from the schema the view executes.

- A field whose type is an object, interface or union costs 1; a scalar or an
  enum field 0; a root field of a mutation 10 (instead of 1).
- A list field multiplies its own cost and everything under it by its size: the
  value of its slicing argument (``first``, ``last``, ``limit``; the largest when
  several are given, a variable's value or default included), else its assumed
  size, else ``QUERY_LIMITS["default_list_size"]`` (100).
- A field that is not a list but takes a slicing argument (a Relay connection)
  sizes its ``edges`` and ``nodes`` lists with it.
- ``QUERY_LIMITS["costs"]``: ``{"Type.field": int or {"cost": int, "assumed_size": int,
  "slicing_arguments": [str, ...], "sized_fields": [str, ...]}}`` overrides any of these.
- Introspection (``__schema``, ``__type``, ``__typename``) costs 0: it is served
  from memory, bounded by the schema's size and by graphql-core's
  ``MaxIntrospectionDepthRule``; the other limits still count it.

Fragments and inline fragments on several types of an interface or a union are
added, not the largest taken: the estimate is an upper bound. Each fragment is
worked out once per list size it is spread under. Estimates are cached per
document, schema and the values of the variables that size its lists.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from graphql import (
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_leaf_type,
    is_list_type,
    parse,
)

from gql_audit.conf import conf
from gql_audit.protect.document import CAP

DEFAULT_LIST_SIZE = 100
MUTATION_FIELD_COST = 10
SLICING_ARGUMENTS = ("first", "last", "limit")
SIZED_FIELDS = ("edges", "nodes")
#: Estimates kept (document, schema, list sizes), at most.
MAX_CACHED = 1024


@dataclass(frozen=True)
class FieldCost:
    """What ``QUERY_LIMITS["costs"]`` says of one field."""

    cost: int | None = None
    assumed_size: int | None = None
    slicing_arguments: tuple[str, ...] | None = None
    sized_fields: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Model:
    default_list_size: int
    costs: dict[str, FieldCost]
    #: Every argument name that may size a list: variables passed to them change an estimate.
    slicing: frozenset[str]


def model() -> Model:
    """The cost model of the current settings (built once per settings generation)."""

    def build() -> Model:
        limits = conf.QUERY_LIMITS or {}
        costs: dict[str, FieldCost] = {}
        for name, value in (limits.get("costs") or {}).items():
            if isinstance(value, int) and not isinstance(value, bool):
                costs[str(name)] = FieldCost(cost=value)
            elif isinstance(value, dict):
                slicing, sized = value.get("slicing_arguments"), value.get("sized_fields")
                costs[str(name)] = FieldCost(
                    value.get("cost"),
                    value.get("assumed_size"),
                    tuple(slicing) if slicing is not None else None,
                    tuple(sized) if sized is not None else None,
                )
        slicing = set(SLICING_ARGUMENTS)
        for found in costs.values():
            slicing.update(found.slicing_arguments or ())
        size = limits.get("default_list_size")
        return Model(size if isinstance(size, int) else DEFAULT_LIST_SIZE, costs, frozenset(slicing))

    built: Model = conf.derived("cost_model", build)
    return built


def _cap(value: int) -> int:
    return value if value < CAP else CAP


class _Estimate:
    def __init__(self, schema: Any, fragments: dict[str, FragmentDefinitionNode], variables: dict[str, Any]) -> None:
        self.schema = schema
        self.fragments = fragments
        self.variables = variables
        self.model = model()
        self.done: dict[tuple[str, int | None, bool], int] = {}
        self.visiting: set[str] = set()
        #: Variables that sized a list: the cache keys the estimate on their values.
        self.used: set[str] = set()

    def selections(self, selection_set: SelectionSetNode | None, parent: Any, sized: int | None, root: bool) -> int:
        total = 0
        for selection in selection_set.selections if selection_set is not None else ():
            if isinstance(selection, FieldNode):
                total += self.field(selection, parent, sized, root)
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                below = self.schema.get_type(condition.name.value) if condition is not None else parent
                total += self.selections(selection.selection_set, below or parent, sized, root)
            elif isinstance(selection, FragmentSpreadNode):
                total += self.fragment(selection.name.value, sized, root)
        return _cap(total)

    def fragment(self, name: str, sized: int | None, root: bool) -> int:
        key = (name, sized, root)
        if key in self.done:
            return self.done[key]
        definition = self.fragments.get(name)
        if definition is None or name in self.visiting:  # validation refuses both
            return 0
        self.visiting.add(name)
        parent = self.schema.get_type(definition.type_condition.name.value)
        cost = self.done[key] = self.selections(definition.selection_set, parent, sized, root)
        self.visiting.discard(name)
        return cost

    def field(self, node: FieldNode, parent: Any, sized: int | None, root: bool) -> int:
        name = node.name.value
        introspection = name.startswith("__") or getattr(parent, "name", "").startswith("__")
        definition = getattr(parent, "fields", {}).get(name) if not introspection else None
        if definition is None:  # introspection (a field of __Schema, __Type...), or one validation will refuse
            return 0
        override = self.model.costs.get(f"{parent.name}.{name}") or FieldCost()
        named = get_named_type(definition.type)
        composite = not is_leaf_type(named)
        if override.cost is not None:
            weight = override.cost
        else:
            weight = MUTATION_FIELD_COST if root else int(composite)
        size = self.size(node, override)
        below = self.selections(node.selection_set, named, None, False) if composite else 0
        if is_list_type(get_nullable_type(definition.type)):
            if size is None:
                size = sized if sized is not None and name in SIZED_FIELDS else self.model.default_list_size
            return _cap(size * (weight + below))
        if size is not None and composite:  # a connection: its size is its edges' and nodes'
            names = override.sized_fields if override.sized_fields is not None else SIZED_FIELDS
            below = self.sized(node.selection_set, named, size, names)
        return _cap(weight + below)

    def sized(self, selection_set: SelectionSetNode | None, parent: Any, size: int, names: tuple[str, ...]) -> int:
        """A connection's selections, its sized fields counted ``size`` times."""
        if names == SIZED_FIELDS:
            return self.selections(selection_set, parent, size, False)
        total = 0
        for selection in selection_set.selections if selection_set is not None else ():
            if isinstance(selection, FieldNode) and selection.name.value in names:
                definition = getattr(parent, "fields", {}).get(selection.name.value)
                named = get_named_type(definition.type) if definition is not None else None
                below = self.selections(selection.selection_set, named, None, False) if named is not None else 0
                total += size * (int(named is not None and not is_leaf_type(named)) + below)
            else:
                total += self.selections(SelectionSetNode(selections=(selection,)), parent, None, False)
        return _cap(total)

    def size(self, node: FieldNode, override: FieldCost) -> int | None:
        names = override.slicing_arguments if override.slicing_arguments is not None else SLICING_ARGUMENTS
        sizes = []
        for argument in node.arguments or ():
            if argument.name.value not in names:
                continue
            value: Any = argument.value
            if isinstance(value, VariableNode):
                self.used.add(value.name.value)
                value = self.variables.get(value.name.value)
            elif isinstance(value, IntValueNode):
                value = int(value.value)
            if isinstance(value, int) and not isinstance(value, bool):
                sizes.append(min(max(value, 0), CAP))
        if sizes:
            return max(sizes)
        return override.assumed_size


@dataclass(frozen=True)
class Estimate:
    """The estimated cost of each operation (by name), and of the whole document (every
    operation, and every fragment as if it were one, added up: an upper bound)."""

    operations: dict[str | None, int]
    worst: int
    #: The variables whose values size a list in it (what the estimate depends on besides the text).
    sized_by: frozenset[str] = frozenset()


_plans: OrderedDict[tuple[Any, ...], frozenset[str]] = OrderedDict()
_estimates: OrderedDict[tuple[Any, ...], Estimate] = OrderedDict()
_lock = threading.Lock()


def _remember(store: OrderedDict[tuple[Any, ...], Any], key: tuple[Any, ...], value: Any) -> None:
    with _lock:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_CACHED:
            store.popitem(last=False)


def estimate(text: str, sha256: str, schema: Any, variables: Any) -> Estimate:
    """The cost of each operation of the document ``text`` (whose hash is ``sha256``) on ``schema``."""
    given: dict[str, Any] = variables if isinstance(variables, dict) else {}
    plan_key = (sha256, id(schema), conf.generation)
    used = _plans.get(plan_key)
    if used is not None:
        key = (*plan_key, tuple(sorted((name, _hashable(given.get(name))) for name in used)))
        found = _estimates.get(key)
        if found is not None:
            return found
    result = _estimate(text, schema, given)
    used = result.sized_by
    _remember(_plans, plan_key, used)
    _remember(_estimates, (*plan_key, tuple(sorted((name, _hashable(given.get(name))) for name in used))), result)
    return result


def _hashable(value: Any) -> Any:
    """What a variable's value adds to a cache key: a size is an int; anything else sizes nothing."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _estimate(text: str, schema: Any, variables: dict[str, Any]) -> Estimate:
    from graphql import value_from_ast_untyped

    try:
        document = parse(text, no_location=True)
    except Exception:  # noqa: BLE001 - the limits of the document itself answer it
        return Estimate({}, 0)
    fragments = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
    costs: dict[str | None, int] = {}
    used: set[str] = set()
    worst = 0
    spread: set[str] = set()
    try:
        for definition in document.definitions:
            if not isinstance(definition, OperationDefinitionNode):
                continue
            defaults = {
                v.variable.name.value: value_from_ast_untyped(v.default_value)
                for v in definition.variable_definitions or ()
                if v.default_value is not None
            }
            walk = _Estimate(schema, fragments, {**defaults, **variables})
            kind = definition.operation.value
            roots = {"query": schema.query_type, "mutation": schema.mutation_type}
            cost = walk.selections(
                definition.selection_set, roots.get(kind, schema.subscription_type), None, kind == "mutation"
            )
            name = definition.name.value if definition.name is not None else None
            costs[name] = max(cost, costs.get(name, 0))
            used |= walk.used
            spread.update(key[0] for key in walk.done)
            worst = _cap(worst + cost)
        for name in fragments.keys() - spread:  # read by the validator, though no operation runs it
            walk = _Estimate(schema, fragments, variables)
            worst = _cap(worst + walk.fragment(name, None, False))
            used |= walk.used
    except RecursionError:
        return Estimate(costs, CAP, frozenset(used))
    return Estimate(costs, worst, frozenset(used))
