"""The ``GQL_AUDIT`` settings dict, read lazily.

Nothing here touches ``django.conf.settings`` at import time. Values are read on
first access and cached; ``setting_changed`` (``override_settings`` in tests)
clears the cache in place and bumps :attr:`Settings.generation`, which the
Graphene middleware compares to know when its per-schema rules are stale.
"""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

SETTINGS_NAME = "GQL_AUDIT"

DEFAULTS: dict[str, Any] = {
    "AUTHENTICATOR": "gql_audit.auth.jwt_authenticator",
    "PUBLIC_FIELDS": (),
    "INTROSPECTION": "public",
    "REQUEST_ID_HEADER": "X-Request-ID",
    "TRUSTED_PROXIES": (),
    "CLIENT_CERT_SOURCE": None,
    "ACCESS_LOG": True,
    "ACCESS_STORE": "gql_audit",
    "AUDIT_DATABASE": None,
    "FAIL_CLOSED": False,
    "WRITE_AFTER_RESPONSE": False,
    "INSTRUMENT_SCHEMA": True,
    "TAMPER_EVIDENCE": None,
    "REDACT_KEYS": (
        "pass",
        "secret",
        "token",
        "auth",
        "cookie",
        "session",
        "api[-_]?key",
        "credential",
        "private[-_]?key",
    ),
    "REDACT_MAX_LENGTH": 1024,
    "APPLICATION_NAME": None,
    "SQL_COMMENT": False,
    "CLIENT_CERT_HEADER": None,
    "CLIENT_VERIFY_HEADER": None,
    "REQUIRE_CLIENT_CERT": False,
    "CLIENT_CERT_IDENTITY": None,
    "EVENT_SINK": "database",
    "REQUEST_LOG": True,
    "LOG_VARIABLE_VALUES": False,
    "MASK_ERRORS": "database",
    "SUBJECT_OBJECTS": None,
    "QUERY_LIMITS": None,
    "PERSISTED_OPERATIONS": None,
    "THROTTLE": None,
    "THROTTLE_CACHE": "default",
    # gql_audit.auth.bearer_authenticator: how a bearer JWT is verified.
    "JWT": None,
    # Seconds a request may wait on the throttle cache before it passes unthrottled.
    "THROTTLE_TIMEOUT": 0.25,
    # Export to a SIEM (an outbox shipped by gql_audit_ship), and Prometheus metrics.
    "EXPORT": None,
    "METRICS": False,
    # Pauses between retries of a transaction on 40001 (gql_audit.db). CockroachDB's documented
    # client-side retry example waits 2 ** retry * 0.1 * (random() + 0.5) seconds.
    "RETRY_BACKOFF": {"base": 0.1, "jitter": 0.5, "max_wait": 5.0},
    # Signed checkpoints of an append-only log of every record (gql_audit_checkpoint).
    "CHECKPOINTS": None,
}

#: Settings whose value may be a dotted import path, resolved on first use.
IMPORT_STRINGS = frozenset({"AUTHENTICATOR", "CLIENT_CERT_IDENTITY"})

INTROSPECTION_CHOICES = ("public", "authenticated", "disabled")
EVENT_SINKS = ("database", "logs", "both")
MASK_ERRORS_CHOICES = ("database", "all", "none")
ACCESS_STORES = ("gql_audit", "auditlog")
QUERY_LIMIT_KEYS = (
    "max_depth",
    "max_aliases",
    "max_fields",
    "max_tokens",
    "max_directives",
    "max_cost",
    "max_request_bytes",
    "max_batch",
)
#: ``QUERY_LIMITS`` keys that tune the cost estimate rather than limit anything.
QUERY_COST_KEYS = ("default_list_size", "costs")
QUERY_LIMIT_MODES = ("enforce", "measure")
PERSISTED_MODES = ("observe", "enforce")
#: ``THROTTLE`` keys: what is counted, per what.
THROTTLE_RATES = ("login", "login_username", "login_address", "auth_failures", "operations")
CLIENT_CERT_SOURCES = (None, "nginx", "envoy", "traefik", "aws-alb", "rfc9440", "environ")
#: ``EXPORT["format"]`` values.
EXPORT_FORMATS = ("ocsf", "json")


class Settings:
    """Attribute access to ``settings.GQL_AUDIT`` merged over :data:`DEFAULTS`."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}
        self.generation = 0

    def user_settings(self) -> dict[str, Any]:
        from django.conf import settings

        value = getattr(settings, SETTINGS_NAME, None)
        return value if isinstance(value, dict) else {}

    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(f"Unknown {SETTINGS_NAME} setting: {name!r}")
        try:
            return self._cache[name]
        except KeyError:
            pass
        value = self.user_settings().get(name, DEFAULTS[name])
        if name in IMPORT_STRINGS and isinstance(value, str):
            value = import_string(value)
        self._cache[name] = value
        return value

    def derived(self, key: str, build: Any) -> Any:
        """A value computed from settings, cached until the next :meth:`reload`."""
        cache_key = f"derived:{key}"
        try:
            return self._cache[cache_key]
        except KeyError:
            value = self._cache[cache_key] = build()
            return value

    def reload(self) -> None:
        self._cache.clear()
        self.generation += 1


conf = Settings()

#: Django settings outside ``GQL_AUDIT`` whose change invalidates cached values.
_WATCHED = frozenset({SETTINGS_NAME, "GRAPHQL_JWT", "AUTH_USER_MODEL", "AUDITLOG_LOGENTRY_MODEL", "CACHES"})


@receiver(setting_changed)
def _reload_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting in _WATCHED:
        conf.reload()
