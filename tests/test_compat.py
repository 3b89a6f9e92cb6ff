"""Guards for every reach into another library's private names (gql_audit.compat).

Each test fails, by name, when an upgrade of graphql-core, Django,
django-graphql-jwt or django-auditlog changes what gql_audit relies on.
"""

from __future__ import annotations

import pickle
from unittest import mock

import pytest
from django.contrib.auth.models import AnonymousUser
from django.test import RequestFactory
from django.utils.functional import SimpleLazyObject

from gql_audit import compat
from tests.conftest import REDIS_URL, make_token

SDL = """
type Query { me: User, users(first: Int = 10): [User] }
type User { username: String, email: String, friends: [User] }
"""


def execute_capturing(document: str, variables: dict | None = None):
    """Run ``document`` on graphql-core alone; the ``info`` of each resolver of ``Query.me`` and ``Query.users``."""
    from graphql import build_schema, graphql_sync

    schema = build_schema(SDL)
    infos = {}

    def capture(root, info, **args):
        infos[info.field_name] = info
        return {"username": "alice", "email": "a@example.org"} if info.field_name == "me" else []

    schema.query_type.fields["me"].resolve = capture
    schema.query_type.fields["users"].resolve = capture
    result = graphql_sync(schema, document, variable_values=variables)
    assert not result.errors, result.errors
    return schema, infos


@pytest.mark.graphql_core
def test_collect_sub_fields_follows_fragments_aliases_and_directives():
    schema, infos = execute_capturing(
        "query($no: Boolean!) { me { ...F other: email friends @skip(if: $no) { username } } } "
        "fragment F on User { username email @include(if: $no) }",
        {"no": True},
    )
    groups = compat.collect_sub_fields(infos["me"], schema.get_type("User"))
    assert {key: [node.name.value for node in nodes] for key, nodes in groups.items()} == {
        "username": ["username"],
        "email": ["email"],
        "other": ["email"],
    }
    _, infos = execute_capturing("query($no: Boolean!) { me { friends @skip(if: $no) { username } } }", {"no": False})
    assert list(compat.collect_sub_fields(infos["me"], schema.get_type("User"))) == ["friends"]


@pytest.mark.graphql_core
def test_collect_sub_fields_on_the_example_schema_through_graphene():
    from example_service.schema import schema

    seen = {}

    class Capture:
        def resolve(self, next, root, info, **args):
            if info.field_name == "me":
                seen["groups"] = compat.collect_sub_fields(info, info.schema.get_type("UserType"))
            return next(root, info, **args)

    result = schema.execute("{ me { ...F other: email } } fragment F on UserType { username }", middleware=[Capture()])
    assert "groups" in seen, result.errors
    assert {key: nodes[0].name.value for key, nodes in seen["groups"].items()} == {
        "username": "username",
        "other": "email",
    }


@pytest.mark.graphql_core
def test_variable_values_are_the_coerced_values_by_name():
    document = "query($n: Int, $m: Int = 5) { users(first: $n) { username } u: users(first: $m) { username } }"
    _, infos = execute_capturing(document, {"n": 3})
    assert compat.variable_values(infos["users"]) == {"n": 3, "m": 5}
    _, infos = execute_capturing("{ me { username } }")
    assert compat.variable_values(infos["me"]) == {}


@pytest.mark.graphql_core
def test_introspection_field_defs_are_what_graphql_core_resolves():
    from graphql import build_schema
    from graphql.language import FieldNode, NameNode

    schema = build_schema(SDL)
    get_field = getattr(schema, "get_field", None)  # graphql-core 3.3
    if get_field is None:
        from graphql.execution.execute import get_field_def

        def get_field(parent, name):
            return get_field_def(schema, parent, FieldNode(name=NameNode(value=name)))

    found = tuple(get_field(schema.query_type, name) for name in ("__schema", "__type"))
    assert all(a is b for a, b in zip(found, compat.introspection_field_defs(), strict=True))


@pytest.mark.django_db
def test_marked_request_is_not_authenticated_again_by_graphql_jwts_backend(users):
    from graphql_jwt.backends import JSONWebTokenBackend

    request = RequestFactory().post("/", HTTP_AUTHORIZATION=f"JWT {make_token('alice')}")
    assert JSONWebTokenBackend().authenticate(request) == users["alice"]
    compat.mark_jwt_credentials_handled(request)
    assert JSONWebTokenBackend().authenticate(request) is None


