"""THROTTLE: login attempts per username and per address, authentication failures per address.

These run on Django's local-memory cache; tests/test_throttle_redis.py runs the
same limit across two real servers sharing a real Redis.
"""

from __future__ import annotations

import json
import time
from unittest import mock

import pytest
from django.conf import settings
from django.core.cache import caches
from django.test import override_settings

from gql_audit.models import SecurityEvent
from gql_audit.protect import counters
from tests.conftest import clear_of_window_edge, make_token, post_graphql

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("empty_cache")]

LOGIN = "mutation Login($u: String!, $p: String!) { tokenAuth(username: $u, password: $p) { token } }"


def configured(**values):
    return override_settings(GQL_AUDIT={**settings.GQL_AUDIT, **values})


def login(client, username, password="wrong", *, address="127.0.0.1", request_id=None, query=LOGIN):
    headers = {"X-Request-ID": request_id} if request_id else {}
    return post_graphql(client, query, variables={"u": username, "p": password}, headers=headers, REMOTE_ADDR=address)


def refusal(response):
    assert response.status_code == 429, response.content
    assert response.json() == {
        "errors": [
            {"message": "Too many attempts; try again later.", "extensions": {"code": "THROTTLED", "rule": "THROTTLE"}}
        ]
    }
    assert 1 <= int(response["Retry-After"]) <= 300


@pytest.mark.parametrize(
    ("text", "expected"),
    [("5/300s", (5, 300)), ("30/60", (30, 60)), ("10/m", (10, 60)), ("100/h", (100, 3600)), ("1/d", (1, 86400))],
)
def test_rates(text, expected):
    parsed = counters.parse_rate(text)
    assert (parsed.limit, parsed.period) == expected


@pytest.mark.parametrize("text", ["", "5", "0/60s", "5/0s", "-1/60s", "5/60y", "five/60s", 5, None, "5/60s/2"])
def test_nonsense_rates_are_refused(text):
    with pytest.raises(ValueError):
        counters.parse_rate(text)


def test_logins_per_username_stop_before_the_password_is_checked(client, users, password_checks):
    with configured(THROTTLE={"login": "3/300s"}):
        for n in range(3):
            body = login(client, "alice", request_id=f"login-{n}").json()
            assert body["errors"][0]["message"] == "Please enter valid credentials"
        assert len(password_checks) == 3
        refusal(login(client, "alice", request_id="login-over"))
        # The right password too: the account is throttled, not the password.
        refusal(login(client, "alice", "alice-password"))
        assert len(password_checks) == 3
        # Another account is not.
        assert login(client, "bob", "bob-password").json()["data"]["tokenAuth"]["token"]
    (event,) = SecurityEvent.objects.filter(request_id="login-over")
    assert event.kind == "throttled" and event.severity == "warning"
    assert event.details["rule"] == "THROTTLE" and event.details["limit"] == "login"
    assert event.details["scope"] == "username+address" and event.details["username"] == "alice"
    assert event.details["rate"] == "3/300s" and event.details["attempts"] == 4
    assert event.operation["name"] == "Login"


def test_a_rate_set_to_none_is_not_counted(client, users, password_checks):
    # None is login_username's documented default; written out, it means the same.
    with configured(THROTTLE={"login": "2/300s", "login_username": None, "operations": None}):
        assert counters.rate("login_username") is None and counters.rate("operations") is None
        for address in ("10.0.0.1", "10.0.0.2", "10.0.0.3"):
            for _ in range(2):
                assert login(client, "alice", address=address).json()["errors"][0]["message"] == (
                    "Please enter valid credentials"
                )
            refusal(login(client, "alice", address=address))
    assert len(password_checks) == 6


def test_aliased_logins_in_one_request_all_count(client, users, password_checks):
    aliases = " ".join(f'a{i}: tokenAuth(username: "alice", password: "guess{i}") {{ token }}' for i in range(10))
    with configured(THROTTLE={"login": "5/300s"}):
        response = post_graphql(client, "mutation { " + aliases + " }", headers={"X-Request-ID": "aliases"})
    refusal(response)
    assert password_checks == []
    event = SecurityEvent.objects.get(request_id="aliases")
    assert event.details["attempts"] == 10 and event.details["username"] == "alice"


