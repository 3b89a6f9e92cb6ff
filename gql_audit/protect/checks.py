"""System checks of the protections: a misconfigured limit, allow-list or throttle is
reported at start-up, in words. Registered by ``GqlAuditConfig.ready()`` with the
``security`` tag (``manage.py check --deploy --tag security`` shows them); ids in docs/checks.md.
"""

from __future__ import annotations

from typing import Any

from django.core.checks import Error, Warning

from gql_audit.conf import (
    DEFAULTS,
    PERSISTED_MODES,
    QUERY_COST_KEYS,
    QUERY_LIMIT_KEYS,
    QUERY_LIMIT_MODES,
    SETTINGS_NAME,
    THROTTLE_RATES,
)
from gql_audit.protect.counters import parse_rate
from gql_audit.protect.manifest import ManifestError, read_manifest


def _settings() -> Any:
    from django.conf import settings

    return settings


def _protection_error(key: str, problem: str, check_id: str) -> Error:
    return Error(f"{SETTINGS_NAME}[{key!r}] {problem}", hint="See docs/protections.md.", id=check_id)


def _check_query_limits(value: dict[str, Any]) -> list[Any]:
    errors: list[Any] = []
    for key, limit in value.items():
        least = 0 if key in ("max_aliases", "max_directives", "default_list_size") else 1
        problem: str | None
        if key == "mode" and limit not in QUERY_LIMIT_MODES:
            problem = f"mode must be one of {QUERY_LIMIT_MODES}."
        elif key == "costs":
            problem = _costs_problem(limit)
            if problem is None:
                continue
        elif key != "mode" and key not in (*QUERY_LIMIT_KEYS, *QUERY_COST_KEYS):
            problem = f"has an unknown key {key!r}."
        elif key != "mode" and limit is not None and not _whole(limit, least):
            problem = f"{key} must be None or an integer of at least {least}."
        else:
            continue
        errors.append(_protection_error("QUERY_LIMITS", problem, "gql_audit.E020"))
    return errors


def _whole(value: Any, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


#: What a ``costs`` entry given as a dict may say, and how.
_COST_KEYS = {
    "cost": "an integer",
    "assumed_size": "an integer",
    "slicing_arguments": "a list",
    "sized_fields": "a list",
}


def _costs_problem(costs: Any) -> str | None:
    """What is wrong with ``QUERY_LIMITS["costs"]``, or None."""
    if not isinstance(costs, dict):
        return "costs must be a dict of 'Type.field' -> cost."
    for name, entry in costs.items():
        if not isinstance(name, str) or name.count(".") != 1 or not all(name.split(".")):
            return f"costs: {name!r} is not of the form 'Type.field'."
        if _whole(entry, 0):
            continue
        if not isinstance(entry, dict) or set(entry) - set(_COST_KEYS):
            return f"costs[{name!r}] must be an integer or a dict of {', '.join(_COST_KEYS)}."
        for key, kind in _COST_KEYS.items():
            given = entry.get(key)
            if given is None:
                continue
            if kind == "an integer" and not _whole(given, 0):
                return f"costs[{name!r}][{key!r}] must be {kind} of at least 0."
            if kind == "a list" and not (isinstance(given, (list, tuple)) and all(isinstance(a, str) for a in given)):
                return f"costs[{name!r}][{key!r}] must be a list of names."
    return None


def _check_persisted(value: dict[str, Any]) -> list[Any]:
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
    errors: list[Any] = []
    for key, rate in value.items():
        try:
            if key not in THROTTLE_RATES:
                raise ValueError(f"has an unknown key {key!r} (known: {', '.join(THROTTLE_RATES)})")
            if rate is not None:  # None: that rate is not counted (its documented default)
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
    timeout = raw.get("THROTTLE_TIMEOUT", DEFAULTS["THROTTLE_TIMEOUT"])
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout <= 30:
        errors.append(
            _protection_error("THROTTLE_TIMEOUT", "must be a number of seconds above 0 (at most 30).", "gql_audit.E024")
        )
    return errors