@pytest.mark.django_db
def test_session_user_cache_is_what_djangos_get_user_returns(users):
    from django.contrib.auth.middleware import get_user
    from django.contrib.sessions.backends.db import SessionStore

    request = RequestFactory().get("/")
    request.session = SessionStore()
    compat.set_session_user_cache(request, users["bob"])
    assert get_user(request) == users["bob"]


def test_unevaluated_lazy_object_is_recognised():
    calls = []
    lazy = SimpleLazyObject(lambda: calls.append(1) or AnonymousUser())
    assert compat.is_unevaluated_lazy(lazy) and not calls
    assert lazy.is_anonymous
    assert not compat.is_unevaluated_lazy(lazy) and not compat.is_unevaluated_lazy(AnonymousUser())


@pytest.mark.django_db
def test_auditlog_block_values_only_while_the_block_is_active(users):
    from auditlog.context import set_actor, set_extra_data

    assert compat.auditlog_block_values() is None
    with set_actor(users["alice"], remote_addr="192.0.2.1"):
        block = compat.auditlog_block_values()
        assert block["actor"] == users["alice"] and block["remote_addr"] == "192.0.2.1"
    # auditlog leaves its context variable set after the block: it must not count.
    assert compat.auditlog_block_values() is None
    with set_extra_data({"ticket": "T-1"}):
        assert compat.auditlog_block_values()["ticket"] == "T-1"


def test_csrf_failure_reason_like_djangos_middleware(settings):
    factory = RequestFactory()
    assert compat.csrf_failure_reason(factory.get("/")) is None
    reason = compat.csrf_failure_reason(factory.post("/", HTTP_HOST="testserver"))
    assert isinstance(reason, str) and "CSRF" in reason
    from django.middleware.csrf import get_token

    earlier = factory.get("/")
    token = get_token(earlier)
    request = factory.post("/", HTTP_HOST="testserver", HTTP_X_CSRFTOKEN=token)
    request.COOKIES[settings.CSRF_COOKIE_NAME] = earlier.META["CSRF_COOKIE"]
    assert compat.csrf_failure_reason(request) is None


def test_replaced_body_is_what_the_view_reads():
    request = RequestFactory().post("/", b'{"query": "{ a }"}', content_type="application/json")
    compat.replace_body(request, b'{"query": "{ b }"}')
    assert request.body == b'{"query": "{ b }"}'
    # A stream not yet read is read first, so the replacement stays.
    request = RequestFactory().post("/", b"old", content_type="application/json")
    compat.replace_body(request, b"new")
    assert request.body == b"new"


@pytest.mark.parametrize("asgi", [False, True])
def test_replaced_query_params_are_what_the_view_reads(asgi):
    from django.http import QueryDict
    from django.test import AsyncRequestFactory

    factory = AsyncRequestFactory() if asgi else RequestFactory()
    request = factory.get("/?query=old")
    assert request.GET["query"] == "old"
    params = QueryDict(mutable=True)
    params["query"] = "new"
    compat.replace_query_params(request, params)
    assert request.GET["query"] == "new"


def test_the_received_body_size_is_read_without_reading_the_body():
    import tempfile

    from django.core.handlers.asgi import ASGIRequest

    # WSGI: the Content-Length Django reads up to.
    request = RequestFactory().post("/", b"x" * 1000, content_type="application/json")
    assert compat.received_body_size(request) == 1000
    # ASGI without a Content-Length: the size of the body Django spooled into ``_stream``.
    body = tempfile.SpooledTemporaryFile()
    body.write(b"y" * 5000)
    body.seek(0)
    scope = {"type": "http", "method": "POST", "path": "/", "headers": [], "query_string": b""}
    request = ASGIRequest(scope, body)
    assert "CONTENT_LENGTH" not in request.META
    assert compat.received_body_size(request) == 5000
    assert request.body == b"y" * 5000  # nothing read: the view still gets all of it


@pytest.mark.django_db
def test_field_index_name_is_the_name_django_gave_the_index():
    from django.db import connection

    from gql_audit.models import ReadObject

    field = ReadObject._meta.get_field("reads_id")
    name = compat.field_index_name(connection.SchemaEditorClass(connection), ReadObject, field)
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, ReadObject._meta.db_table)
    assert constraints[name]["index"] and constraints[name]["columns"] == [field.column]


def test_graphene_django_view_errors_are_observed_and_answered_unchanged():
    """compat.observe_view_errors: GraphQLView.format_error is a static method taking the
    error, and gql_audit's wrapper (installed at start-up) answers as it did."""
    import inspect

    from graphene_django.views import GraphQLView
    from graphql import GraphQLError

    installed = GraphQLView.__dict__["format_error"]
    assert isinstance(installed, staticmethod) and getattr(installed, "gql_audit_observed", False)
    assert list(inspect.signature(GraphQLView.format_error).parameters) == ["error"]
    assert GraphQLView.format_error(ValueError("plain")) == {"message": "plain"}
    assert GraphQLView.format_error(GraphQLError("typed"))["message"] == "typed"
    compat.observe_view_errors(lambda error: None)  # once: installing again changes nothing
    assert GraphQLView.__dict__["format_error"] is installed