def test_logins_through_fragments_count(client, users, password_checks):
    query = (
        "mutation { ...L ...L ... on Mutation { ...L } } "
        'fragment L on Mutation { tokenAuth(username: "alice", password: "x") { token } }'
    )
    with configured(THROTTLE={"login": "2/300s"}):
        refusal(post_graphql(client, query))
    assert password_checks == []


def test_usernames_compare_as_django_normalises_them(client, users, password_checks):
    with configured(THROTTLE={"login": "2/300s"}):
        login(client, "alice")
        login(client, "ALICE")
        refusal(login(client, "\uff41lice"))  # fullwidth a: NFKC makes it "alice"


def test_logins_per_address(client, users, password_checks):
    with configured(THROTTLE={"login_address": "2/60s"}):
        login(client, "alice", address="10.0.0.1")
        login(client, "bob", address="10.0.0.1")
        refusal(login(client, "carol", address="10.0.0.1"))
        # Another address is counted on its own.
        assert login(client, "bob", "bob-password", address="10.0.0.2").json()["data"]["tokenAuth"]["token"]
    assert len(password_checks) == 3
    # An untrusted peer's X-Request-ID is not the request id: found by kind and address.
    event = SecurityEvent.objects.get(kind="throttled")
    assert (event.details["limit"], event.details["scope"]) == ("login_address", "address")
    assert event.remote_addr == "10.0.0.1"


def test_authentication_failures_throttle_the_address(client, users):
    query = "{ serviceStatus { ok } me { username } }"
    with configured(THROTTLE={"auth_failures": "3/60s"}):
        for n in range(3):
            response = post_graphql(client, query, token=f"garbage-{n}", REMOTE_ADDR="10.9.9.9")
            assert response.status_code == 200
        # Now every request from that address, even a public one without a token, is refused
        # before it authenticates: no token_invalid event for it.
        refusal(post_graphql(client, query, token=make_token("alice"), REMOTE_ADDR="10.9.9.9"))
        refusal(post_graphql(client, "{ serviceStatus { ok } }", REMOTE_ADDR="10.9.9.9"))
        # Another address is served.
        assert post_graphql(client, query, REMOTE_ADDR="10.9.9.8").json()["data"]["serviceStatus"]["ok"]
    events = SecurityEvent.objects.filter(remote_addr="10.9.9.9")
    assert sorted(e.kind for e in events) == ["throttled"] * 2 + ["token_invalid"] * 3
    event = events.filter(kind="throttled").order_by("created_at").first()
    assert (event.details["limit"], event.details["attempts"]) == ("auth_failures", 3)


def test_failed_logins_count_as_authentication_failures(client, users, password_checks):
    with configured(THROTTLE={"auth_failures": "4/60s"}):
        login(client, "alice", address="10.7.7.7")
        login(client, "bob", address="10.7.7.7")
        login(client, "carol", address="10.7.7.7")
        # 3 failures so far: a request trying 2 more logins would pass 4.
        fields = " ".join(f'{a}: tokenAuth(username: "{a}", password: "y") {{ token }}' for a in "ab")
        two = "mutation { " + fields + " }"
        refusal(post_graphql(client, two, REMOTE_ADDR="10.7.7.7"))
        assert login(client, "dave", address="10.7.7.7").status_code == 200
        refusal(login(client, "erin", address="10.7.7.7"))
    assert len(password_checks) == 4


@pytest.mark.parametrize(
    "username",
    ["al\x00ice", "\ud800", "x" * 100_000, "'; DROP TABLE users; --", "a:b:c*?[]", "\n\r\t", ""],
)
def test_hostile_usernames_are_counted_and_never_stored_in_keys(client, users, username):
    with configured(THROTTLE={"login": "1/60s"}):
        first = login(client, username)
        assert first.status_code == 200 and b"Traceback" not in first.content
        refusal(login(client, username))
    cache = caches["default"]
    keys = list(cache._cache)  # LocMemCache's own dict, read only by this test
    assert keys and all(username not in key for key in keys if username)
    assert all(key.split(":")[-1].isalnum() for key in keys)


