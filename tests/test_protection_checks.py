"""System checks of QUERY_LIMITS, PERSISTED_OPERATIONS, THROTTLE and THROTTLE_CACHE."""

from __future__ import annotations

import json

import pytest
from django.core import checks

from gql_audit.protect.document import document_hash

REDIS = {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379"}


def ids():
    return sorted(m.id for m in checks.run_checks(tags=[checks.Tags.security]) if m.id.startswith("gql_audit."))


@pytest.fixture
def manifests(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({document_hash("{ a }"): "{ a }"}))
    wrong_hash = tmp_path / "wrong.json"
    wrong_hash.write_text(json.dumps({"0" * 64: "{ a }"}))
    not_a_map = tmp_path / "list.json"
    not_a_map.write_text("[]")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    return {"good": good, "wrong": wrong_hash, "list": not_a_map, "broken": broken, "missing": tmp_path / "nope"}


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"QUERY_LIMITS": {"max_depth": 10, "max_aliases": 0, "max_fields": 500, "mode": "measure"}}, []),
        ({"QUERY_LIMITS": {"max_depth": None, "mode": "enforce"}}, []),
        ({"QUERY_LIMITS": {"max_depth": 0}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"max_tokens": 0}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"max_tokens": 5000}}, []),
        ({"QUERY_LIMITS": {"max_aliases": -1}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"max_fields": "100"}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"max_depth": True}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"mode": "warn"}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"depth": 5}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": 10}, ["gql_audit.E020"]),
        (
            {
                "QUERY_LIMITS": {
                    "max_cost": 5000,
                    "max_directives": 0,
                    "max_request_bytes": 100_000,
                    "max_batch": 10,
                    "default_list_size": 20,
                    "costs": {"Query.documents": {"assumed_size": 50}, "Mutation.tokenAuth": 100},
                }
            },
            [],
        ),
        ({"QUERY_LIMITS": {"max_cost": 0}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"costs": {"documents": 5}}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"costs": {"Query.documents": {"weight": 5}}}}, ["gql_audit.E020"]),
        ({"QUERY_LIMITS": {"costs": {"Query.documents": {"slicing_arguments": "first"}}}}, ["gql_audit.E020"]),
        ({"THROTTLE_TIMEOUT": 0}, ["gql_audit.E024"]),
        ({"THROTTLE_TIMEOUT": "1s"}, ["gql_audit.E024"]),
        ({"THROTTLE": {"login_username": "20/h", "operations": "600/60s"}, "THROTTLE_TIMEOUT": 0.1}, []),
        ({"THROTTLE": {"login": "5/300s", "login_address": "50/5m", "auth_failures": "30/60s"}}, []),
        # None is a rate's documented default: that rate is not counted.
        ({"THROTTLE": {"login": "5/300s", "login_username": None, "operations": None}}, []),
        ({"THROTTLE": {"login": "5 per minute"}}, ["gql_audit.E022"]),
        ({"THROTTLE": {"login": "0/60s"}}, ["gql_audit.E022"]),
        ({"THROTTLE": {"logins": "5/60s"}}, ["gql_audit.E022"]),
        ({"THROTTLE": ["5/60s"]}, ["gql_audit.E022"]),
        ({"THROTTLE": {"login": "5/60s"}, "THROTTLE_CACHE": "nowhere"}, ["gql_audit.E023"]),
    ],
)
def test_limits_and_throttle_values(settings, values, expected):
    settings.CACHES = {"default": REDIS}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, **values}
    assert ids() == expected


@pytest.mark.parametrize(
    ("manifest", "mode", "expected"),
    [
        ("good", "observe", []),
        ("good", "enforce", []),
        ("good", "block", ["gql_audit.E021"]),
        ("wrong", "enforce", ["gql_audit.E021"]),
        ("list", "enforce", ["gql_audit.E021"]),
        ("broken", "enforce", ["gql_audit.E021"]),
        ("missing", "observe", ["gql_audit.E021"]),
    ],
)
def test_persisted_operations(settings, manifests, manifest, mode, expected):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "PERSISTED_OPERATIONS": {"manifest": str(manifests[manifest]), "mode": mode},
    }
    assert ids() == expected


def test_a_manifest_that_is_not_the_hash_of_its_document_is_named(settings, manifests):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "PERSISTED_OPERATIONS": {"manifest": str(manifests["wrong"])}}
    (error,) = [m for m in checks.run_checks() if m.id == "gql_audit.E021"]
    assert "not the sha256 of its document" in error.msg


def test_a_per_process_throttle_cache_is_a_warning(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "THROTTLE": {"login": "5/300s"}}
    assert ids() == ["gql_audit.W020"]
