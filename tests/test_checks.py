"""System checks: each misconfiguration has its own stable id."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.core import checks

GOOD_MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "gql_audit.middleware.AuditContextMiddleware",
]
JWT = "graphql_jwt.middleware.JSONWebTokenMiddleware"
OURS = "gql_audit.graphene.AuditMiddleware"


def ids(**kwargs):
    return sorted(m.id for m in checks.run_checks(tags=[checks.Tags.compatibility]) if m.id.startswith("gql_audit."))


def test_example_configuration_is_clean():
    assert ids() == []


#: A previous key with the time it was retired.
RETIRED = {"key": "o" * 32, "until": "2026-11-23T08:00:00+00:00"}
E002 = ["gql_audit.E002"]


@pytest.mark.parametrize(
    ("gql_audit", "expected"),
    [
        ({"PUBLIC_FIELD": ["Query.x"]}, ["gql_audit.E001"]),
        ({"A": 1, "B": 2}, ["gql_audit.E001", "gql_audit.E001"]),
        ("not a dict", ["gql_audit.E001"]),
        ({"INTROSPECTION": "yes"}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": "a key"}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": {"key": "short"}}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": "old"}}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [None]}}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "rotate": True}}, ["gql_audit.E002"]),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": ["o" * 32]}}, []),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [RETIRED]}}, []),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [{**RETIRED, "until": "2026-11-23 08:00"}]}}, E002),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [{**RETIRED, "until": "soon"}]}}, E002),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [{"key": "o" * 32}]}}, E002),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [{**RETIRED, "key": "short"}]}}, E002),
        ({"TAMPER_EVIDENCE": {"key": "k" * 32, "previous_keys": [{**RETIRED, "when": "now"}]}}, E002),
        ({"INSTRUMENT_SCHEMA": "yes"}, ["gql_audit.E002"]),
        ({"AUDIT_DATABASE": "nowhere"}, ["gql_audit.E002"]),
        ({"AUDIT_DATABASE": 5}, ["gql_audit.E002"]),
        ({"AUDIT_DATABASE": "default"}, []),
        ({"CLIENT_CERT_SOURCE": "apache"}, ["gql_audit.E002"]),
        ({"REQUEST_ID_HEADER": "X Request"}, ["gql_audit.E002"]),
        ({"REQUEST_ID_HEADER": 5}, ["gql_audit.E002"]),
        ({"TRUSTED_PROXIES": "10.0.0.0/8"}, ["gql_audit.E002"]),
        ({"TRUSTED_PROXIES": ["10.0.0.0/33"]}, ["gql_audit.E002"]),
        ({"TRUSTED_PROXIES": ["10.0.0.0/8", "::1"]}, []),
        ({"PUBLIC_FIELDS": "Query.serviceStatus"}, ["gql_audit.E002"]),
        ({"PUBLIC_FIELDS": ["serviceStatus"]}, ["gql_audit.E002"]),
        ({"PUBLIC_FIELDS": ["Query.service_status"]}, ["gql_audit.W002"]),
        ({"AUTHENTICATOR": "nowhere.to.be.found"}, ["gql_audit.E002"]),
        ({"AUTHENTICATOR": 42}, ["gql_audit.E002"]),
        ({"AUTHENTICATOR": None}, []),
    ],
)
def test_settings_checks(settings, gql_audit, expected):
    settings.GQL_AUDIT = gql_audit
    assert ids() == expected


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ("Query.service_status", "Use GraphQL names (camelCase): Query.serviceStatus."),
        ("Mutation.token_auth", "Use GraphQL names (camelCase): Mutation.tokenAuth."),
        ("Query.health", "Query's fields are: "),
        ("Queries.serviceStatus", "Root types are named as the schema names them: Mutation, Query."),
    ],
)
def test_a_public_field_naming_no_root_field_is_given_what_it_could_mean(settings, entry, hint):
    settings.GQL_AUDIT = {"PUBLIC_FIELDS": [entry]}
    (warning,) = [m for m in checks.run_checks() if m.id == "gql_audit.W002"]
    assert repr(entry) in warning.msg and warning.hint.startswith(hint)
    if entry == "Query.health":
        assert "serviceStatus" in warning.hint and entry.split(".")[1] not in warning.hint


def test_unknown_key_message_names_the_key(settings):
    settings.GQL_AUDIT = {"PUBLIC_FIELD": []}
    (error,) = [m for m in checks.run_checks() if m.id == "gql_audit.E001"]
    assert "'PUBLIC_FIELD'" in error.msg and "PUBLIC_FIELDS" in error.hint


@pytest.mark.parametrize(
    ("middleware", "expected"),
    [
        (GOOD_MIDDLEWARE + ["auditlog.middleware.AuditlogMiddleware"], ["gql_audit.E003"]),
        (GOOD_MIDDLEWARE[:2], ["gql_audit.E004"]),
        ([GOOD_MIDDLEWARE[0], GOOD_MIDDLEWARE[2], GOOD_MIDDLEWARE[1]], ["gql_audit.E005"]),
        ([GOOD_MIDDLEWARE[0], GOOD_MIDDLEWARE[2]], ["gql_audit.E005"]),
    ],
)
def test_django_middleware_checks(settings, middleware, expected):
    settings.MIDDLEWARE = middleware
    assert ids() == expected


@pytest.mark.parametrize(
    ("graphene_middleware", "expected"),
    [
        ([], ["gql_audit.E006"]),
        ([JWT], ["gql_audit.E006"]),
        ([JWT, OURS], ["gql_audit.E007"]),
        ([OURS, JWT], []),
    ],
)
def test_graphene_middleware_checks(settings, graphene_middleware, expected):
    settings.GRAPHENE = {**settings.GRAPHENE, "MIDDLEWARE": graphene_middleware}
    assert ids() == expected


def test_graphene_middleware_given_as_class_or_subclass(settings):
    from gql_audit.graphene import AuditMiddleware

    class Custom(AuditMiddleware):
        pass

    settings.GRAPHENE = {**settings.GRAPHENE, "MIDDLEWARE": [Custom]}
    assert ids() == []


def test_jwt_expiration_warning(settings):
    settings.GRAPHQL_JWT = {"JWT_VERIFY_EXPIRATION": False}
    assert ids() == ["gql_audit.W001"]
    settings.GRAPHQL_JWT = {}
    assert ids() == ["gql_audit.W001"]
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": None}
    assert ids() == []


def test_auditlog_not_installed(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "auditlog"]
    assert "gql_audit.E008" in ids()


def test_a_project_started_without_auditlog_is_told_so(tmp_path):
    # Django imports the admin modules while it starts, before any check runs.
    (tmp_path / "no_auditlog_settings.py").write_text(
        "SECRET_KEY = 'x' * 50\n"
        "INSTALLED_APPS = ['django.contrib.admin', 'django.contrib.auth', 'django.contrib.contenttypes',\n"
        "                  'django.contrib.sessions', 'django.contrib.messages', 'graphene_django', 'gql_audit']\n"
        "DATABASES = {'default': {'ENGINE': 'django.db.backends.sqlite3', 'NAME': ':memory:'}}\n"
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "no_auditlog_settings", "PYTHONPATH": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"], env=env, capture_output=True, text=True, timeout=60
    )
    assert started.returncode == 1
    last = started.stderr.strip().splitlines()[-1]
    assert last.startswith("django.core.exceptions.ImproperlyConfigured: gql_audit.E008: 'auditlog' is not in")


def test_no_model_registered_with_auditlog_is_a_warning(monkeypatch):
    from auditlog.registry import auditlog

    assert auditlog.get_models()  # the example registers its models: no warning
    monkeypatch.setattr(auditlog, "_registry", {})
    assert ids() == ["gql_audit.W005"]
    (warning,) = [m for m in checks.run_checks() if m.id == "gql_audit.W005"]
    assert "auditlog.register" in warning.hint


@pytest.mark.parametrize("schema", ["example_service.schemaa.schema", "example_service.schema.nothing", "builtins.len"])
def test_a_schema_that_cannot_be_loaded_is_an_error(settings, schema):
    settings.GRAPHENE = {**settings.GRAPHENE, "SCHEMA": schema}
    assert ids() == ["gql_audit.E011"]
    (error,) = [m for m in checks.run_checks() if m.id == "gql_audit.E011"]
    assert repr(schema) in error.msg


def test_graphene_django_not_installed(settings):
    settings.INSTALLED_APPS = [a for a in settings.INSTALLED_APPS if a != "graphene_django"]
    assert ids() == ["gql_audit.E010"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("example_service.subjects.subject_objects", []),
        ("example_service.subjects.nothing_here", ["gql_audit.E002"]),
        (42, ["gql_audit.E002"]),
        (None, []),
    ],
)
def test_subject_objects_must_be_importable(settings, value, expected):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "SUBJECT_OBJECTS": value}
    assert ids() == expected


def test_non_null_private_fields_are_reported(settings):
    settings.GRAPHENE = {**settings.GRAPHENE, "SCHEMA": "tests.schemas.non_null_schema"}
    settings.GQL_AUDIT = {"PUBLIC_FIELDS": ["Query.open"]}
    assert ids() == ["gql_audit.W003", "gql_audit.W003"]
    messages = [m.msg for m in checks.run_checks() if m.id == "gql_audit.W003"]
    assert any(m.startswith("Query.required ") for m in messages)
    assert any(m.startswith("Thing.secret ") for m in messages)


def test_every_setting_is_documented_with_its_default():
    from pathlib import Path

    from gql_audit.conf import DEFAULTS

    text = (Path(__file__).parent.parent / "docs" / "settings.md").read_text()
    headings = {line for line in text.splitlines() if line.startswith("## ")}
    for key in DEFAULTS:
        heading = next((h for h in headings if f"`{key}`" in h), None)
        assert heading is not None, f"docs/settings.md has no heading for {key}"
        section = text.split(heading, 1)[1].split("\n## ", 1)[0]
        assert "Default:" in section, f"docs/settings.md gives no default for {key}"


class LogEntriesElsewhere:
    """A router sending auditlog's rows to another database than gql_audit's."""

    def db_for_write(self, model, **hints):
        return "elsewhere" if model._meta.app_label == "auditlog" else None


@pytest.mark.parametrize("routed", [False, True])
def test_sealing_needs_log_entries_on_the_audit_database(settings, monkeypatch, routed):
    from django.db import connections

    elsewhere = {**connections.settings["default"], "NAME": "another-database"}
    monkeypatch.setitem(connections.settings, "elsewhere", elsewhere)
    settings.GQL_AUDIT = {"TAMPER_EVIDENCE": {"key": "k" * 32}}
    if routed:
        settings.DATABASE_ROUTERS = [f"{__name__}.LogEntriesElsewhere"]
    assert ids() == (["gql_audit.E030"] if routed else [])
    # Sealing off, or the same database under another alias: nothing to report.
    settings.GQL_AUDIT = {"TAMPER_EVIDENCE": None}
    assert ids() == []
    same = {**elsewhere, "NAME": connections.settings["default"]["NAME"]}
    monkeypatch.setitem(connections.settings, "elsewhere", same)
    settings.GQL_AUDIT = {"TAMPER_EVIDENCE": {"key": "k" * 32}}
    assert ids() == []
