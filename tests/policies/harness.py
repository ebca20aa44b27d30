"""Run the pack's policies in-process, the way its analyzer calls them (props behind
`unknown_checking_proxy`, report callbacks collecting messages)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyProviderResource,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import unknown_checking_proxy

from tests.policies import fixtures


def _options(parent: str | None = None) -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], parent)


def validate_resource(
    policy: ResourceValidationPolicy,
    resource_type: str,
    props: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
) -> list[str]:
    """The messages `policy` reports for one resource, its props wrapped as the analyzer wraps them."""
    args = ResourceValidationArgs(
        resource_type,
        unknown_checking_proxy(dict(props)),
        fixtures.urn(resource_type, "subject"),
        "subject",
        _options(),
        None,
        dict(config) if config else None,
    )
    messages: list[str] = []
    policy.validate(args, lambda message, urn=None: messages.append(message))
    return messages


StackEntry = fixtures.StackEntry  # (type, name, props, provider urn)


def validate_stack(
    policy: StackValidationPolicy, entries: Sequence[StackEntry], config: Mapping[str, Any] | None = None
) -> list[tuple[str, str | None]]:
    """The (message, urn) pairs `policy` reports for a stack made of `entries`.

    As the engine does, each resource's provider carries the provider's inputs, taken from the provider
    entry with that URN when `entries` has one.
    """
    provider_props = {fixtures.urn(t, n): p for t, n, p, _ in entries if t.startswith("pulumi:providers:")}
    resources = []
    for resource_type, name, props, provider_urn in entries:
        provider = (
            PolicyProviderResource(
                provider_urn.split("::")[2].split("$")[-1],
                unknown_checking_proxy(dict(provider_props.get(provider_urn, {}))),
                provider_urn,
                provider_urn.split("::")[3],
            )
            if provider_urn
            else None
        )
        resources.append(
            PolicyResource(
                resource_type,
                unknown_checking_proxy(dict(props)),
                fixtures.urn(resource_type, name),
                name,
                _options(),
                provider,
                None,
                [],
                {},
            )
        )
    found: list[tuple[str, str | None]] = []
    policy.validate(
        StackValidationArgs(resources, dict(config) if config else None),
        lambda message, urn=None: found.append((message, urn)),
    )
    return found


def policy_named(policies: Sequence[Any], name: str) -> Any:
    for policy in policies:
        if policy.name == name:
            return policy
    raise KeyError(name)
