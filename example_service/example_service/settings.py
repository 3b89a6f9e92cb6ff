"""Settings of the gql_audit example service: SQLite, nothing else to install."""

import os
from datetime import timedelta
from pathlib import Path

from gql_audit.logging import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("EXAMPLE_SECRET_KEY", "example-service-not-secret-change-me-0123456789")
DEBUG = os.environ.get("EXAMPLE_DEBUG", "1") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "[::1]"]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "graphene_django",
    "auditlog",
    "gql_audit",
    "example_service",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "gql_audit.middleware.AuditContextMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "example_service.urls"
WSGI_APPLICATION = "example_service.wsgi.application"
ASGI_APPLICATION = "example_service.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("EXAMPLE_SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        # WAL: readers do not wait for the audit write, and a commit costs an append.
        "OPTIONS": {"init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"},
    }
}
# postgres://user:password@host:5432/name or cockroach://user@host:26257/name?sslmode=verify-full
if os.environ.get("DATABASE_URL"):
    import dj_database_url

    DATABASES["default"] = dj_database_url.parse(os.environ["DATABASE_URL"], conn_max_age=60, conn_health_checks=True)

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True
TIME_ZONE = "UTC"
STATIC_URL = "static/"

AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"]

GRAPHENE = {
    "SCHEMA": "example_service.schema.schema",
    "MIDDLEWARE": ["gql_audit.graphene.AuditMiddleware"],
    # A mutation and its auditlog entries are committed together or not at all.
    "ATOMIC_MUTATIONS": True,
}

GRAPHQL_JWT = {
    "JWT_VERIFY_EXPIRATION": True,
    "JWT_EXPIRATION_DELTA": timedelta(minutes=15),
}

# Every log line is one JSON object carrying the request id, actor and operation.
LOGGING = logging_config(os.environ.get("EXAMPLE_LOG_LEVEL", "INFO"))

GQL_AUDIT = {
    "PUBLIC_FIELDS": [
        "Query.serviceStatus",
        "Mutation.tokenAuth",
        "Mutation.verifyToken",
        "Mutation.refreshToken",
    ],
    # The development server is reached directly; behind a proxy, list its address.
    "TRUSTED_PROXIES": [],
    "APPLICATION_NAME": "example-service",
    "SUBJECT_OBJECTS": "example_service.subjects.subject_objects",  # manage.py gql_audit_report --subject alice
    # Protections on and enforced, with limits GraphiQL's own queries pass (its introspection
    # query has depth 15 and about 230 fields, and costs nothing): see docs/protections.md.
    "QUERY_LIMITS": {
        "max_depth": 15,
        "max_aliases": 20,
        "max_fields": 300,
        "max_directives": 20,
        "max_tokens": 3000,
        "max_cost": 5000,  # a page of documents with their owners: 200; nested lists: refused
        "max_request_bytes": 200_000,
        "max_batch": 10,
        "mode": "enforce",
    },
    "THROTTLE": {
        "login": "5/300s",
        "login_username": "30/3600s",
        "auth_failures": "30/60s",
        "operations": "600/60s",
    },
}
# runserver is one process: its local-memory cache is every worker's. Behind gunicorn or
# uvicorn, point THROTTLE_CACHE at a shared cache (Redis) and drop this line.
SILENCED_SYSTEM_CHECKS = ["gql_audit.W020"]
