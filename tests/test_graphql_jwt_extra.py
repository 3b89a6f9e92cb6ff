"""django-graphql-jwt is an optional extra: gql_audit works without it, and says
so clearly when a setting still names it.

Here the package is hidden from the running process (``sys.modules["graphql_jwt"] =
None``, which ``importlib`` reads as "not installed"); ``test_without_the_extra_in_a_fresh_venv``
proves the same with a virtual environment that never had it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core import checks

from gql_audit.auth import django_graphql_jwt
from gql_audit.models import SecurityEvent
from tests.conftest import codes, make_token, post_graphql

QUERY = "{ serviceStatus { ok } publicDocuments { title } me { username } }"
E054 = "gql_audit.E054"


@pytest.fixture
def without_graphql_jwt(monkeypatch, settings):
    from django.urls import get_resolver
    from django.utils.module_loading import import_string

    # The test URLs and the example's schema use graphql_jwt's views and mutations:
    # loaded first, as a service without the package would have no such imports.
    assert get_resolver().url_patterns
    assert import_string(settings.GRAPHENE["SCHEMA"])
    monkeypatch.setitem(sys.modules, "graphql_jwt", None)
    django_graphql_jwt.names.cache_clear()
    assert not django_graphql_jwt.installed()
    yield
    monkeypatch.undo()
    django_graphql_jwt.names.cache_clear()


def messages(tags=None):
    return [m for m in checks.run_checks(tags=tags) if m.id.startswith("gql_audit.")]


def test_installed_here():
    """The dev extra installs it: the rest of the suite runs graphql_jwt's side."""
    assert django_graphql_jwt.installed()
    assert E054 not in [m.id for m in messages()]


def test_default_authenticator_without_the_package_is_a_check_error(without_graphql_jwt):
    found = [m for m in messages() if m.id == E054]
    assert len(found) == 1
    assert "django-graphql-jwt is not installed" in found[0].msg
    assert "gql_audit.auth.jwt_authenticator" in found[0].msg
    assert "pip install 'gql-audit[graphql-jwt]'" in found[0].hint
    # W001 is about graphql_jwt's own setting: not said of a package that is not there.
    assert "gql_audit.W001" not in [m.id for m in messages()]


def test_every_setting_naming_the_package_is_reported(without_graphql_jwt, settings):
    settings.GQL_AUDIT = {**settings.GQL_AUDIT, "AUTHENTICATOR": None}
    assert E054 not in [m.id for m in messages()]
    settings.AUTHENTICATION_BACKENDS = ["graphql_jwt.backends.JSONWebTokenBackend"]
    settings.GRAPHENE = {
        **settings.GRAPHENE,
        "MIDDLEWARE": ["gql_audit.graphene.AuditMiddleware", "graphql_jwt.middleware.JSONWebTokenMiddleware"],
    }
    found = sorted(m.msg for m in messages() if m.id == E054)
    assert len(found) == 2
    assert "AUTHENTICATION_BACKENDS lists 'graphql_jwt.backends.JSONWebTokenBackend'" in found[0]
    assert "GRAPHENE['MIDDLEWARE'] lists 'graphql_jwt.middleware.JSONWebTokenMiddleware'" in found[1]


def test_bearer_authenticator_without_the_package_has_no_check_error(without_graphql_jwt, settings):
    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["HS256"], "key": settings.SECRET_KEY, "user_claim": "username"},
    }
    assert [m.id for m in messages()] == []


@pytest.mark.django_db
def test_default_authenticator_without_the_package_cannot_decide(without_graphql_jwt, client, users):
    """Not a bad token: the service is missing a package, so AUTH_UNAVAILABLE on
    private fields, public ones resolve, and the event names the package."""
    response = post_graphql(client, QUERY, token=make_token("alice"))
    body = response.json()
    assert response.status_code == 200
    assert body["data"]["serviceStatus"] == {"ok": True}
    assert len(body["data"]["publicDocuments"]) == 3
    assert codes(body) == {("me",): "AUTH_UNAVAILABLE"}
    event = SecurityEvent.objects.get()
    assert event.kind == "db_error"
    assert "django-graphql-jwt is not installed" in event.details["reason"]


@pytest.mark.django_db
def test_resolver_errors_are_classified_without_the_package(without_graphql_jwt, gql, users, settings):
    from django.contrib.auth import get_user_model

    settings.GQL_AUDIT = {
        **settings.GQL_AUDIT,
        "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
        "JWT": {"algorithms": ["HS256"], "key": settings.SECRET_KEY, "user_claim": "username"},
        "MASK_ERRORS": "all",
    }
    assert get_user_model().objects.filter(username="alice").exists()
    body = gql('{ me { username } document(id: "bm9wZQ==") { title } }', headers={"Authorization": "Bearer x.y.z"})
    assert codes(body) == {("me",): "TOKEN_INVALID", ("document",): "TOKEN_INVALID"}
    assert not SecurityEvent.objects.filter(kind="graphql_error").exists()
    token = make_token("alice")
    body = gql('{ me { username } document(id: "bm9wZQ==") { title } }', headers={"Authorization": f"Bearer {token}"})
    assert body["data"]["me"] == {"username": "alice"}
    # Masked (it is no GraphQLError raised on purpose, nor graphql_jwt's), and on record.
    assert codes(body) == {("document",): "INTERNAL_ERROR"}
    assert SecurityEvent.objects.filter(kind="graphql_error", path="document").exists()


# --- a virtual environment that never had the package ------------------------------------

