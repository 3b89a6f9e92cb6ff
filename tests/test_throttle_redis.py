"""THROTTLE across two real servers sharing a real Redis: one limit, whichever server is asked.

Two gunicorn processes serve the example service on the test database, their
``THROTTLE_CACHE`` Django's own ``RedisCache`` on the Redis at
``GQL_AUDIT_TEST_REDIS`` (``redis://127.0.0.1:6379`` when unset), under a key
prefix of this run's own, deleted afterwards. Under ``CI=true`` the test runs
or fails; elsewhere it is skipped, saying why, when no Redis answers.
"""

from __future__ import annotations

import contextlib
import os

import httpx
import pytest

from gql_audit.models import SecurityEvent
from tests.conftest import REDIS_URL, clear_of_window_edge
from tests.test_worker_timeout import SETTINGS, Gunicorn

pytestmark = [pytest.mark.server, pytest.mark.django_db(transaction=True)]

LIMIT = 4
LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"

REDIS_SETTINGS = """
CACHES = {{
    "default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    "throttle": {{
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": {url!r},
        "KEY_PREFIX": {prefix!r},
    }},
}}
GQL_AUDIT = {{**GQL_AUDIT, "THROTTLE": {{"login": "{limit}/300s"}}, "THROTTLE_CACHE": "throttle"}}  # noqa: F405
"""


@contextlib.contextmanager
def servers_of(tmp_path, settings):
    """Two gunicorn servers on ``settings``, always stopped."""
    servers = []
    try:
        for name in ("a", "b"):
            directory = tmp_path / name
            directory.mkdir()
            servers.append(Gunicorn(directory, "sync", settings=settings))
        for server in servers:
            server.wait_ready()
        yield servers
    finally:
        for server in servers:
            server.stop()


def test_a_redis_that_refuses_multi_is_counted_through_the_cache_api(redis_prefix, caplog):
    """A Redis user whose ACL refuses MULTI (as a proxy without transactions would): the
    throttle says so once and counts through Django's cache API from then on."""
    import redis
    from django.test import override_settings

    from gql_audit.protect import counters

    admin = redis.Redis.from_url(REDIS_URL)
    user = redis_prefix  # an ACL user of this test's own: every command but MULTI
    admin.acl_setuser(user, enabled=True, passwords=["+acl-test-password"], keys=["*"], commands=["+@all", "-multi"])
    caplog.set_level("WARNING", logger="gql_audit.throttle")
    url = REDIS_URL.replace("redis://", f"redis://{user}:acl-test-password@", 1)
    caches = {
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        "acl": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": url, "KEY_PREFIX": redis_prefix},
    }
    gql_audit = {"THROTTLE": {"operations": "100/300s"}, "THROTTLE_CACHE": "acl", "THROTTLE_TIMEOUT": 5}
    try:
        clear_of_window_edge(300, 10)
        with override_settings(CACHES=caches, GQL_AUDIT=gql_audit):
            rate = counters.rate("operations")
            counts = [counters.hit("operations", rate, "actor:acl")[0] for _ in range(4)]
            stored = counters.count("operations", rate, "actor:acl")[0]
    finally:
        counters._through_api.discard("acl")
        admin.acl_deluser(user)
    # The refused transaction may have added its INCRBY on its own: the first count is 1 or 2.
    assert counts[0] in (1, 2) and counts[1:] == [counts[0] + 1, counts[0] + 2, counts[0] + 3], counts
    assert stored == counts[-1]
    (key,) = admin.scan_iter(match=f"{redis_prefix}:*")
    assert 0 < admin.ttl(key) <= 301  # the window's count expires
    admin.close()
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gql_audit.throttle"]
    assert "refused MULTI/INCRBY/EXPIRE" in line and "counting through the cache API" in line


@pytest.fixture
def two_servers(tmp_path, redis_prefix):
    with servers_of(
        tmp_path, SETTINGS + REDIS_SETTINGS.format(url=REDIS_URL, prefix=redis_prefix, limit=LIMIT)
    ) as servers:
        yield servers


def login(server, password="wrong", username="alice"):
    url = server.url.replace("/hang/", "/graphql/")
    return httpx.post(url, json={"query": LOGIN, "variables": {"u": username, "p": password}}, timeout=10)


def warm_up(servers):
    """Each server's first connection to Redis made (a login of another user): on a busy
    machine it may take longer than THROTTLE_TIMEOUT, and the throttle then leaves the
    cache alone for a second, counting nothing. That second is waited out."""
    import time

    for server in servers:
        login(server, username="warm-up")
    time.sleep(1.2)