def test_a_username_of_the_wrong_type_still_counts(client, users, password_checks):
    query = 'mutation { tokenAuth(username: 12345, password: "x") { token } }'  # a validation error
    with configured(THROTTLE={"login": "1/60s"}):
        assert post_graphql(client, query).status_code == 400
        refusal(post_graphql(client, query))
    assert password_checks == []


@override_settings(
    CACHES={
        "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
        # Nothing listens on port 9: every command fails to connect.
        "down": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9"},
    }
)
def test_a_cache_that_is_down_lets_requests_through_and_says_so(client, users, caplog):
    caplog.set_level("WARNING", logger="gql_audit.throttle")
    with configured(THROTTLE={"login": "1/60s", "auth_failures": "1/60s"}, THROTTLE_CACHE="down"):
        for n in range(3):
            started = time.monotonic()
            response = login(client, "alice", "alice-password", request_id=f"down-{n}")
            assert response.status_code == 200 and response.json()["data"]["tokenAuth"]["token"]
            # The wait on the cache is bounded by THROTTLE_TIMEOUT (0.25 s), whatever the Redis
            # client's own retries and backoff; the rest is the login itself (a loaded machine's).
            assert time.monotonic() - started < 0.25 + 2
    event = SecurityEvent.objects.get(request_id="down-2", kind="throttle_unavailable")
    assert event.severity == "error" and event.details["rule"] == "THROTTLE" and event.details["cache"] == "down"
    assert "unavailable" in event.message
    # One line when it went down, not one a request.
    (line,) = [r.getMessage() for r in caplog.records if r.name == "gql_audit.throttle"]
    assert "throttle cache 'down' unavailable" in line and "not throttled" in line


def test_the_throttle_follows_a_change_of_caches(client, users):
    # A local-memory throttle cache is kept as one instance per settings; when CACHES
    # changes, the cache the alias names now is the one counted in.
    local = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    down = {**local, "default": {**local["default"]}}
    down["counts"] = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9"}
    local["counts"] = {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "counts"}
    with configured(THROTTLE={"login": "1/60s"}, THROTTLE_CACHE="counts"):
        with override_settings(CACHES=local):
            assert login(client, "alice").status_code == 200
            refusal(login(client, "alice"))
        with override_settings(CACHES=down):
            response = login(client, "alice", request_id="moved")
    assert response.status_code == 200  # not the local count: the cache named now, which is down
    assert SecurityEvent.objects.filter(request_id="moved", kind="throttle_unavailable").exists()


def test_a_throttle_cache_missing_from_caches_lets_requests_through(client, users, caplog):
    # The system check (E023) says so at start-up; a request meanwhile is not a 500.
    caplog.set_level("WARNING", logger="gql_audit.throttle")
    with configured(THROTTLE={"login": "1/60s", "auth_failures": "1/60s"}, THROTTLE_CACHE="nowhere"):
        responses = [login(client, "alice", "alice-password", request_id=f"nowhere-{n}") for n in range(2)]
    assert all(r.status_code == 200 and r.json()["data"]["tokenAuth"]["token"] for r in responses)
    event = SecurityEvent.objects.get(request_id="nowhere-1", kind="throttle_unavailable")
    assert event.details["cache"] == "nowhere"
    assert any("throttle cache 'nowhere' unavailable" in r.getMessage() for r in caplog.records)