ROOT = Path(__file__).resolve().parent.parent
SERVICE = {
    "manage.py": """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "svc.settings")
from django.core.management import execute_from_command_line
execute_from_command_line(sys.argv)
""",
    "svc/__init__.py": "",
    "svc/apps.py": """
from django.apps import AppConfig

class SvcConfig(AppConfig):
    name = "svc"

    def ready(self):
        from auditlog.registry import auditlog
        from django.contrib.auth import get_user_model

        auditlog.register(get_user_model(), exclude_fields=["password", "last_login"])
""",
    "svc/settings.py": """
from pathlib import Path

SECRET_KEY = "a-secret-key-for-the-minimal-service-0123456789"
JWT_KEY = "a-shared-secret-of-forty-bytes-0123456789"
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.auth", "django.contrib.contenttypes", "django.contrib.sessions",
    "graphene_django", "auditlog", "gql_audit", "svc",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "gql_audit.middleware.AuditContextMiddleware",
]
ROOT_URLCONF = "svc.urls"
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(Path(__file__).parent / "db.sqlite3")}}
GRAPHENE = {
    "SCHEMA": "svc.schema.schema",
    "MIDDLEWARE": ["gql_audit.graphene.AuditMiddleware"],
    "ATOMIC_MUTATIONS": True,
}
GQL_AUDIT = {
    "AUTHENTICATOR": "gql_audit.auth.bearer_authenticator",
    "PUBLIC_FIELDS": ["Query.status"],
    "JWT": {"algorithms": ["HS256"], "key": JWT_KEY, "issuer": "https://idp.test", "audience": "svc"},
}
""",
    "svc/settings_default.py": """
from svc.settings import *

GQL_AUDIT = {k: v for k, v in GQL_AUDIT.items() if k != "AUTHENTICATOR"}
""",
    "svc/schema.py": """
import graphene
from django.contrib.auth import get_user_model
from graphene_django import DjangoObjectType


class UserType(DjangoObjectType):
    class Meta:
        model = get_user_model()
        fields = ("username",)


class Query(graphene.ObjectType):
    status = graphene.String()
    me = graphene.Field(UserType)

    def resolve_status(root, info):
        return "ok"

    def resolve_me(root, info):
        return info.context.user


schema = graphene.Schema(query=Query)
""",
    "svc/urls.py": """
from django.urls import path
from django.views.decorators.csrf import csrf_exempt
from graphene_django.views import GraphQLView

urlpatterns = [path("graphql/", csrf_exempt(GraphQLView.as_view()))]
""",
    "ask.py": """
import datetime, importlib.util, json, os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "svc.settings")
django.setup()

import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client

from gql_audit.models import SecurityEvent

call_command("migrate", verbosity=0)
get_user_model().objects.create_user("alice")
now = datetime.datetime.now(datetime.UTC)
claims = {"sub": "alice", "iss": "https://idp.test", "aud": "svc", "exp": now + datetime.timedelta(minutes=5)}
token = jwt.encode(claims, settings.JWT_KEY, algorithm="HS256")
expired = jwt.encode({**claims, "exp": now - datetime.timedelta(minutes=5)}, settings.JWT_KEY, algorithm="HS256")
client = Client()


def ask(header=None):
    extra = {"HTTP_AUTHORIZATION": header} if header else {}
    response = client.post("/graphql/", json.dumps({"query": "{ status me { username } }"}),
                           content_type="application/json", **extra)
    return response.status_code, response.json()


print(json.dumps({
    "graphql_jwt": importlib.util.find_spec("graphql_jwt") is not None,
    "valid": ask("Bearer " + token),
    "none": ask(),
    "expired": ask("Bearer " + expired),
    "forged": ask("Bearer " + jwt.encode(claims, "another-secret-of-forty-bytes-0123456789", algorithm="HS256")),
    "events": sorted(SecurityEvent.objects.values_list("kind", flat=True)),
}))
""",
}


def run(command, cwd, **env):
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=900, env={**os.environ, **env})


@pytest.mark.venv
def test_without_the_extra_in_a_fresh_venv(tmp_path):
    """``pip install`` of this checkout with no extra into a new virtual environment,
    then a minimal service on bearer_authenticator: its checks pass, a request
    authenticates, and the default authenticator's missing package is check E054."""
    venv = tmp_path / "venv"
    done = run([sys.executable, "-m", "venv", str(venv)], tmp_path)
    assert done.returncode == 0, done.stderr
    python = str(venv / "bin" / "python")
    done = run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    service = tmp_path / "service"
    for name, text in SERVICE.items():
        (service / name).parent.mkdir(parents=True, exist_ok=True)
        (service / name).write_text(text.lstrip())
    env = {"PYTHONPATH": str(service), "DJANGO_SETTINGS_MODULE": "svc.settings"}

    done = run([python, "manage.py", "check", "--fail-level", "WARNING"], service, **env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "System check identified no issues" in done.stdout

    done = run([python, "ask.py"], service, **env)
    assert done.returncode == 0, done.stderr[-3000:]
    answers = json.loads(done.stdout.strip().splitlines()[-1])
    assert answers["graphql_jwt"] is False
    assert answers["valid"] == [200, {"data": {"status": "ok", "me": {"username": "alice"}}}]
    for case, code in [("none", "UNAUTHENTICATED"), ("expired", "TOKEN_EXPIRED"), ("forged", "TOKEN_INVALID")]:
        status, body = answers[case]
        assert status == 200
        assert body["data"] == {"status": "ok", "me": None}
        assert [e["extensions"]["code"] for e in body["errors"]] == [code]
    assert answers["events"] == ["token_expired", "token_invalid", "unauthenticated"]

    done = run([python, "manage.py", "check"], service, **{**env, "DJANGO_SETTINGS_MODULE": "svc.settings_default"})
    assert done.returncode != 0
    assert "gql_audit.E054" in done.stderr
    assert "pip install 'gql-audit[graphql-jwt]'" in done.stderr