def test_the_login_limit_holds_across_two_servers(two_servers, users, redis_prefix):
    import redis

    a, b = two_servers
    assert a.process.pid != b.process.pid and a.port != b.port
    clear_of_window_edge(300, 45)  # every count below in one 300 s window
    warm_up(two_servers)
    warm_ups = SecurityEvent.objects.filter(kind="login_failed").count()
    # Alternately: neither server alone sees more than half the attempts.
    for n in range(LIMIT):
        response = login(two_servers[n % 2])
        assert response.status_code == 200
        assert response.json()["errors"][0]["message"] == "Please enter valid credentials"
    for server in (a, b, a):
        response = login(server, "alice-password")  # even the right password
        assert response.status_code == 429, response.text
        assert response.json()["errors"][0]["extensions"] == {"code": "THROTTLED", "rule": "THROTTLE"}
        assert 1 <= int(response.headers["Retry-After"]) <= 300
    # Each attempt that got through checked a password; none after.
    assert SecurityEvent.objects.filter(kind="login_failed").count() == warm_ups + LIMIT
    throttled = SecurityEvent.objects.filter(kind="throttled")
    assert throttled.count() == 3
    assert sorted(e.details["attempts"] for e in throttled) == [LIMIT + 1, LIMIT + 2, LIMIT + 3]
    # The count is in Redis, under this run's prefix, and names no user.
    keys = [k.decode() for k in redis.Redis.from_url(REDIS_URL).scan_iter(match=f"{redis_prefix}:*")]
    # Two counts: alice's and the warm-up's.
    assert len(keys) == 2 and all("alice" not in k and ":gql_audit:throttle:login:300:" in k for k in keys)


# --- a Redis that stops answering mid-run ---------------------------------------------------


@pytest.fixture
def own_redis(tmp_path):
    """A redis-server of this test's own, on a free port: it can be frozen and killed."""
    import shutil
    import signal
    import subprocess
    import time

    import redis

    from tests.test_worker_timeout import free_port

    binary = shutil.which("redis-server")
    if binary is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI=true and no redis-server: .ci/run installs Debian's redis-server")
        pytest.skip("needs redis-server (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    client = redis.Redis(port=port, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.RedisError:
            if time.monotonic() > deadline:
                process.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGCONT)
            process.kill()
            process.wait(timeout=10)


OUTAGE_SETTINGS = """
CACHES = {{
    "default": {{"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}},
    "throttle": {{"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": {url!r}}},
}}
GQL_AUDIT = {{  # noqa: F405
    **GQL_AUDIT,  # noqa: F405
    "THROTTLE": {{"login": "{limit}/300s"}},
    "THROTTLE_CACHE": "throttle",
    "THROTTLE_TIMEOUT": 0.25,
}}
"""


def timed_login(server, password="wrong"):
    import time

    started = time.monotonic()
    response = login(server, password)
    return response, time.monotonic() - started


@pytest.mark.parametrize("outage", ["frozen", "killed"])
def test_requests_flow_within_the_timeout_while_redis_is_down(tmp_path, users, own_redis, outage):
    import signal

    process, port = own_redis
    settings = SETTINGS + OUTAGE_SETTINGS.format(url=f"redis://127.0.0.1:{port}/0", limit=LIMIT)
    with servers_of(tmp_path, settings) as servers:
        clear_of_window_edge(300, 45)
        warm_up(servers)
        for n in range(LIMIT):
            assert login(servers[n % 2]).status_code == 200
        assert login(servers[0], "alice-password").status_code == 429  # Redis counts across both
        # Redis stops answering: frozen (connections hang) or killed (connections refused).
        process.send_signal(signal.SIGSTOP if outage == "frozen" else signal.SIGKILL)
        for server in (*servers, *servers):
            response, seconds = timed_login(server, "alice-password")
            assert response.status_code == 200 and response.json()["data"]["tokenAuth"]["token"], response.text
            # THROTTLE_TIMEOUT bounds the wait, whatever the Redis client's own timeouts and retries.
            assert seconds < 0.25 + 1.0, seconds
        for server in servers:
            lines = server.wait_for(
                lambda lines: any("throttle cache 'throttle' unavailable" in line.get("message", "") for line in lines)
            )
            said = [x for x in lines if "unavailable" in x.get("message", "") and x["logger"] == "gql_audit.throttle"]
            # One line for the outage (a first connection slower than the timeout may have said so once before).
            assert said and len(said) <= 2, said
            assert said[-1]["level"] == "WARNING" and "not throttled" in said[-1]["message"]
    unavailable = SecurityEvent.objects.filter(kind="throttle_unavailable")
    assert unavailable.count() >= 4 and all(e.details["cache"] == "throttle" for e in unavailable)