def test_a_new_process_imports_its_redis_client_before_the_timed_call():
    # Importing redis-py outlasts THROTTLE_TIMEOUT: in a new process the throttle imports
    # it in the request's own thread, before handing the call to a worker with a deadline.
    import subprocess
    import sys

    program = """
import sys
import django
from django.conf import settings
settings.configure(
    SECRET_KEY="x",
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"],
    CACHES={"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "throttle": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9"}},
    GQL_AUDIT={"THROTTLE": {"operations": "5/60s"}, "THROTTLE_CACHE": "throttle"},
)
django.setup()
from gql_audit.protect import counters
assert "redis" not in sys.modules
imported = []
run = counters._pool.run
def timed(call, timeout):
    imported.append("redis" in sys.modules)
    return run(call, timeout)
counters._pool.run = timed
try:
    counters.hit("operations", counters.rate("operations"), "actor:1")
except counters.ThrottleUnavailable:
    pass  # nothing listens on port 9
print(imported)
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[True]", done.stderr


def test_throttle_off_costs_no_cache_access(client, users):
    with mock.patch.object(counters, "_cache") as cache:
        for _ in range(3):
            login(client, "alice")
    cache.assert_not_called()
    assert json.loads(login(client, "alice").content)["errors"]


@pytest.mark.django_db(transaction=True)
async def test_refusals_under_asgi(async_client, async_connections_closed):
    with configured(THROTTLE={"auth_failures": "1/60s"}, QUERY_LIMITS={"max_depth": 1}):
        response = await async_client.post(
            "/graphql/", {"query": "{ serviceStatus { ok } }"}, content_type="application/json"
        )
        # Refused in process_view, before the view ran.
        assert response.status_code == 400 and response.json()["errors"][0]["extensions"]["code"] == "QUERY_TOO_COMPLEX"
        await async_client.post(
            "/graphql/",
            {"query": "{ __typename }"},
            content_type="application/json",
            headers={"Authorization": "JWT x"},
        )
        # Refused in the middleware, before authentication.
        response = await async_client.post("/graphql/", {"query": "{ __typename }"}, content_type="application/json")
        assert response.status_code == 429 and response.json()["errors"][0]["extensions"]["code"] == "THROTTLED"


def test_a_deeply_nested_username_variable_is_counted_not_crashed_on(client, users, password_checks):
    nested = "x"
    for _ in range(900):
        nested = [nested]
    with configured(THROTTLE={"login": "1/60s"}):
        first = post_graphql(client, LOGIN, variables={"u": nested, "p": "x"})
        assert first.status_code in (200, 400) and b"Traceback" not in first.content
        refusal(post_graphql(client, LOGIN, variables={"u": nested, "p": "x"}))
    assert password_checks == []


def test_the_relay_login_mutation_is_found_through_its_input():
    import graphene
    import graphql_jwt.relay

    from gql_audit.visibility import login_arguments

    class Query(graphene.ObjectType):
        ok = graphene.Boolean()

    class Mutation(graphene.ObjectType):
        token_auth = graphql_jwt.relay.ObtainJSONWebToken.Field()
        plain_auth = graphql_jwt.ObtainJSONWebToken.Field()
        verify_token = graphql_jwt.relay.Verify.Field()

    schema = graphene.Schema(query=Query, mutation=Mutation).graphql_schema
    assert login_arguments(schema) == {"tokenAuth": ("input", "username"), "plainAuth": ("username",)}
    from gql_audit.protect.document import analyse
    from gql_audit.protect.logins import username

    text = 'mutation($u: String!) { a: tokenAuth(input: {username: $u, password: "p"}) { token } }'
    (root_field,) = analyse(text).operations[0].root_calls["tokenAuth"].kept
    assert username(root_field, ("input", "username"), {"u": "dora"}) == "dora"
    assert username(root_field, ("input", "username"), None) is None


def test_a_refused_login_stores_no_password(client, users, caplog):
    caplog.set_level("DEBUG")
    secret = "Inline-Secret-Pw-987"
    inline = 'mutation { tokenAuth(username: "alice", password: "%s") { token } }' % secret
    with configured(THROTTLE={"login": "1/60s"}):
        login(client, "alice", "Variable-Secret-Pw-654")
        refusal(post_graphql(client, inline))
        refusal(login(client, "alice", "Variable-Secret-Pw-654"))
    stored = json.dumps(list(SecurityEvent.objects.values()), default=str)
    assert "throttled" in stored
    for value in (secret, "Variable-Secret-Pw-654"):
        assert value not in stored and value not in caplog.text


# --- operations: counts taken ahead for a busy actor ------------------------------------------


def counting_additions():
    """A patch of the cache additions (each one a call to the throttle cache), and their amounts."""
    amounts = []
    real = counters._add

    def add(key, amount, left):
        amounts.append(amount)
        return real(key, amount, left)

    return mock.patch.object(counters, "_add", side_effect=add), amounts


def held_ahead():
    return counters.conf.derived("throttle_ahead", dict)


def let_through(rate, value, requests):
    """How many of ``requests`` requests for ``value`` the ``operations`` rate lets through."""
    return sum(counters.take("operations", rate, value)[0] <= rate.limit for _ in range(requests))


def used_up(rate, value, requests):
    """Requests let through of ``requests`` for ``value``, then of those needed to use up what is held."""
    allowed = let_through(rate, value, requests)
    for held in list(held_ahead().values()):
        while held.unused:
            allowed += counters.take("operations", rate, value)[0] <= rate.limit
    return allowed


def at_once(rate, value, requests):
    """The counts ``requests`` requests reach, their additions reaching the cache together
    (each after every one has read what its process holds)."""
    import threading

    barrier = threading.Barrier(requests)
    real = counters._add

    def together(key, amount, left):
        barrier.wait(timeout=5)
        return real(key, amount, left)

    positions = []
    with mock.patch.object(counters, "_add", side_effect=together):
        threads = [
            threading.Thread(target=lambda: positions.append(counters.take("operations", rate, value)[0]))
            for _ in range(requests)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    return positions


def test_a_busy_actor_is_counted_ahead_never_past_the_rate():
    rate = counters.parse_rate("1000/3600s")  # each process takes at most 1000 // 200 = 5 ahead
    clear_of_window_edge(3600, 5)
    patched, amounts = counting_additions()
    with configured(THROTTLE={"operations": "1000/3600s"}), patched:
        positions = [counters.take("operations", rate, "actor:busy")[0] for _ in range(1000)]
        calls = len(amounts)
        positions += [counters.take("operations", rate, "actor:busy")[0] for _ in range(100)]
        stored = counters.count("operations", rate, "actor:busy")[0]
    # Exactly the rate: nothing let past it, nothing refused early, each request its own count.
    assert positions[:1000] == list(range(1, 1001)) and all(p > rate.limit for p in positions[1000:])
    # 1, then 1 + 1, 1 + 2, 1 + 4, then 1 + 5 each time: one cache call in six requests.
    assert amounts[:5] == [1, 2, 3, 5, 6] and set(amounts[5:]) == {6}
    assert calls <= 5 + 1000 / 6
    assert stored >= 1100


def test_counts_taken_ahead_are_shared_by_every_process_and_by_threads():
    import threading

    rate = counters.parse_rate("2000/3600s")
    clear_of_window_edge(3600, 5)
    allowed = []
    lock = threading.Lock()

    def requests(n):
        mine = let_through(rate, "actor:shared", n)
        with lock:
            allowed.append(mine)

    with configured(THROTTLE={"operations": "2000/3600s"}):
        threads = [threading.Thread(target=requests, args=(300,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        first_process = sum(allowed)
        held = sum(h.unused for h in held_ahead().values())
    assert first_process == 2000  # 2,400 asked for, 8 threads at once: the rate, not one more
    # Another process (settings of its own: counts taken ahead of its own) shares the cache's count.
    with configured(THROTTLE={"operations": "2000/3600s", "THROTTLE_TIMEOUT": 1}):
        second_process = let_through(rate, "actor:shared", 50)
    assert held == 0 and second_process == 0


def test_a_process_holding_unused_counts_refuses_the_others_early_by_its_share_at_most():
    rate = counters.parse_rate("2000/3600s")  # a share of 10
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "2000/3600s"}):
        for _ in range(21):
            counters.take("operations", rate, "actor:split")
        held = sum(h.unused for h in held_ahead().values())
    assert 0 < held <= 10
    with configured(THROTTLE={"operations": "2000/3600s", "THROTTLE_TIMEOUT": 1}):
        other = let_through(rate, "actor:split", 2100)
    assert other == 2000 - 21 - held


def test_a_rate_under_its_share_is_counted_exactly_at_every_request():
    rate = counters.parse_rate("199/3600s")
    clear_of_window_edge(3600, 5)
    patched, amounts = counting_additions()
    with configured(THROTTLE={"operations": "199/3600s"}), patched:
        positions = [counters.take("operations", rate, "actor:exact")[0] for _ in range(201)]
    assert amounts == [1] * 201 and positions == list(range(1, 202))


def test_an_actor_seen_once_takes_nothing_ahead():
    rate = counters.parse_rate("100000/60s")
    patched, amounts = counting_additions()
    with configured(THROTTLE={"operations": "100000/60s"}), patched:
        for n in range(50):
            assert counters.take("operations", rate, f"address:10.0.0.{n}")[0] == 1
    assert amounts == [1] * 50


def test_requests_adding_at_once_near_the_rate_are_all_let_through_up_to_it():
    rate = counters.parse_rate("200/3600s")  # a share of 1
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "200/3600s"}):
        allowed = used_up(rate, "actor:near", 197)
        allowed += sum(p <= 200 for p in at_once(rate, "actor:near", 2))
        allowed += let_through(rate, "actor:near", 5)
    assert allowed == 200  # one process alone is never refused early


def test_a_batch_holds_no_more_than_the_share_ahead():
    rate = counters.parse_rate("2000/3600s")  # a share of 10
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "2000/3600s"}):
        most = 0
        positions = []
        for _ in range(60):
            positions.append(counters.take("operations", rate, "actor:batch", 7)[0])
            most = max(most, *(held.unused for held in held_ahead().values()))
    assert most <= 10
    assert (
        positions == sorted(positions)
        and positions[-1] <= 60 * 7 <= counters.count("operations", rate, "actor:batch")[0] + 10
    )


def test_values_seen_once_do_not_push_out_what_a_busy_actor_holds(monkeypatch):
    monkeypatch.setattr(counters, "MAX_AHEAD", 50)
    rate = counters.parse_rate("20000/3600s")  # a share of 100
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "20000/3600s"}):
        for _ in range(40):
            counters.take("operations", rate, "actor:busy")
        (busy,) = [held for held in held_ahead().values() if held.unused]
        holding = busy.unused
        for n in range(500):  # an attacker's one-off addresses
            counters.take("operations", rate, f"address:10.1.{n // 256}.{n % 256}")
        assert len(held_ahead()) <= 50
        assert busy in held_ahead().values() and busy.unused == holding


def test_a_count_lost_by_the_cache_lets_through_at_most_the_share_more():
    rate = counters.parse_rate("2000/3600s")  # a share of 10
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "2000/3600s"}):
        for _ in range(100):
            counters.take("operations", rate, "actor:lost")
        caches["default"].clear()  # a flush, an eviction, a failover to an empty replica
        after = let_through(rate, "actor:lost", 2100)
    assert rate.limit <= after <= rate.limit + 10


def test_requests_adding_at_once_hold_no_more_than_the_share_and_lose_nothing():
    rate = counters.parse_rate("2000/3600s")  # a share of 10
    clear_of_window_edge(3600, 5)
    with configured(THROTTLE={"operations": "2000/3600s"}):
        allowed = used_up(rate, "actor:eight", 100)
        positions = at_once(rate, "actor:eight", 8)
        allowed += sum(p <= rate.limit for p in positions)
        assert sum(held.unused for held in held_ahead().values()) <= 10
        assert sorted(positions) == sorted(set(positions))  # each request its own count
        allowed += let_through(rate, "actor:eight", 2000)
    assert allowed == rate.limit
