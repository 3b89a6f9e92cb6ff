"""Every reach into another library's private names, in one place.

Each function here leans on something its library does not promise to keep.
``tests/test_compat.py`` guards each one against the installed versions, so an
upgrade that breaks one fails there, by name, before it misbehaves elsewhere.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.http import HttpRequest
    from graphql import FieldNode, GraphQLObjectType, GraphQLResolveInfo


# --- graphql-core ------------------------------------------------------------------
# 3.2 and 3.3 both: 3.3 renamed ``collect_sub_fields`` to ``collect_subfields`` (which takes
# the operation, fragments as ``FragmentDetails`` and fields as ``FieldDetails``, and returns
# a ``CollectedFields``) and made ``info.variable_values`` a ``VariableValues`` whose
# ``coerced`` is what 3.2 gave as a plain dict.

_collect: Any = None


def collect_sub_fields(info: GraphQLResolveInfo, object_type: GraphQLObjectType) -> dict[str, list[FieldNode]]:
    """The selections on ``object_type`` below ``info``'s field, as graphql-core executes them,
    by response key (aliases, fragments, ``@skip`` and ``@include`` applied).

    ``graphql.execution.collect_fields`` is not exported by ``graphql.execution``.
    """
    global _collect
    if _collect is None:
        _collect = _collector()
    groups: dict[str, list[FieldNode]] = _collect(info, object_type)
    return groups


def _collector() -> Any:
    from graphql.execution import collect_fields as module

    collect_subfields = getattr(module, "collect_subfields", None)
    if collect_subfields is None:  # graphql-core 3.2
        collect_32 = module.collect_sub_fields  # type: ignore[attr-defined, unused-ignore]

        def collect(info: Any, object_type: Any) -> Any:
            return collect_32(info.schema, info.fragments, info.variable_values, object_type, info.field_nodes)

        return collect

    field_details, fragment_details = module.FieldDetails, module.FragmentDetails  # type: ignore[attr-defined, unused-ignore]

    def collect_33(info: Any, object_type: Any) -> Any:
        fragments = {name: fragment_details(definition) for name, definition in info.fragments.items()}
        fields = [field_details(node, None) for node in info.field_nodes]
        collected = collect_subfields(info.schema, fragments, info.variable_values, info.operation, object_type, fields)
        return {key: [detail.node for detail in details] for key, details in collected.grouped_field_set.items()}

    return collect_33


def variable_values(info: GraphQLResolveInfo) -> dict[str, Any]:
    """The operation's coerced variable values, by name."""
    values: Any = info.variable_values
    coerced: dict[str, Any] = getattr(values, "coerced", values)
    return coerced


def introspection_field_defs() -> tuple[Any, ...]:
    """The field definitions graphql-core resolves ``__schema`` and ``__type`` with.

    Every schema shares them: ``graphql.execution.execute.get_field_def`` returns
    these very objects rather than fields of the schema's query type, so a resolver
    set on them is the one that runs.
    """
    from graphql.type.introspection import SchemaMetaFieldDef, TypeMetaFieldDef

    return (SchemaMetaFieldDef, TypeMetaFieldDef)


# --- django-graphql-jwt ------------------------------------------------------------


def mark_jwt_credentials_handled(request: HttpRequest) -> None:
    """Stop graphql_jwt's backend from reading the header or cookie token again.

    ``JSONWebTokenBackend.authenticate`` returns None when the request carries
    ``_jwt_token_auth`` (its ``token_auth`` decorator sets it the same way).
    Without it, a kept ``JSONWebTokenMiddleware`` would decode a bad token again
    and raise on every field, public ones included.
    """
    request._jwt_token_auth = True  # type: ignore[attr-defined]


# --- Django -------------------------------------------------------------------------


def set_session_user_cache(request: HttpRequest, user: Any) -> None:
    """Make ``django.contrib.auth.middleware.get_user(request)`` return ``user``.

    graphql_jwt's middleware with ``JWT_ALLOW_ARGUMENT`` resets ``request.user``
    to that function's result on every field without a token argument; it
    caches its answer in ``request._cached_user``.
    """
    request._cached_user = user  # type: ignore[attr-defined]


def replace_body(request: HttpRequest, body: bytes) -> None:
    """Make ``request.body`` return ``body`` (a batch whose persisted operations were
    named by hash gets their documents). ``HttpRequest.body`` returns ``_body``
    once the stream has been read, which it has been by then."""
    request.body  # noqa: B018 - read the stream first, so that what follows is what stays
    request._body = body


