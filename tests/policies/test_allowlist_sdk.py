"""Generated from the installed SDKs: every input pulumi-docker's Container and Network (and pulumi-command's
Command) accept is either allowlisted, and then refused at every value outside its row, or refused when
set at all, on the claw container, the proxy container, the cage and egress networks and the cage's
host commands.

The inputs come from the SDK's own input types (`ContainerArgs`, `NetworkArgs`, `CommandArgs`): their
`__init__` parameters, mapped to the camelCase names the engine sends through the properties' Pulumi
names. A probe for an input without a row is built from the parameter's type annotation (a bool, a
number, a string, a list or map of those, or one field of the nested input type). A value outside a
row comes from the row itself (`Value.refused`), derived from the compliant value.
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pulumi_command
import pulumi_docker
import pytest

import allowlist
import allowlist_rules
import command_rules
import container_rules
import network_rules
import runtime_rules
import stack_rules
from shape import Judged
from tests.policies import fixtures as fx
from tests.policies.harness import validate_resource, validate_stack

Props = dict[str, Any]
RESOURCE_POLICIES = [
    *container_rules.POLICIES,
    *network_rules.POLICIES,
    *command_rules.POLICIES,
    *allowlist_rules.POLICIES,
    *runtime_rules.POLICIES,
]
STACK_POLICIES = {p.name: p for p in stack_rules.POLICIES}


def sdk_inputs(args_type: type) -> dict[str, str]:
    """camelCase input name -> Python parameter name, for every parameter of the input type's __init__."""
    parameters = [p for p in inspect.signature(args_type.__init__).parameters if p not in ("self", "__self__")]
    names = {}
    for python_name in parameters:
        prop = vars(args_type).get(python_name)
        assert isinstance(prop, property), (args_type.__name__, python_name)
        names[getattr(prop.fget, "_pulumi_name", python_name)] = python_name
    return names


def _module_of(args_type: type) -> Any:
    return inspect.getmodule(args_type)


def probe(annotation: Any, module: Any, depth: int = 0) -> Any:
    """A value of the annotated type that the program never emits."""
    args = typing.get_args(annotation)
    kind = args[0] if typing.get_origin(annotation) is typing.Union else annotation
    origin = typing.get_origin(kind)
    if kind is bool:
        return True
    if kind in (int, float):
        return 4242
    if kind is str:
        return "clawcage-probe"
    if origin in (Sequence, list, typing.Sequence) or origin is getattr(typing, "Sequence", None):
        return [probe(typing.get_args(kind)[0], module, depth + 1)]
    if origin in (Mapping, dict) or str(origin).endswith("Mapping"):
        return {"clawcage-probe": "1"}
    if isinstance(kind, typing.ForwardRef) and depth < 3:
        nested = getattr(module, kind.__forward_arg__, None) or getattr(pulumi_docker, kind.__forward_arg__, None)
        if isinstance(nested, type) and issubclass(nested, enum.Enum):
            return list(nested)[-1].value
        if isinstance(nested, type):
            name, python_name = next(iter(sdk_inputs(nested).items()))
            annotation = inspect.signature(nested.__init__).parameters[python_name].annotation
            return {name: probe(annotation, module, depth + 1)}
    return "clawcage-probe"


def annotation_of(args_type: type, python_name: str) -> Any:
    return inspect.signature(args_type.__init__).parameters[python_name].annotation


# (what, SDK input type, resource type, table title, compliant props, the cage's stack entries' name)
SUBJECTS: list[tuple[str, type, str, str, Callable[[], Props], str]] = [
    ("claw", pulumi_docker.ContainerArgs, fx.CONTAINER, "claw container", fx.claw_container, f"{fx.CLAW}-claw"),
    ("proxy", pulumi_docker.ContainerArgs, fx.CONTAINER, "proxy container", fx.proxy_container, f"{fx.CLAW}-proxy"),
    ("cage-network", pulumi_docker.NetworkArgs, fx.NETWORK, "cage network", fx.cage_network, f"{fx.CLAW}-network"),
    ("egress-network", pulumi_docker.NetworkArgs, fx.NETWORK, "egress network", fx.egress_network, f"{fx.HOST}-egress"),
    (
        "local-key-command",
        pulumi_command.local.CommandArgs,
        fx.COMMAND,
        "cage command",
        lambda: fx.key_command(remote=False),
        f"{fx.CLAW}-key",
    ),
    (
        "remote-limits-command",
        pulumi_command.remote.CommandArgs,
        fx.REMOTE_COMMAND,
        "cage command",
        lambda: fx.limits_command(remote=True),
        f"{fx.CLAW}-limits",
    ),
]


