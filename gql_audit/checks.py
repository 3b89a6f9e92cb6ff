"""System checks: a misconfiguration is reported at start-up, in words.

Ids are stable; docs/checks.md lists them.
"""

from __future__ import annotations

import inspect
from typing import Any

from django.apps import apps
from django.core.checks import Error, Tags, Warning, register
from django.utils.module_loading import import_string

from gql_audit.conf import (
    ACCESS_STORES,
    CLIENT_CERT_SOURCES,
    DEFAULTS,
    EVENT_SINKS,
    INTROSPECTION_CHOICES,
    MASK_ERRORS_CHOICES,
    PERSISTED_MODES,
    QUERY_LIMIT_KEYS,
    QUERY_LIMIT_MODES,
    SETTINGS_NAME,
    THROTTLE_RATES,
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


def _protection_error(key: str, problem: str, check_id: str) -> Error:
    return Error(f"{SETTINGS_NAME}[{key!r}] {problem}", hint="See docs/protections.md.", id=check_id)


def _check_query_limits(value: dict[str, Any]) -> list[Any]:
    errors: list[Any] = []
    for key, limit in value.items():
        least = 0 if key == "max_aliases" else 1
        if key == "mode" and limit not in QUERY_LIMIT_MODES:
            problem = f"mode must be one of {QUERY_LIMIT_MODES}."
        elif key != "mode" and key not in QUERY_LIMIT_KEYS:
            problem = f"has an unknown key {key!r}."
        elif (
            key != "mode"
            and limit is not None
            and (isinstance(limit, bool) or not isinstance(limit, int) or limit < least)
        ):
            problem = f"{key} must be None or an integer of at least {least}."
        else:
            continue
        errors.append(_protection_error("QUERY_LIMITS", problem, "gql_audit.E020"))
    return errors


def _check_persisted(value: dict[str, Any]) -> list[Any]:
    from gql_audit.persisted import ManifestError, read_manifest

    if set(value) - {"manifest", "mode"}:
        return [_protection_error("PERSISTED_OPERATIONS", "takes only 'manifest' and 'mode'.", "gql_audit.E021")]
    errors: list[Any] = []
    if value.get("mode", "observe") not in PERSISTED_MODES:
        errors.append(
            _protection_error("PERSISTED_OPERATIONS", f"mode must be one of {PERSISTED_MODES}.", "gql_audit.E021")
        )
    try:
        read_manifest(value.get("manifest"))
    except ManifestError as exc:
        errors.append(_protection_error("PERSISTED_OPERATIONS", f"manifest {exc}.", "gql_audit.E021"))
    return errors


def _check_throttle(value: dict[str, Any]) -> list[Any]:
    from gql_audit.throttle import parse_rate

    errors: list[Any] = []
    for key, rate in value.items():
        try:
            if key not in THROTTLE_RATES:
                raise ValueError(f"has an unknown key {key!r} (known: {', '.join(THROTTLE_RATES)})")
            parse_rate(rate)
        except ValueError as exc:
            errors.append(_protection_error("THROTTLE", f"{key}: {exc}.", "gql_audit.E022"))
    return errors


def _check_throttle_cache(throttle: Any, alias: Any) -> list[Any]:
    caches = getattr(_settings(), "CACHES", None) or {"default": {}}
    if alias not in caches:
        return [_protection_error("THROTTLE_CACHE", f"{alias!r} is not a cache in CACHES.", "gql_audit.E023")]
    backend = str(caches[alias].get("BACKEND", "django.core.cache.backends.locmem.LocMemCache"))
    if not throttle or backend.rsplit(".", 1)[-1] not in ("LocMemCache", "DummyCache"):
        return []
    return [
        Warning(
            f"{SETTINGS_NAME}['THROTTLE'] counts in cache {alias!r} ({backend}), which each process "
            "keeps to itself (or forgets): every worker counts on its own.",
            hint="Point THROTTLE_CACHE at a cache every worker and server shares, such as Django's "
            "RedisCache. See docs/protections.md.",
            id="gql_audit.W020",
        )
    ]


#: Setting -> (its check id, the check of its value when it is a dict).
_PROTECTIONS = {
    "QUERY_LIMITS": ("gql_audit.E020", _check_query_limits),
    "PERSISTED_OPERATIONS": ("gql_audit.E021", _check_persisted),
    "THROTTLE": ("gql_audit.E022", _check_throttle),
}


@register(Tags.compatibility)
def check_protections(app_configs: Any = None, **kwargs: Any) -> list[Any]:
    """QUERY_LIMITS, PERSISTED_OPERATIONS, THROTTLE and THROTTLE_CACHE."""
    raw = getattr(_settings(), SETTINGS_NAME, {})
    if not isinstance(raw, dict):
        return []  # E001
    errors: list[Any] = []
    for key, (check_id, check) in _PROTECTIONS.items():
        value = raw.get(key)
        if value is None:
            continue
        if not isinstance(value, dict):
            errors.append(_protection_error(key, "must be a dict or None.", check_id))
            continue
        errors.extend(check(value))
    throttle = raw.get("THROTTLE")
    errors.extend(_check_throttle_cache(throttle, raw.get("THROTTLE_CACHE", DEFAULTS["THROTTLE_CACHE"])))
    return errors


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
    jwt_settings = getattr(settings, "GRAPHQL_JWT", None) or {}
    if uses_jwt and not jwt_settings.get("JWT_VERIFY_EXPIRATION", False):
        errors.append(
            Warning(
                "GRAPHQL_JWT['JWT_VERIFY_EXPIRATION'] is off: tokens never expire.",
                hint="Set it to True (django-graphql-jwt's default is False); expired tokens "
                "are then reported as TOKEN_EXPIRED.",
                id="gql_audit.W001",
            )
        )
    return errors


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
    try:
        schema: Any = import_string(schema_path) if isinstance(schema_path, str) else schema_path
        graphql_schema = schema.graphql_schema
    except Exception:  # noqa: BLE001 - graphene-django reports a bad SCHEMA itself
        return []
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
            hint="Use GraphQL names (camelCase), e.g. 'Query.serviceStatus'.",
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
