"""An OCSF event validator over the schema vendored here (``schema-1.7.0.json``, Apache-2.0: see
LICENSE and NOTICE; ``make_schema.py`` says how it was made).

``problems(event)`` lists what does not hold, as the OCSF server's validator checks it:
the class and its category, ``type_uid``, every attribute known to the class or object
(an attribute of a profile only when ``metadata.profiles`` names it), required
attributes present, the types (objects recursively, arrays, the scalar types and
their ranges), enum values, ``*_id`` siblings naming their enum caption, and the
objects' ``at_least_one`` / ``just_one`` constraints.
"""

from __future__ import annotations

import ipaddress
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).resolve().parent / "schema-1.7.0.json"
SCALARS = {
    "string_t": str,
    "integer_t": int,
    "long_t": int,
    "float_t": (int, float),
    "boolean_t": bool,
}


@cache
def schema() -> dict[str, Any]:
    return json.loads(SCHEMA_FILE.read_text())


def class_of(uid: Any) -> dict[str, Any] | None:
    for cls in schema()["classes"].values():
        if cls["uid"] == uid:
            return cls
    return None


def problems(event: Any) -> list[str]:
    if not isinstance(event, dict):
        return ["the event is not an object"]
    cls = class_of(event.get("class_uid"))
    if cls is None:
        return [f"class_uid {event.get('class_uid')!r} is not a class of OCSF {schema()['version']}"]
    found: list[str] = []
    category = schema()["categories"][cls["category"]]
    if event.get("category_uid") != category["uid"]:
        found.append(f"category_uid {event.get('category_uid')!r} is not {category['uid']}")
    if isinstance(event.get("activity_id"), int) and event.get("type_uid") != cls["uid"] * 100 + event["activity_id"]:
        found.append(f"type_uid {event.get('type_uid')!r} is not class_uid * 100 + activity_id")
    metadata = event.get("metadata") if isinstance(event.get("metadata"), dict) else {}
    profiles = set(metadata.get("profiles") or [])
    _object(event, cls["attributes"], cls.get("constraints") or {}, cls["name"], profiles, found)
    return found


def _object(value: Any, attributes: dict, constraints: dict, path: str, profiles: set, found: list) -> None:
    if not isinstance(value, dict):
        found.append(f"{path}: not an object")
        return
    for name, item in value.items():
        spec = attributes.get(name)
        if spec is None:
            found.append(f"{path}.{name}: not an attribute of {path.split('.')[-1] or 'the class'}")
            continue
        if spec.get("profile") and spec["profile"] not in profiles:
            found.append(f"{path}.{name}: belongs to profile {spec['profile']!r}, not declared")
        _attribute(item, spec, f"{path}.{name}", profiles, found)
        sibling = spec.get("sibling")
        if spec.get("enum") and sibling and sibling in value and item != 99:
            caption = spec["enum"].get(str(item), {}).get("caption")
            if caption is not None and value[sibling] != caption:
                found.append(f"{path}.{sibling}: {value[sibling]!r} is not {caption!r}, the caption of {name}")
    for name, spec in attributes.items():
        wanted = spec.get("requirement") == "required" and (not spec.get("profile") or spec["profile"] in profiles)
        if wanted and name not in value:
            found.append(f"{path}.{name}: required, missing")
    present = [name for name in constraints.get("at_least_one", []) if value.get(name) is not None]
    if constraints.get("at_least_one") and not present:
        found.append(f"{path}: needs at least one of {constraints['at_least_one']}")
    just = [name for name in constraints.get("just_one", []) if value.get(name) is not None]
    if constraints.get("just_one") and len(just) != 1:
        found.append(f"{path}: needs exactly one of {constraints['just_one']}")


def _attribute(item: Any, spec: dict, path: str, profiles: set, found: list) -> None:
    if spec.get("is_array"):
        if not isinstance(item, list):
            found.append(f"{path}: not an array")
            return
        for n, element in enumerate(item):
            _value(element, spec, f"{path}[{n}]", profiles, found)
        return
    _value(item, spec, path, profiles, found)


def _value(item: Any, spec: dict, path: str, profiles: set, found: list) -> None:
    kind = spec["type"]
    objects = schema()["objects"]
    if kind == "object":  # free-form: ``unmapped``
        if not isinstance(item, dict):
            found.append(f"{path}: not an object")
        return
    if kind in objects:
        obj = objects[kind]
        _object(item, obj["attributes"], obj.get("constraints") or {}, path, profiles, found)
        return
    if kind == "json_t":
        json.dumps(item)
        return
    types = schema()["types"]
    described = types.get(kind, {})
    base = described.get("type") or kind
    expected = SCALARS.get(base) or SCALARS.get(kind)
    if expected is None:
        found.append(f"{path}: unknown type {kind}")
        return
    if isinstance(item, bool) and base != "boolean_t":
        found.append(f"{path}: a boolean, not {kind}")
        return
    if not isinstance(item, expected):
        found.append(f"{path}: {type(item).__name__}, not {kind}")
        return
    if spec.get("enum") and str(item) not in spec["enum"]:
        found.append(f"{path}: {item!r} is not one of {sorted(spec['enum'])}")
    if kind == "ip_t":
        try:
            ipaddress.ip_address(item)
        except ValueError:
            found.append(f"{path}: {item!r} is not an IP address")
    if described.get("max_len") and isinstance(item, str) and len(item) > described["max_len"]:
        found.append(f"{path}: longer than {described['max_len']}")
    if described.get("regex") and isinstance(item, str) and not re.fullmatch(described["regex"], item):
        found.append(f"{path}: {item!r} does not match {described['regex']}")
    if described.get("range") and isinstance(item, int):
        low, high = described["range"]
        if not low <= item <= high:
            found.append(f"{path}: {item} is out of [{low}, {high}]")
