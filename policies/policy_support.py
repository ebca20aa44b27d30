"""Reading resource inputs safely, and turning plain check functions into CrossGuard policies.

Every rule in this pack is a plain function over plain data: a resource check takes the resource's
camelCase inputs (a dict) and the policy's config and yields violation messages; a stack check takes
the stack's resources and yields (message, urn) pairs. The functions here do the Pulumi-facing work:

* `plain` copies the SDK's `unknown_checking_proxy` view into dicts and lists, replacing each value that
  is unknown during preview by the `UNKNOWN` marker instead of raising on access;
* `field` reads a value and raises `Unverifiable` when it (or anything inside it) is unknown;
* `resource_policy` / `stack_policy` build mandatory policies whose validators check the resource type
  first, fill in config defaults, and report an unverifiable input as a violation.

Why fail closed: the SDK's own answer to an unknown input is an *advisory* "can't run policy during
preview" note, which lets a mandatory isolation rule pass silently. Here a rule that cannot see a value it
needs says so, names the property, and blocks, at the rule's own enforcement level.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    Secret,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import (
    UNKNOWN_ARCHIVE_VALUE,
    UNKNOWN_ARRAY_VALUE,
    UNKNOWN_ASSET_VALUE,
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
    UnknownValueError,
)

_UNKNOWN_SENTINELS = frozenset(
    {
        UNKNOWN_ARCHIVE_VALUE,
        UNKNOWN_ARRAY_VALUE,
        UNKNOWN_ASSET_VALUE,
        UNKNOWN_BOOLEAN_VALUE,
        UNKNOWN_NUMBER_VALUE,
        UNKNOWN_OBJECT_VALUE,
        UNKNOWN_STRING_VALUE,
    }
)


class _Unknown:
    """The marker `plain` puts where a value is not known until the update runs."""

    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "<unknown during preview>"


UNKNOWN = _Unknown()


class Unverifiable(Exception):
    """A rule needed a value that is unknown during preview."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def unverifiable_message(path: str) -> str:
    return (
        f"cannot verify `{path}`: its value is unknown during preview (computed from another resource's "
        f"output), so this rule fails closed. Make the input a value known at preview time (a literal or "
        f"stack config), not the output of another resource."
    )


def plain(value: Any) -> Any:
    """A deep copy of proxied resource inputs as dicts and lists, with unknowns replaced by UNKNOWN."""
    if isinstance(value, Secret):
        return plain(value.value)
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    if isinstance(value, Mapping):
        result: dict[str, Any] = {}
        for key in value:
            try:
                result[key] = plain(value[key])
            except UnknownValueError:
                result[key] = UNKNOWN
        return result
    if isinstance(value, Sequence):
        items: list[Any] = []
        for index in range(len(value)):
            try:
                items.append(plain(value[index]))
            except UnknownValueError:
                items.append(UNKNOWN)
        return items
    return value


def contains_unknown(value: Any) -> bool:
    if value is UNKNOWN:
        return True
    if isinstance(value, Mapping):
        return any(contains_unknown(v) for v in value.values())
    if isinstance(value, list):
        return any(contains_unknown(v) for v in value)
    return False


def field(props: Mapping[str, Any], path: str, default: Any = None) -> Any:
    """The value at a dotted path (`capabilities.drops`), `default` if absent; raises if it is unknown."""
    node: Any = props
    for part in path.split("."):
        if node is UNKNOWN:
            raise Unverifiable(path)
        if not isinstance(node, Mapping) or part not in node or node[part] is None:
            return default
        node = node[part]
    if contains_unknown(node):
        raise Unverifiable(path)
    return node