def test_redis_py_is_imported_by_load_cache_client_not_by_making_the_cache():
    # In a new process: Django's RedisCache imports redis-py on its first command only,
    # and load_cache_client imports it without making a client or connecting.
    import subprocess
    import sys

    program = """
import sys
from django.conf import settings
settings.configure()
from django.core.cache.backends.redis import RedisCache
from gql_audit import compat
cache = RedisCache("redis://127.0.0.1:9/0", {})
assert "redis" not in sys.modules, "Django imported redis-py before the cache's first command"
compat.load_cache_client(cache)
assert "redis" in sys.modules
assert "_cache" not in cache.__dict__, "a client was made"
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


def test_redis_add_counts_as_the_cache_api_reads_in_one_transaction(redis_prefix):
    import threading

    import redis
    from django.core.cache.backends.locmem import LocMemCache
    from django.core.cache.backends.redis import RedisCache

    cache = RedisCache(REDIS_URL, {"KEY_PREFIX": redis_prefix})
    assert compat.redis_add(cache, "count", 2, 30) == 2  # a new count
    assert compat.redis_add(cache, "count", 3, 30) == 5
    assert cache.get("count") == 5  # what Django's own API reads
    client = redis.Redis.from_url(REDIS_URL)
    made = cache.make_key("count")
    assert 0 < client.ttl(made) <= 30  # it expires
    compat.redis_add(cache, "count", 1, 7)
    assert 0 < client.ttl(made) <= 7  # each addition says when

    def add() -> None:
        for _ in range(50):
            compat.redis_add(cache, "count", 1, 30)

    threads = [threading.Thread(target=add) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert cache.get("count") == 6 + 8 * 50  # concurrent additions: none lost
    # One round trip: the pipeline, nothing sent on its own.
    with (
        mock.patch.object(
            redis.client.Pipeline, "execute", autospec=True, side_effect=redis.client.Pipeline.execute
        ) as sent,
        mock.patch.object(
            redis.Redis, "execute_command", autospec=True, side_effect=redis.Redis.execute_command
        ) as alone,
    ):
        assert compat.redis_add(cache, "count", 1, 30) == 6 + 8 * 50 + 1
    assert sent.call_count == 1 and alone.call_count == 0
    client.close()
    assert compat.redis_add(LocMemCache("compat-test", {}), "count", 1, 30) is None  # not Redis: the API's way

    class Serializer:  # a serializer of the service's own: its values are not Redis integers
        def dumps(self, value):
            return pickle.dumps(value)

        def loads(self, data):
            return pickle.loads(data)

    own = RedisCache(REDIS_URL, {"KEY_PREFIX": redis_prefix, "OPTIONS": {"serializer": Serializer}})
    assert compat.redis_add(own, "count", 1, 30) is None


def test_redis_add_and_the_cache_api_share_a_count(redis_prefix):
    # A rolling deploy: workers counting through cache.add/incr beside workers using redis_add.
    from django.core.cache.backends.redis import RedisCache

    cache = RedisCache(REDIS_URL, {"KEY_PREFIX": redis_prefix})
    assert cache.add("shared", 3, timeout=30)  # an older worker starts the window
    assert compat.redis_add(cache, "shared", 2, 30) == 5
    assert cache.incr("shared", 1) == 6  # and goes on counting
    assert compat.redis_add(cache, "shared", 1, 30) == 7
    assert cache.get("shared") == 7


def test_redis_add_says_when_redis_refuses_its_commands(redis_prefix):
    import redis
    from django.core.cache.backends.redis import RedisCache

    admin = redis.Redis.from_url(REDIS_URL)
    user = redis_prefix  # an ACL user of this test's own: every command but MULTI
    admin.acl_setuser(user, enabled=True, passwords=["+acl-test-password"], keys=["*"], commands=["+@all", "-multi"])
    try:
        url = REDIS_URL.replace("redis://", f"redis://{user}:acl-test-password@", 1)
        with pytest.raises(compat.RedisCommandRefused, match="(?i)multi"):
            compat.redis_add(RedisCache(url, {"KEY_PREFIX": redis_prefix}), "count", 1, 30)
    finally:
        admin.acl_deluser(user)
        admin.close()