def replace_query_params(request: HttpRequest, params: Any) -> None:
    """Make ``request.GET`` return ``params``: ``GET`` is a ``cached_property`` of
    Django's WSGI and ASGI requests, so an instance attribute takes its place."""
    request.GET = params


def is_unevaluated_lazy(value: Any) -> bool:
    """Whether ``value`` is a ``SimpleLazyObject`` not evaluated yet (reading it would run a query)."""
    from django.utils.functional import SimpleLazyObject, empty

    return isinstance(value, SimpleLazyObject) and value._wrapped is empty


# --- django-auditlog ----------------------------------------------------------------


def other_receivers(signal: Any, sender: Any, ours: tuple[str, ...]) -> bool:
    """Whether ``signal`` has receivers for ``sender`` besides gql_audit's own (dispatch uids ``ours``).

    Reads ``Signal.receivers`` (a list of ``((uid, sender id), receiver, ...)``):
    sending auditlog's signals once per object costs, so only when someone listens.
    """
    if not signal.has_listeners(sender):
        return False
    # A receiver's lookup key is (dispatch uid or its id, id of its sender or of None).
    senders = (id(sender), id(None))
    return any(key[0] not in ours and key[1] in senders for key, *_ in signal.receivers)


_auditlog_value: Any = None


def auditlog_block_values() -> dict[str, Any] | None:
    """What auditlog's ``set_actor`` / ``set_extra_data`` block in force says, or None.

    auditlog keeps the block in its ``auditlog_value`` context variable and
    leaves it set after the ``with`` block ends; the block is active only while
    its ``pre_save`` receiver (dispatch uid ``signal_duid``) is still connected.
    Cheap when no block was ever entered (one context-variable read): it runs
    for every list of objects a response records.
    """
    global _auditlog_value
    if _auditlog_value is None:
        from auditlog.context import auditlog_value

        _auditlog_value = auditlog_value
    value = _auditlog_value.get(None)
    if not value:
        return None
    from django.db.models.signals import pre_save

    uid = value.get("signal_duid")
    if uid is None or not any(lookup_key[0] == uid for lookup_key, *_ in pre_save.receivers):
        return None
    values: dict[str, Any] = value
    return values


_csrf_check: Any = None


def _csrf_check_class() -> Any:
    """``CsrfViewMiddleware`` answering with its reason instead of a 403 (made once)."""
    global _csrf_check
    if _csrf_check is None:
        from django.middleware.csrf import CsrfViewMiddleware

        class Check(CsrfViewMiddleware):
            def _reject(self, request: HttpRequest, reason: str) -> Any:
                return reason

        _csrf_check = Check
    return _csrf_check


def _no_response(request: HttpRequest) -> Any:  # pragma: no cover - never called
    return None


def csrf_failure_reason(request: HttpRequest) -> str | None:
    """Why Django's CSRF check fails for ``request``, or None when it passes.

    Runs ``CsrfViewMiddleware`` as DRF's ``SessionAuthentication.enforce_csrf``
    does, overriding its ``_reject`` to get the reason instead of a 403 page.
    """
    check = _csrf_check_class()(_no_response)
    try:
        check.process_request(request)
        reason: str | None = check.process_view(request, None, (), {})
    except Exception as exc:  # noqa: BLE001 - a form body Django refuses: no token could be read from it
        return f"the request body could not be read ({type(exc).__name__})"
    return reason


# --- Django ---------------------------------------------------------------------------


def pending_on_commit(connection: Any, callback: Any) -> bool:
    """Whether ``callback``, registered with ``transaction.on_commit``, still waits for a commit.

    Django keeps the callbacks of the open transaction in ``connection.run_on_commit``
    (``(savepoint ids, callback, robust)``) and drops those of a savepoint rolled back:
    a callback that is neither run nor waiting was rolled back with its transaction.
    """
    return any(entry[1] is callback for entry in connection.run_on_commit)


def received_body_size(request: HttpRequest) -> int | None:
    """The size of the body ``request`` received, without reading it, or None if unknown.

    ``Content-Length`` when sent: Django's WSGI request reads no more than it
    says. Without it, an ASGI request's body is already spooled whole into the
    file Django keeps as ``_stream``, whose size is read by seeking.
    """
    length = request.META.get("CONTENT_LENGTH")
    if length:
        try:
            return max(int(length), 0)
        except ValueError:
            return None
    stream = getattr(request, "_stream", None)
    if stream is None or not hasattr(stream, "seek") or not hasattr(stream, "tell"):
        return None
    try:
        here = stream.tell()
        size = stream.seek(0, 2)
        stream.seek(here)
    except (OSError, ValueError):
        return None
    return int(size) - int(here)