def as_number(value: Any) -> float | None:
    """A number from an input that may arrive as int, float (gRPC Struct) or numeric string."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def labels_of(props: Mapping[str, Any], path: str = "labels") -> dict[str, str]:
    """pulumi-docker labels are a list of {label, value}; a plain mapping is accepted too."""
    raw = field(props, path, [])
    if isinstance(raw, Mapping):
        return {str(k): str(v) for k, v in raw.items()}
    labels: dict[str, str] = {}
    for entry in raw if isinstance(raw, list) else []:
        if isinstance(entry, Mapping) and "label" in entry:
            labels[str(entry["label"])] = str(entry.get("value", ""))
    return labels


def env_of(props: Mapping[str, Any]) -> dict[str, str]:
    """A container's `envs` (["NAME=value", ...]) as a dict."""
    env: dict[str, str] = {}
    for entry in field(props, "envs", []) or []:
        name, _, value = str(entry).partition("=")
        env[name] = value
    return env


def _defaults(schema: Mapping[str, Mapping[str, Any]] | None) -> dict[str, Any]:
    return {key: spec["default"] for key, spec in (schema or {}).items() if "default" in spec}


ResourceCheck = Callable[[Mapping[str, Any], Mapping[str, Any]], Iterable[str]]


def run_resource_check(check: ResourceCheck, props: Mapping[str, Any], config: Mapping[str, Any]) -> list[str]:
    """Messages from a check; an unknown input it needed becomes one more message, not a crash."""
    messages: list[str] = []
    try:
        for message in check(props, config):
            messages.append(message)
    except Unverifiable as unknown:
        messages.append(unverifiable_message(unknown.path))
    return messages


def resource_policy(
    name: str,
    description: str,
    resource_types: Sequence[str],
    check: ResourceCheck,
    config_schema: Mapping[str, Mapping[str, Any]] | None = None,
) -> ResourceValidationPolicy:
    """A mandatory resource policy running `check` on resources of the given types."""
    defaults = _defaults(config_schema)
    types = frozenset(resource_types)

    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        if args.resource_type not in types:
            return
        config = {**defaults, **(args.get_config() or {})}
        for message in run_resource_check(check, plain(args.props), config):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties=dict(config_schema)) if config_schema else None,
    )


@dataclass(frozen=True)
class StackItem:
    """One resource of the stack as the stack checks see it: plain inputs, unknowns marked."""

    type: str
    urn: str
    name: str
    props: Mapping[str, Any]
    provider_urn: str = ""
    parent_urn: str = ""
    # The inputs of the resource's provider as the engine passes them along; the provider resource itself,
    # when it is among the stack's resources, is read first (see stack_rules.Graph.provider_props).
    provider_props: Mapping[str, Any] = dataclass_field(default_factory=dict)


StackCheck = Callable[[Sequence[StackItem], Mapping[str, Any]], Iterator[tuple[str, str | None]]]


def run_stack_check(
    check: StackCheck, items: Sequence[StackItem], config: Mapping[str, Any]
) -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    try:
        for message, urn in check(items, config):
            found.append((message, urn))
    except Unverifiable as unknown:
        found.append((unverifiable_message(unknown.path), None))
    return found


def stack_items(args: StackValidationArgs) -> list[StackItem]:
    items = []
    for resource in args.resources:
        provider_urn = resource.provider.urn if resource.provider is not None else ""
        provider_props = plain(resource.provider.props) if resource.provider is not None else {}
        parent_urn = resource.parent.urn if resource.parent is not None else (resource.opts.parent or "")
        items.append(
            StackItem(
                resource.resource_type,
                resource.urn,
                resource.name,
                plain(resource.props),
                provider_urn,
                parent_urn,
                provider_props if isinstance(provider_props, Mapping) else {},
            )
        )
    return items


def stack_policy(
    name: str, description: str, check: StackCheck, config_schema: Mapping[str, Mapping[str, Any]] | None = None
) -> StackValidationPolicy:
    """A mandatory stack policy running `check` over every resource of the stack."""
    defaults = _defaults(config_schema)

    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        config = {**defaults, **(args.get_config() or {})}
        for message, urn in run_stack_check(check, stack_items(args), config):
            report_violation(message, urn)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(properties=dict(config_schema)) if config_schema else None,
    )
