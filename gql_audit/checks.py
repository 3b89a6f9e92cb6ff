"""System checks: a misconfiguration is reported at start-up, in words.

Ids are stable; docs/checks.md lists them.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from django.apps import apps
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from gql_audit.auth import django_graphql_jwt
from gql_audit.conf import (
    ACCESS_STORES,
    CLIENT_CERT_SOURCES,
    DEFAULTS,
    EVENT_SINKS,
    INTROSPECTION_CHOICES,
    MASK_ERRORS_CHOICES,
    SETTINGS_NAME,
    conf,
)
from gql_audit.net import REQUEST_ID_PATTERN, parse_networks

OUR_MIDDLEWARE = "gql_audit.middleware.AuditContextMiddleware"
OUR_GRAPHENE_MIDDLEWARE = "gql_audit.graphene.AuditMiddleware"
AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"
AUDITLOG_MIDDLEWARE = "auditlog.middleware.AuditlogMiddleware"
JWT_MIDDLEWARE = "graphql_jwt.middleware.JSONWebTokenMiddleware"


def _class_of(entry: Any) -> type | None:
    """The class a middleware setting entry names (string, class or instance)."""
    if isinstance(entry, str):
        try:
            entry = import_string(entry)
        except ImportError:
            return None
    if inspect.isclass(entry):
        return entry
    return type(entry) if entry is not None else None


def _index_of(entries: list[Any], path: str) -> int | None:
    try:
        wanted = import_string(path)
    except ImportError:
        return None
    for index, entry in enumerate(entries):
        cls = _class_of(entry)
        if cls is not None and issubclass(cls, wanted):
            return index
    return None


def _settings() -> Any:
    from django.conf import settings

    return settings


@register(Tags.compatibility)
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return [Error(f"{SETTINGS_NAME} must be a dict, not {type(raw).__name__}.", id="gql_audit.E001")]
    errors: list[Any] = []
    for key in sorted(set(raw) - set(DEFAULTS)):
        errors.append(
            Error(
                f"{SETTINGS_NAME} has an unknown key {key!r}.",
                hint="Known keys: " + ", ".join(sorted(DEFAULTS)) + ". See docs/settings.md.",
                id="gql_audit.E001",
            )
        )
    errors.extend(_check_values(raw))
    if raw.get("WRITE_AFTER_RESPONSE") and raw.get("FAIL_CLOSED"):
        errors.append(
            Error(
                f"{SETTINGS_NAME}['WRITE_AFTER_RESPONSE'] and ['FAIL_CLOSED'] cannot both be on.",
                hint="FAIL_CLOSED withholds the response when the records cannot be written; "
                "WRITE_AFTER_RESPONSE writes them after the client has the response. Choose one.",
                id="gql_audit.E009",
            )
        )
    return errors


def _is_field_name(name: object) -> bool:
    return isinstance(name, str) and name.count(".") == 1 and all(name.split("."))


def _root_field_hint(graphql_schema: Any, name: str) -> str:
    """What a ``PUBLIC_FIELDS`` entry naming no root field could have meant: its camelCase
    form, or the root fields its type has."""
    type_name, field = name.split(".")
    roots = {
        root.name: root
        for root in (graphql_schema.query_type, graphql_schema.mutation_type, graphql_schema.subscription_type)
        if root is not None
    }
    root = roots.get(type_name)
    if root is None:
        return f"Root types are named as the schema names them: {', '.join(sorted(roots))}."
    first, *rest = field.split("_")
    camel = first + "".join(part[:1].upper() + part[1:] for part in rest)
    if rest and camel in root.fields:
        return f"Use GraphQL names (camelCase): {type_name}.{camel}."
    known = sorted(root.fields)
    listed = ", ".join(known[:12]) + (f" and {len(known) - 12} more" if len(known) > 12 else "")
    return f"{type_name}'s fields are: {listed}."


def _invalid(key: str, problem: str) -> Error:
    return Error(f"{SETTINGS_NAME}[{key!r}] {problem}", hint="See docs/settings.md.", id="gql_audit.E002")


def _check_values(raw: dict[str, Any]) -> list[Any]:
    errors = []
    if "INTROSPECTION" in raw and raw["INTROSPECTION"] not in INTROSPECTION_CHOICES:
        errors.append(_invalid("INTROSPECTION", f"must be one of {', '.join(INTROSPECTION_CHOICES)}."))
    if "EVENT_SINK" in raw and raw["EVENT_SINK"] not in EVENT_SINKS:
        errors.append(_invalid("EVENT_SINK", f"must be one of {', '.join(EVENT_SINKS)}."))
    if "ACCESS_STORE" in raw and raw["ACCESS_STORE"] not in ACCESS_STORES:
        errors.append(_invalid("ACCESS_STORE", f"must be one of {', '.join(ACCESS_STORES)}."))
    if "MASK_ERRORS" in raw and raw["MASK_ERRORS"] not in MASK_ERRORS_CHOICES:
        errors.append(_invalid("MASK_ERRORS", f"must be one of {', '.join(MASK_ERRORS_CHOICES)}."))
    if "CLIENT_CERT_SOURCE" in raw and raw["CLIENT_CERT_SOURCE"] not in CLIENT_CERT_SOURCES:
        names = ", ".join(repr(s) for s in CLIENT_CERT_SOURCES)
        errors.append(_invalid("CLIENT_CERT_SOURCE", f"must be one of {names}."))
    header = raw.get("REQUEST_ID_HEADER", DEFAULTS["REQUEST_ID_HEADER"])
    if not isinstance(header, str) or not REQUEST_ID_PATTERN.fullmatch(header) or ":" in header:
        errors.append(_invalid("REQUEST_ID_HEADER", "must be an HTTP header name such as 'X-Request-ID'."))
    if "TRUSTED_PROXIES" in raw:
        try:
            parse_networks(raw["TRUSTED_PROXIES"])
        except ValueError as exc:
            errors.append(_invalid("TRUSTED_PROXIES", f"is invalid: {exc}."))
    public_fields = raw.get("PUBLIC_FIELDS", ())
    if isinstance(public_fields, str) or not isinstance(public_fields, (list, tuple, set, frozenset)):
        errors.append(_invalid("PUBLIC_FIELDS", "must be a list of 'Type.field' strings."))
    else:
        for name in public_fields:
            if not _is_field_name(name):
                errors.append(_invalid("PUBLIC_FIELDS", f"entry {name!r} is not of the form 'Type.field'."))
    for key in ("CLIENT_CERT_HEADER", "CLIENT_VERIFY_HEADER"):
        value = raw.get(key)
        if value is not None and (not isinstance(value, str) or not REQUEST_ID_PATTERN.fullmatch(value)):
            errors.append(_invalid(key, "must be an HTTP header name or None."))
    for key in ("CLIENT_CERT_IDENTITY", "SUBJECT_OBJECTS"):
        value = raw.get(key)
        if isinstance(value, str):
            try:
                import_string(value)
            except ImportError as exc:
                errors.append(_invalid(key, f"cannot be imported: {exc}."))
        elif value is not None and not callable(value):
            errors.append(_invalid(key, "must be a callable, an import path to one, or None."))
    audit_database = raw.get("AUDIT_DATABASE")
    if audit_database is not None:
        from django.db import connections

        if not isinstance(audit_database, str) or audit_database not in connections:
            errors.append(_invalid("AUDIT_DATABASE", "must be None or an alias in DATABASES."))
    if "INSTRUMENT_SCHEMA" in raw and not isinstance(raw["INSTRUMENT_SCHEMA"], bool):
        errors.append(_invalid("INSTRUMENT_SCHEMA", "must be True or False."))
    errors.extend(_check_tamper_evidence(raw.get("TAMPER_EVIDENCE")))
    errors.extend(_check_checkpoints(raw.get("CHECKPOINTS")))
    authenticator = raw.get("AUTHENTICATOR", DEFAULTS["AUTHENTICATOR"])
    if isinstance(authenticator, str):
        try:
            authenticator = import_string(authenticator)
        except ImportError as exc:
            errors.append(_invalid("AUTHENTICATOR", f"cannot be imported: {exc}."))
            authenticator = None
    if authenticator is not None and not callable(authenticator):
        errors.append(_invalid("AUTHENTICATOR", "must be a callable, an import path to one, or None."))
    return errors


#: The shortest sealing key accepted: HMAC-SHA256 wants as much secret as its output.
MIN_KEY_LENGTH = 32


def _check_tamper_evidence(value: Any) -> list[Any]:
    if value is None:
        return []
    name = "TAMPER_EVIDENCE"
    if not isinstance(value, dict):
        return [_invalid(name, "must be None or a dict with 'key' (and 'previous_keys').")]
    errors = [_invalid(name, f"has an unknown key {k!r}.") for k in sorted(set(value) - {"key", "previous_keys"})]
    from gql_audit.evidence.sealing import retirement

    previous = value.get("previous_keys") or []
    if not isinstance(previous, (list, tuple)):
        errors.append(_invalid(name, "['previous_keys'] must be a list of the keys used before."))
        previous = []
    keys = [value.get("key")]
    for entry in previous:
        if isinstance(entry, dict):
            if set(entry) - {"key", "until"} or retirement(entry.get("until")) is None:
                errors.append(
                    _invalid(name, "a previous key given as a dict takes 'key' and 'until' (a time with its offset).")
                )
            entry = entry.get("key")
        keys.append(entry)
    for key in keys:
        if not isinstance(key, str) or len(key) < MIN_KEY_LENGTH:
            errors.append(_invalid(name, f"keys must be strings of at least {MIN_KEY_LENGTH} characters."))
            break
    return errors


def _check_checkpoints(value: Any) -> list[Any]:
    """``CHECKPOINTS``: well formed, its public keys readable Ed25519 keys, its anchors of a
    known scheme. Not the signing key: only ``gql_audit_checkpoint`` may read it."""
    from gql_audit.evidence import anchors, log

    def error(problem: str) -> Error:
        return Error(f"{SETTINGS_NAME}['CHECKPOINTS'] {problem}", hint="See docs/evidence.md.", id="gql_audit.E031")

    try:
        settings = log.parse_settings(value)
    except ValueError as exc:
        return [error(f"{exc}.")]
    if settings is None:
        return []
    errors = []
    try:
        log.read_public_keys(settings.origin, settings.public_keys)
    except ValueError as exc:
        errors.append(error(f"['public_keys']: {exc}."))
    for url in settings.anchors:
        try:
            anchors.anchor(url)
        except ValueError as exc:
            errors.append(error(f"['anchors']: {exc}."))
    return errors


#: ``GQL_AUDIT["JWT"]`` problem topic -> its check id.
_BEARER_CHECKS = {
    "setting": "gql_audit.E050",
    "algorithms": "gql_audit.E051",
    "key": "gql_audit.E052",
    "weak_secret": "gql_audit.W050",
    "plain_http": "gql_audit.W051",
    "not_unique": "gql_audit.W052",
}
BEARER_AUTHENTICATOR = "gql_audit.auth.bearer_authenticator"


@register(Tags.security)
def check_bearer(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """GQL_AUDIT["JWT"]: how bearer_authenticator verifies tokens (a weak setting lets tokens through)."""
    from gql_audit.auth import bearer, bearer_authenticator

    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return []  # E001
    if raw.get("JWT") is None:
        if raw.get("AUTHENTICATOR") not in (BEARER_AUTHENTICATOR, bearer_authenticator):
            return []
        return [
            Error(
                f"{SETTINGS_NAME}['AUTHENTICATOR'] is bearer_authenticator, but {SETTINGS_NAME}['JWT'] is not set: "
                "no token can be verified.",
                hint="Set GQL_AUDIT['JWT'] = {'algorithms': [...], 'key' or 'jwks': ..., ...}. See docs/oidc.md.",
                id="gql_audit.E053",
            )
        ]
    found = []
    for problem in bearer.check(raw["JWT"]):
        level = Warning if problem.warning else Error
        found.append(level(problem.message, hint="See docs/oidc.md.", id=_BEARER_CHECKS[problem.topic]))
    return found


@register(Tags.compatibility)
def check_sealing_database(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """TAMPER_EVIDENCE seals change entries where it writes the other records: both on one database."""
    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict) or not isinstance(raw.get("TAMPER_EVIDENCE"), dict):
        return []
    from auditlog import get_logentry_model
    from django.db import connections, router

    ours = raw.get("AUDIT_DATABASE") or "default"
    theirs = router.db_for_write(get_logentry_model()) or "default"
    if ours not in connections or theirs not in connections:
        return []  # E002 names an unknown AUDIT_DATABASE; Django itself an unknown routed alias

    def where(alias: str) -> tuple[Any, ...]:
        found = connections.settings[alias]
        return tuple(found.get(key) for key in ("ENGINE", "NAME", "HOST", "PORT"))

    if ours == theirs or where(ours) == where(theirs):
        return []
    return [
        Error(
            f"TAMPER_EVIDENCE seals records on AUDIT_DATABASE {ours!r}, but django-auditlog writes its "
            f"LogEntry rows to {theirs!r}: change entries could not be sealed, and gql_audit_verify "
            "would report them.",
            hint="Route auditlog's LogEntry to the database AUDIT_DATABASE names (see docs/evidence.md).",
            id="gql_audit.E030",
        )
    ]


@register(Tags.compatibility)
def check_middleware(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    settings = _settings()
    middleware = list(getattr(settings, "MIDDLEWARE", None) or [])
    errors: list[Any] = []
    ours = _index_of(middleware, OUR_MIDDLEWARE)
    if _index_of(middleware, AUDITLOG_MIDDLEWARE) is not None:
        errors.append(
            Error(
                "auditlog's AuditlogMiddleware is installed beside gql_audit's AuditContextMiddleware.",
                hint=f"Remove {AUDITLOG_MIDDLEWARE!r}: {OUR_MIDDLEWARE!r} replaces it, and the two "
                "would set the actor twice with different users.",
                id="gql_audit.E003",
            )
        )
    if ours is None:
        errors.append(
            Error(
                f"{OUR_MIDDLEWARE!r} is not in MIDDLEWARE.",
                hint=f"Add it right after {AUTH_MIDDLEWARE!r}.",
                id="gql_audit.E004",
            )
        )
    else:
        auth = _index_of(middleware, AUTH_MIDDLEWARE)
        if auth is None or auth > ours:
            errors.append(
                Error(
                    f"{OUR_MIDDLEWARE!r} must come after {AUTH_MIDDLEWARE!r} in MIDDLEWARE.",
                    hint="It replaces request.user set by AuthenticationMiddleware with the "
                    "token's user; placed before it, its user would be overwritten.",
                    id="gql_audit.E005",
                )
            )
    graphene = getattr(settings, "GRAPHENE", None) or {}
    graphene_middleware = list(graphene.get("MIDDLEWARE") or [])
    ours_g = _index_of(graphene_middleware, OUR_GRAPHENE_MIDDLEWARE)
    if ours_g is None:
        errors.append(
            Error(
                f"{OUR_GRAPHENE_MIDDLEWARE!r} is not in GRAPHENE['MIDDLEWARE'].",
                hint="Without it every field resolves whatever the token, and no GraphQL "
                "error carries TOKEN_EXPIRED / TOKEN_INVALID / UNAUTHENTICATED.",
                id="gql_audit.E006",
            )
        )
    else:
        jwt = _index_of(graphene_middleware, JWT_MIDDLEWARE)
        if jwt is not None and jwt < ours_g:
            errors.append(
                Error(
                    f"{OUR_GRAPHENE_MIDDLEWARE!r} runs before {JWT_MIDDLEWARE!r}.",
                    hint="graphql-core runs the last listed middleware first: list "
                    "JSONWebTokenMiddleware after AuditMiddleware so the user it sets is "
                    "seen when fields are checked.",
                    id="gql_audit.E007",
                )
            )
    return errors


@register(Tags.compatibility)
def check_dependencies(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    errors: list[Any] = []
    if not apps.is_installed("auditlog"):
        errors.append(
            Error(
                "'auditlog' is not in INSTALLED_APPS.",
                hint="gql_audit writes django-auditlog entries.",
                id="gql_audit.E008",
            )
        )
    elif not _registered_models():
        errors.append(
            Warning(
                "No model is registered with django-auditlog: the audit trail will hold no reads and no changes.",
                hint="Register the models that hold personal or sensitive data, e.g. auditlog.register(Profile) "
                "in your AppConfig.ready(), or set AUDITLOG_INCLUDE_ALL_MODELS = True. See docs/tutorial.md.",
                id="gql_audit.W005",
            )
        )
    if not apps.is_installed("graphene_django"):
        errors.append(
            Error(
                "'graphene_django' is not in INSTALLED_APPS.",
                hint="Add it: graphene-django's GraphiQL page needs its templates and static files "
                "(without them it answers 500).",
                id="gql_audit.E010",
            )
        )
    settings = _settings()
    graphene_middleware = list((getattr(settings, "GRAPHENE", None) or {}).get("MIDDLEWARE") or [])
    uses_jwt = (
        conf.user_settings().get("AUTHENTICATOR", DEFAULTS["AUTHENTICATOR"]) == DEFAULTS["AUTHENTICATOR"]
        or _index_of(graphene_middleware, JWT_MIDDLEWARE) is not None
    )
    if not _mutations_atomic(settings):
        errors.append(
            Warning(
                "GraphQL mutations do not run in a transaction: when a change entry cannot be written, "
                "the change is kept without it.",
                hint="Set ATOMIC_MUTATIONS = True in GRAPHENE (or in DATABASES['default']), or "
                "ATOMIC_REQUESTS = True in DATABASES['default'], so that a mutation and its auditlog "
                "entries are committed together or not at all.",
                id="gql_audit.W004",
            )
        )
    errors.extend(_check_graphql_jwt_installed(settings))
    jwt_settings = getattr(settings, "GRAPHQL_JWT", None) or {}
    if uses_jwt and django_graphql_jwt.installed() and not jwt_settings.get("JWT_VERIFY_EXPIRATION", False):
        errors.append(
            Warning(
                "GRAPHQL_JWT['JWT_VERIFY_EXPIRATION'] is off: tokens never expire.",
                hint="Set it to True (django-graphql-jwt's default is False); expired tokens "
                "are then reported as TOKEN_EXPIRED.",
                id="gql_audit.W001",
            )
        )
    return errors


def _check_graphql_jwt_installed(settings: Any) -> list[Any]:
    """E054: a setting names django-graphql-jwt (the default AUTHENTICATOR does), which is not installed."""
    if django_graphql_jwt.installed():
        return []
    from gql_audit.auth import jwt_authenticator

    uses = []
    authenticator = conf.user_settings().get("AUTHENTICATOR", DEFAULTS["AUTHENTICATOR"])
    if authenticator in (DEFAULTS["AUTHENTICATOR"], jwt_authenticator):
        uses.append(f"{SETTINGS_NAME}['AUTHENTICATOR'] is {DEFAULTS['AUTHENTICATOR']!r} (the default)")
    graphene = getattr(settings, "GRAPHENE", None) or {}
    for name, entries in (
        ("INSTALLED_APPS", getattr(settings, "INSTALLED_APPS", None)),
        ("MIDDLEWARE", getattr(settings, "MIDDLEWARE", None)),
        ("AUTHENTICATION_BACKENDS", getattr(settings, "AUTHENTICATION_BACKENDS", None)),
        ("GRAPHENE['MIDDLEWARE']", graphene.get("MIDDLEWARE")),
    ):
        uses.extend(
            f"{name} lists {entry!r}"
            for entry in entries or ()
            if isinstance(entry, str) and entry.split(".")[0] == "graphql_jwt"
        )
    return [
        Error(
            f"{django_graphql_jwt.DISTRIBUTION} is not installed, but {use}.",
            hint=f"Install it with the extra: pip install 'gql-audit[{django_graphql_jwt.EXTRA}]'; or verify "
            "tokens without it: AUTHENTICATOR 'gql_audit.auth.bearer_authenticator' with GQL_AUDIT['JWT'] "
            "(see docs/oidc.md).",
            id="gql_audit.E054",
        )
        for use in uses
    ]


def _registered_models() -> list[Any]:
    from auditlog.registry import auditlog

    models: list[Any] = auditlog.get_models()
    return models


def _mutations_atomic(settings: Any) -> bool:
    """Whether graphene-django runs mutations in a transaction of the default database."""
    default = (getattr(settings, "DATABASES", None) or {}).get("default") or {}
    graphene = getattr(settings, "GRAPHENE", None) or {}
    return any(
        value is True
        for value in (default.get("ATOMIC_REQUESTS"), default.get("ATOMIC_MUTATIONS"), graphene.get("ATOMIC_MUTATIONS"))
    )


@register(Tags.compatibility)
def check_schema(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """Check the configured schema against the visibility rules."""
    schema_path = (getattr(_settings(), "GRAPHENE", None) or {}).get("SCHEMA")
    if schema_path is None:
        return []  # the schema is given to the view itself
    try:
        schema: Any = import_string(schema_path) if isinstance(schema_path, str) else schema_path
        graphql_schema = schema.graphql_schema
    except Exception as exc:  # noqa: BLE001 - the service's own module: any error it raises
        # graphene-django itself only fails at the first request, with a 500.
        problem = f"{type(exc).__name__}: {exc}"[:300]
        return [
            Error(
                f"GRAPHENE['SCHEMA'] = {schema_path!r} cannot be loaded ({problem}).",
                hint="Name a graphene Schema by its import path, e.g. 'myservice.schema.schema'.",
                id="gql_audit.E011",
            )
        ]
    from gql_audit.visibility import build_rules

    raw = conf.user_settings().get("PUBLIC_FIELDS", ())
    try:
        rules = build_rules(graphql_schema, raw if isinstance(raw, (list, tuple, set, frozenset)) else ())
    except TypeError:
        return []
    warnings: list[Any] = [
        Warning(
            f"{SETTINGS_NAME}['PUBLIC_FIELDS'] names {name!r}, which is not a root field of "
            f"{schema_path!r}; it stays private.",
            hint=_root_field_hint(graphql_schema, name),
            id="gql_audit.W002",
        )
        for name in rules.unknown_public
        if _is_field_name(name)  # malformed entries are E002's
    ]
    warnings.extend(
        Warning(
            f"{name} requires authentication but is declared Non-Null: when it is denied, "
            "GraphQL nulls its parent too (for a root field, the whole 'data').",
            hint="Declare fields that can be denied as nullable.",
            id="gql_audit.W003",
        )
        for name in rules.non_null_guarded
    )
    return warnings


# -- EXPORT and METRICS ------------------------------------------------------------------------


@register(Tags.compatibility)
def check_export(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """EXPORT: a dict with a known format and sinks that parse; METRICS: prometheus_client installed."""
    from importlib.util import find_spec

    from gql_audit.conf import EXPORT_FORMATS

    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return []  # E001
    errors: list[Any] = []
    export = raw.get("EXPORT")

    def error(problem: str) -> Error:
        return Error(f"{SETTINGS_NAME}['EXPORT'] {problem}", hint="See docs/export.md.", id="gql_audit.E040")

    if export is not None:
        if not isinstance(export, dict):
            return [error("must be a dict or None.")]
        unknown = set(export) - {"format", "sinks"}
        if unknown:
            errors.append(error(f"has unknown key(s) {sorted(unknown)}; known: format, sinks."))
        if export.get("format", "ocsf") not in EXPORT_FORMATS:
            errors.append(error(f"'format' is one of {', '.join(EXPORT_FORMATS)}, not {export.get('format')!r}."))
        sinks = export.get("sinks")
        if not isinstance(sinks, list | tuple) or not sinks:
            errors.append(error("'sinks' is a non-empty list of sink URLs."))
        else:
            from gql_audit.export.sinks import parse_spec

            for entry in sinks:
                try:
                    parse_spec(entry)
                except (ValueError, TypeError) as exc:
                    errors.append(error(f"sink: {exc}"))
    if raw.get("METRICS") and find_spec("prometheus_client") is None:
        errors.append(
            Error(
                f"{SETTINGS_NAME}['METRICS'] is on, but prometheus_client is not installed.",
                hint="pip install 'gql-audit[prometheus]' (see docs/metrics.md).",
                id="gql_audit.E041",
            )
        )
    return errors


# --- Databases: what CockroachDB needs (database checks: run by migrate and check --database) ---


@register(Tags.compatibility)
def check_retry_backoff(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """``RETRY_BACKOFF``: seconds ``base`` > 0, ``max_wait`` >= 0, a ``jitter`` fraction in [0, 1]."""
    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict) or "RETRY_BACKOFF" not in raw:
        return []
    value = raw["RETRY_BACKOFF"]
    known = DEFAULTS["RETRY_BACKOFF"]
    shape = "must be a dict of 'base' and 'max_wait' (seconds) and 'jitter' (a fraction from 0 to 1)."
    if not isinstance(value, dict) or set(value) - set(known):
        return [_invalid("RETRY_BACKOFF", shape)]
    merged = {**known, **value}
    numbers = all(
        isinstance(number, (int, float)) and not isinstance(number, bool) and math.isfinite(number)
        for number in merged.values()
    )
    if not numbers or merged["base"] <= 0 or merged["max_wait"] < 0 or not 0 <= merged["jitter"] <= 1:
        return [_invalid("RETRY_BACKOFF", shape)]
    return []


#: django-auditlog's migration that turns ``changes`` into JSON.
AUDITLOG_JSON_MIGRATION = ("auditlog", "0015_alter_logentry_changes")


def _cockroachdb_aliases(databases: Any) -> list[str]:
    """The aliases among ``databases`` served by django-cockroachdb (or a subclass of it)."""
    from django.db import connections

    found = []
    for alias in databases or ():
        try:
            if connections[alias].vendor == "cockroachdb":
                found.append(alias)
        except Exception:  # noqa: BLE001 - an unknown alias or a broken ENGINE is Django's to report
            continue
    return found


@register(Tags.database)
def check_auditlog_json_migration(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """auditlog's 0015 still to run on CockroachDB in one combined ALTER: it would fail half-applied."""
    settings = _settings()
    if getattr(settings, "AUDITLOG_TWO_STEP_MIGRATION", False) or not apps.is_installed("auditlog"):
        return []
    if getattr(settings, "AUDITLOG_LOGENTRY_MODEL", "auditlog.LogEntry") != "auditlog.LogEntry":
        return []  # a model of the service's own: auditlog's migrations do not touch its table
    from django.db import DatabaseError, connections, router
    from django.db.migrations.recorder import MigrationRecorder

    errors: list[Any] = []
    for alias in _cockroachdb_aliases(databases):
        connection = connections[alias]
        # django-cockroachdb releases that split such ALTERs say so with this feature.
        if not connection.features.supports_combined_alters or not router.allow_migrate(alias, "auditlog"):
            continue
        try:
            applied = MigrationRecorder(connection).applied_migrations()
        except DatabaseError:
            continue  # unreachable: migrate reports that itself
        if AUDITLOG_JSON_MIGRATION in applied:
            continue
        errors.append(
            Error(
                f"django-auditlog's migration {'.'.join(AUDITLOG_JSON_MIGRATION)} has not run on {alias!r} "
                "(CockroachDB): it changes LogEntry.changes to JSON with ALTER COLUMN TYPE and another ALTER "
                "in one statement, which CockroachDB refuses, and CockroachDB cannot roll back the DDL already "
                "run before it.",
                hint="Set AUDITLOG_TWO_STEP_MIGRATION = True (and AUDITLOG_USE_TEXT_CHANGES_IF_JSON_IS_NOT_PRESENT "
                "= True when the table already holds entries; then run manage.py auditlogmigratejson). "
                "See docs/databases.md.",
                id="gql_audit.E060",
            )
        )
    return errors


@register(Tags.database)
def check_cockroachdb_telemetry(app_configs: Any = None, databases: Any = None, **kwargs: Any) -> list[Any]:
    """django-cockroachdb's telemetry query reads crdb_internal, which CockroachDB 26.1 restricts by default."""
    if getattr(_settings(), "DISABLE_COCKROACHDB_TELEMETRY", False):
        return []
    aliases = _cockroachdb_aliases(databases)
    if not aliases:
        return []
    return [
        Warning(
            f"django-cockroachdb runs SELECT crdb_internal.increment_feature_counter(...) on the first "
            f"connection of every process to {', '.join(map(repr, aliases))}: CockroachDB restricts "
            "crdb_internal by default from 26.1 (allow_unsafe_internals), and the query reports usage "
            "to Cockroach Labs.",
            hint="Set DISABLE_COCKROACHDB_TELEMETRY = True. See docs/databases.md.",
            id="gql_audit.W060",
        )
    ]
