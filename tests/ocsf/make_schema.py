"""Make ``schema-1.7.0.json``: the OCSF 1.7.0 schema the export is validated against.

Run by hand, not by the tests (it needs ``ocsf-lib`` and a checkout of the OCSF schema):

    git clone https://github.com/ocsf/ocsf-schema && git -C ocsf-schema checkout dc6359b4  # v1.7.0
    python -m ocsf.compile ocsf-schema > compiled.json                                  # ocsf-lib 0.10.4
    python tests/ocsf/make_schema.py compiled.json ocsf-schema tests/ocsf/schema-1.7.0.json

ocsf-lib's compiler gives every object the constraints of the object it extends and
drops a class's explicit ``"profile": null`` (the class's own, required, attribute):
both are restored here from the schema's own files. Kept: the classes gql_audit
exports to, every object and type.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

CLASSES = ("api_activity", "authentication", "application_error")


def main(compiled_path: str, source: str, out: str) -> None:
    compiled = json.loads(Path(compiled_path).read_text())
    root = Path(source)
    for name, obj in compiled["objects"].items():
        raw = root / "objects" / f"{name}.json"
        if raw.is_file():
            own = json.loads(raw.read_text()).get("constraints")
            if own is not None:
                obj["constraints"] = own
    classes = {}
    for name in CLASSES:
        cls = compiled["classes"][name]
        [raw] = list(root.glob(f"events/**/{name}.json"))
        for attribute, spec in json.loads(raw.read_text()).get("attributes", {}).items():
            if isinstance(spec, dict) and "profile" in spec and spec["profile"] is None:
                cls["attributes"][attribute]["profile"] = None
        classes[name] = cls
    schema = {
        "version": compiled["version"],
        "classes": classes,
        "objects": compiled["objects"],
        "types": compiled["types"],
        "categories": compiled["categories"],
    }
    Path(out).write_text(json.dumps(schema, indent=None, sort_keys=True, separators=(",", ":")) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:4])