def load_cache_client(cache: Any) -> None:
    """Import the client library ``cache`` would import on its first use, connecting to nothing.

    Django's ``RedisCache`` imports redis-py when it makes its client, on its first
    command (``RedisCacheClient.__init__``), and importing redis-py takes a sizeable
    fraction of a second: longer than a request should wait on its cache. Imported now,
    it is the process's, paid once. (The memcached backends import theirs when the cache
    object is made; any other backend is left as it is.)
    """
    from django.core.cache.backends.redis import RedisCache

    if isinstance(cache, RedisCache):
        try:
            importlib.import_module("redis")
        except ImportError:  # the cache's first command says so, where it is reported
            return


class RedisCommandRefused(Exception):
    """Redis refused a command :func:`redis_add` sends (an ACL, a proxy without ``MULTI``)."""


def redis_add(cache: Any, key: str, amount: int, timeout: int) -> int | None:
    """Add ``amount`` to the count at ``key`` of Django's own Redis cache and have it expire
    ``timeout`` seconds from now, in one round trip: the count after it. None for any
    other cache, or serializer (the caller counts through the cache API);
    :class:`RedisCommandRefused` when Redis refuses ``MULTI``, ``INCRBY`` or ``EXPIRE``.

    ``RedisCache.incr`` asks ``EXISTS`` then ``INCRBY`` (two round trips) and a missing
    count takes an ``add`` more. Here ``INCRBY`` and ``EXPIRE`` go in one ``MULTI``/``EXEC``
    on the client Django made (``RedisCache._cache``, its ``get_client``), under the key
    Django makes; Django's serializer (``RedisSerializer``) stores an ``int`` as Redis's
    own integer, so ``cache.get`` reads the count as the cache API would have written it.
    """
    from django.core.cache.backends.redis import RedisCache, RedisCacheClient, RedisSerializer

    if type(cache) is not RedisCache:  # a subclass may store values its own way
        return None
    client = cache._cache
    if type(client) is not RedisCacheClient or type(getattr(client, "_serializer", None)) is not RedisSerializer:
        return None
    from redis.exceptions import ResponseError  # imported already: the client did

    made = cache.make_and_validate_key(key)
    try:
        with client.get_client(made, write=True).pipeline(transaction=True) as pipeline:
            pipeline.incrby(made, amount)
            pipeline.expire(made, timeout)
            counted, _ = pipeline.execute()
    except ResponseError as exc:  # an error reply; a connection that fails is not one
        if "not an integer" in str(exc):
            raise  # a count that is not one: the cache API's INCRBY would be refused alike
        raise RedisCommandRefused(str(exc)[:200]) from exc
    return int(counted)


def field_index_name(schema_editor: Any, model: Any, field: Any) -> str:
    """The name Django gives the index of a ``db_index=True`` field of ``model``.

    ``BaseDatabaseSchemaEditor._create_index_name`` builds it (table, column and a
    hash of both, cut to the backend's length): ``gql_audit.layout`` restores the
    index under that name when a CockroachDB-only change is reversed.
    """
    name: str = schema_editor._create_index_name(model._meta.db_table, [field.column], suffix="")
    return name


# --- graphene-django -------------------------------------------------------------------


def observe_view_errors(callback: Any) -> None:
    """Have ``callback(exception)`` see every exception graphene-django's ``GraphQLView``
    answers with the exception's own text: ``format_error`` of what is not a
    ``GraphQLError``, a failure outside every resolver, such as the COMMIT of a mutation's
    transaction refused with SQLSTATE 40001 (Django's rollback after it clears
    ``errors_occurred``, so the connection no longer says a database failed). Once; the
    view's answer is unchanged."""
    from graphene_django.views import GraphQLView
    from graphql import GraphQLError

    original = GraphQLView.__dict__["format_error"]
    if getattr(original, "gql_audit_observed", False):
        return
    formatted = original.__func__ if isinstance(original, staticmethod) else original

    def format_error(error: Any) -> Any:
        if not isinstance(error, GraphQLError):
            callback(error)
        return formatted(error)

    format_error.gql_audit_observed = True  # type: ignore[attr-defined]
    observed = staticmethod(format_error)
    observed.gql_audit_observed = True  # type: ignore[attr-defined]
    GraphQLView.format_error = observed
