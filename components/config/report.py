"""Every user mistake as one ConfigError: the stack file, the key path, the value as written, the reason
and what is allowed, in one paragraph. ConfigError is a pulumi.RunError, so `pulumi up` prints it without
a traceback; secret values (sealingKey, clawSecrets) are never echoed.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, NoReturn, Union

import pulumi

from components.config.fields import HOST_KINDS, NAMESPACE, SECRET_KEYS, Invalid
from components.config.schema import (
    ALLOWED,
    AdminModel,
    BrokerModel,
    ClawModel,
    OvercommitModel,
    PlacementModel,
    StackModel,
    HOST_MODELS,
    _Model,
)

_MISSING: Any = object()
# What a key without an ALLOWED entry points to (every key path of the schema has one).
NO_ALLOWED_TEXT = "see the stack config table in README.md"


class ConfigError(pulumi.RunError):
    """One user mistake, as one paragraph:
    'Pulumi.prod.yaml: clawstaff:claws[2].memory = "1 GB x": not a size; allowed: a size such as ...'

    `value` is the value as shown (secret values as "[secret]"), None when the key is missing.
    """

    def __init__(self, stack_file: str, key: str | None, value: str | None, reason: str, allowed: str) -> None:
        self.stack_file, self.key, self.value, self.reason, self.allowed = stack_file, key, value, reason, allowed
        if key is None:
            subject = f"{stack_file}: {reason}"
        elif value is None:
            subject = f"{stack_file}: {key} is {reason}"
        else:
            subject = f"{stack_file}: {key} = {value}: {reason}"
        super().__init__(f"{subject}; allowed: {allowed.rstrip('.')}.")


def show_value(value: Any, *, secret: bool = False) -> str:
    """The value as the user wrote it, quoted like JSON; a long list or mapping is cut short."""
    if secret:
        return "[secret]"
    text = json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (list, dict)) and len(text) > 120:
        return text[:117] + "..."
    return text


_REASONS = {
    "extra_forbidden": "an unknown key",
    "string_type": "not a string",
    "list_type": "not a list",
    "dict_type": "not a mapping",
    "model_type": "not a mapping",
    "model_attributes_type": "not a mapping",
    "too_short": "an empty list",
    "literal_error": "not an allowed value",
    "union_tag_invalid": "not a host kind",
}

Loc = tuple[Union[str, int], ...]


def key_path(loc: Loc) -> str:
    """('claws', 2, 'memory') -> 'clawstaff:claws[2].memory'."""
    path = f"{NAMESPACE}:{loc[0]}"
    for part in loc[1:]:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _pattern(loc: Loc) -> str:
    """('claws', 2, 'memory') -> 'claws[].memory'; map keys under clawSecrets, placementLock and a
    claw's broker -> '*'."""
    path = str(loc[0])
    for i, part in enumerate(loc[1:], start=1):
        if isinstance(part, int):
            path += "[]"
        elif loc[0] in ("clawSecrets", "placementLock") or (loc[0] == "claws" and i == 3 and loc[2] == "broker"):
            path += ".*"
        else:
            path += f".{part}"
    return path


def _value_at(root: Any, loc: Loc) -> Any:
    node = root
    for part in loc:
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            return _MISSING
    return node


class Reporter:
    """Builds ConfigErrors for one stack file, fetching the value as written from the raw config."""

    def __init__(self, stack_file: str, raw: Mapping[str, Any]) -> None:
        self.stack_file, self.raw = stack_file, raw

    def error(
        self, loc: Loc, reason: str, allowed: str | None = None, *, secret: bool = False, shown: str | None = None
    ) -> ConfigError:
        """`shown` lets a check show a summary (a claw's limits) instead of the value found at loc."""
        value = _value_at(self.raw, loc)
        if shown is None and value is _MISSING:
            reason = "missing"
        elif shown is None:
            shown = show_value(value, secret=secret or loc[0] in SECRET_KEYS)
        allowed = allowed or ALLOWED.get(_pattern(loc), NO_ALLOWED_TEXT)
        return ConfigError(self.stack_file, key_path(loc), shown, reason, allowed)

    def fail(self, loc: Loc, reason: str, allowed: str | None = None, *, shown: str | None = None) -> NoReturn:
        raise self.error(loc, reason, allowed, shown=shown)

    def from_pydantic(self, detail: Mapping[str, Any]) -> ConfigError:
        loc, kind = _host_kind_free(tuple(detail["loc"]))
        error_type = detail["type"]
        if loc[-1] == "[key]":  # pydantic's marker for a bad mapping key, e.g. a number
            return self.error(loc[:-1], "a key that is not a string")
        if error_type in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "kind")
        if error_type in ("missing", "union_tag_not_found"):
            return self.error(loc, "missing")
        if error_type == "extra_forbidden":
            return self.error(loc, _unknown_key_reason(kind), "the keys " + ", ".join(_known_keys(loc, kind)))
        cause = (detail.get("ctx") or {}).get("error")
        if isinstance(cause, Invalid):
            return self.error(loc, cause.reason, cause.allowed, secret=cause.secret)
        return self.error(loc, _REASONS.get(error_type, str(detail["msg"]).lower()))


def _host_kind_free(loc: Loc) -> tuple[Loc, str | None]:
    """Drop the union tag pydantic puts in a host's path: ('hosts', 0, 'cloud', 'x') -> ('hosts', 0, 'x')."""
    if len(loc) > 2 and loc[0] == "hosts" and loc[2] in HOST_KINDS:
        return (*loc[:2], *loc[3:]), str(loc[2])
    return loc, None


def _unknown_key_reason(host_kind: str | None) -> str:
    return f"not a key of a {host_kind} host" if host_kind else "an unknown key"


def _known_keys(loc: Loc, host_kind: str | None) -> list[str]:
    model: type[_Model] = StackModel
    if host_kind:
        model = HOST_MODELS[host_kind]
    elif loc[0] == "claws" and len(loc) > 4 and loc[2] == "broker":
        model = BrokerModel
    elif loc[0] == "claws":
        model = ClawModel
    elif loc[0] == "admin":
        model = AdminModel
    elif loc[0] == "placement":
        model = OvercommitModel if len(loc) > 2 and loc[1] == "overcommit" else PlacementModel
    names = [str(f.alias) for f in model.model_fields.values()]
    return [f"{NAMESPACE}:{n}" for n in names] if model is StackModel else names