def findings(resource_type: str, props: Props, name: str, remote: bool, stack_policy: str | None = None) -> set[str]:
    """(policy) of every violation the pack reports for `props`; stack policies only when one is named."""
    found = {p.name for p in RESOURCE_POLICIES if validate_resource(p, resource_type, props)}
    if stack_policy is not None:
        entries = [
            (t, n, props if n == name else p, prov)
            for t, n, p, prov in fx.cage(remote=remote) + fx.host_resources(local=not remote)
        ]
        if validate_stack(STACK_POLICIES[stack_policy], entries):
            found.add(stack_policy)
    return found


def messages(policy_name: str, resource_type: str, props: Props) -> list[str]:
    policy = next(p for p in allowlist_rules.POLICIES if p.name == policy_name)
    return validate_resource(policy, resource_type, props)


def cases() -> list[Any]:
    found = []
    for what, args_type, resource_type, title, make, name in SUBJECTS:
        for camel, python_name in sorted(sdk_inputs(args_type).items()):
            found.append(
                pytest.param(
                    what, args_type, resource_type, title, make, name, camel, python_name, id=f"{what}:{camel}"
                )
            )
    return found


POLICY_OF = allowlist_rules.RULE_OF_TABLE


@pytest.mark.parametrize(
    ("what", "args_type", "resource_type", "title", "make", "name", "camel", "python_name"), cases()
)
def test_every_sdk_input_is_allowlisted_or_refused(
    what: str,
    args_type: type,
    resource_type: str,
    title: str,
    make: Callable[[], Props],
    name: str,
    camel: str,
    python_name: str,
) -> None:
    table = allowlist.TABLES[title][1]
    remote = resource_type != fx.COMMAND
    good = make()
    assert findings(resource_type, good, name, remote) == set()
    row = table.get(camel)
    if row is None:
        bad = {**good, camel: probe(annotation_of(args_type, python_name), _module_of(args_type))}
        found = messages(POLICY_OF[title], resource_type, bad)
        assert any(f"`{camel}` is set" in m and "has no row for it" in m for m in found), found
        return
    refused = row.allowed.refused(good.get(camel))
    assert refused, f"the row {title}.{camel} names no value outside it"
    for value in refused:
        bad = {**good, camel: value}
        if isinstance(row.allowed, Judged):
            owner = row.allowed.policy
            stack_owner = owner if owner in STACK_POLICIES else None
            assert owner in findings(resource_type, bad, name, remote, stack_owner), (camel, value)
        else:
            found = messages(POLICY_OF[title], resource_type, bad)
            assert any(f"`{camel}" in m for m in found), (camel, value, found)


@pytest.mark.parametrize(
    ("title", "args_types"),
    [
        ("claw container", (pulumi_docker.ContainerArgs,)),
        ("proxy container", (pulumi_docker.ContainerArgs,)),
        ("cage network", (pulumi_docker.NetworkArgs,)),
        ("egress network", (pulumi_docker.NetworkArgs,)),
        ("cage command", (pulumi_command.local.CommandArgs, pulumi_command.remote.CommandArgs)),
    ],
)
def test_every_row_names_an_input_of_the_sdk(title: str, args_types: tuple[type, ...]) -> None:
    accepted = set().union(*(sdk_inputs(t) for t in args_types))
    assert set(allowlist.TABLES[title][1]) <= accepted, set(allowlist.TABLES[title][1]) - accepted
    assert set(allowlist.WHY_NOT) <= set().union(
        *(sdk_inputs(t) for t in (pulumi_docker.ContainerArgs, pulumi_docker.NetworkArgs))
    ) | set(sdk_inputs(pulumi_command.local.CommandArgs))


def test_the_sdk_has_the_inputs_this_test_expects() -> None:
    # A new pulumi-docker adds inputs: the generated cases above cover them without an edit here.
    assert len(sdk_inputs(pulumi_docker.ContainerArgs)) >= 70
    assert len(sdk_inputs(pulumi_docker.NetworkArgs)) >= 11
    assert {"networkMode", "pidMode", "ipcMode", "cgroupnsMode", "usernsMode", "runtime"} <= set(
        sdk_inputs(pulumi_docker.ContainerArgs)
    )
