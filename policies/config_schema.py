"""The JSON schema of the pack's config (the file `pulumi preview --policy-pack-config` takes, as in
policies/config/<stack>.json), made from the config schema each policy declares, and a small validator.

    python policies/config_schema.py > policies/config.schema.json   # `make policy-schema`

tests/policies/test_pack_cli.py checks that the committed schema is current and that every file in
policies/config/ is valid against it. The validator knows the keywords the schema uses (type, enum,
properties, additionalProperties, items, minimum, exclusiveMinimum, oneOf); it is not a general one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from typing import Any

from rules import RULE_MODULES

LEVELS = ["advisory", "mandatory", "remediate", "disabled"]


def schema() -> dict[str, Any]:
    level = {"type": "string", "enum": LEVELS}
    policies: dict[str, Any] = {"all": {"oneOf": [level, {"type": "object", "properties": {"enforcementLevel": level}, "additionalProperties": False}]}}  # fmt: skip
    for module in RULE_MODULES:
        for policy in module.POLICIES:
            properties = dict(policy.config_schema.properties) if policy.config_schema else {}
            policies[policy.name] = {
                "description": policy.description,
                "oneOf": [
                    level,
                    {
                        "type": "object",
                        "properties": {"enforcementLevel": level, **properties},
                        "additionalProperties": False,
                    },
                ],
            }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/clawstaff/fleet/policies/config.schema.json",
        "title": "clawcage-isolation policy pack config",
        "description": "Policy name -> an enforcement level, or an object of enforcementLevel and the policy's settings.",
        "type": "object",
        "properties": policies,
        "additionalProperties": False,
    }


_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
}


def validate(value: Any, spec: Mapping[str, Any], path: str = "$") -> list[str]:
    """Why `value` does not match `spec`, one line per problem (empty: valid)."""
    if "oneOf" in spec:
        results = [validate(value, option, path) for option in spec["oneOf"]]
        if sum(1 for r in results if not r) == 1:
            return []
        return [f"{path}: matches none of its allowed forms ({'; '.join(r[0] for r in results if r)})"]
    expected = spec.get("type")
    if expected is not None:
        ok = isinstance(value, _TYPES[expected]) and not (isinstance(value, bool) and expected in ("integer", "number"))
        if not ok:
            return [f"{path}: {json.dumps(value)} is not of type {expected}"]
    problems: list[str] = []
    if "enum" in spec and value not in spec["enum"]:
        problems.append(f"{path}: {json.dumps(value)} is not one of {spec['enum']}")
    if "minimum" in spec and isinstance(value, (int, float)) and value < spec["minimum"]:
        problems.append(f"{path}: {value} is below the minimum {spec['minimum']}")
    if "exclusiveMinimum" in spec and isinstance(value, (int, float)) and value <= spec["exclusiveMinimum"]:
        problems.append(f"{path}: {value} is not above {spec['exclusiveMinimum']}")
    if isinstance(value, dict):
        properties = spec.get("properties", {})
        for key, item in value.items():
            if key in properties:
                problems += validate(item, properties[key], f"{path}.{key}")
            elif spec.get("additionalProperties") is False:
                problems.append(f"{path}: {key!r} is not allowed here (allowed: {', '.join(sorted(properties))})")
    if isinstance(value, list) and isinstance(spec.get("items"), Mapping):
        for index, item in enumerate(value):
            problems += validate(item, spec["items"], f"{path}[{index}]")
    return problems


if __name__ == "__main__":
    sys.stdout.write(json.dumps(schema(), indent=2) + "\n")
