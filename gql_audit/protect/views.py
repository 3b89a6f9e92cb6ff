"""Which views execute GraphQL, and with which schema."""

from __future__ import annotations

from typing import Any

_views: dict[int, tuple[Any, tuple[Any, bool] | None]] = {}


def graphql_view(view_func: Any) -> tuple[Any, bool] | None:
    """``(GraphQL schema, batch)`` of a graphene-django view, or None for any other view."""
    entry = _views.get(id(view_func))
    if entry is None or entry[0] is not view_func:
        entry = _views[id(view_func)] = (view_func, _inspect_view(view_func))
    if entry[1] is None:
        return None
    schema, batch = entry[1]
    if schema is None:  # the view takes GRAPHENE["SCHEMA"], which settings may change
        from graphene_django.settings import graphene_settings

        schema = graphene_settings.SCHEMA
    return getattr(schema, "graphql_schema", schema), batch


def _inspect_view(view_func: Any) -> tuple[Any, bool] | None:
    """``(its own schema or None, batch)`` of a graphene-django view (once per view), or None."""
    from graphene_django.views import GraphQLView

    view_class = getattr(view_func, "view_class", None)
    if not (isinstance(view_class, type) and issubclass(view_class, GraphQLView)):
        return None
    initkwargs = getattr(view_func, "view_initkwargs", None) or {}
    schema = initkwargs.get("schema") or getattr(view_class, "schema", None)
    return schema, bool(initkwargs.get("batch") or getattr(view_class, "batch", False))
