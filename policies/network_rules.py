"""Resource rules for `docker:index/network:Network`.

A network labelled `clawstaff.role=cage-network` belongs to one cage (its claw and its proxy): it must be
internal, and ICC stays on there (turning it off would also cut the claw from its own proxy, its only
way out). Every other network is treated as shared (the host's egress network is one): it must have
ICC off, so the proxies on it cannot reach each other. An unlabelled network counts as shared: the safe
reading of a network the pack cannot place.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import ICC_OPTION, LABEL_ROLE, NETWORK, ROLE_CAGE_NETWORK
from policy_support import field, labels_of, resource_policy

Props = Mapping[str, Any]
Config = Mapping[str, Any]


def is_cage_network(props: Props) -> bool:
    return labels_of(props).get(LABEL_ROLE) == ROLE_CAGE_NETWORK


def check_cage_network_internal(props: Props, config: Config) -> Iterator[str]:
    if is_cage_network(props) and field(props, "internal", False) is not True:
        yield "the cage network is not `internal`: the claw could route out without its egress proxy."


def check_shared_network_icc_off(props: Props, config: Config) -> Iterator[str]:
    if is_cage_network(props):
        return
    options = field(props, "options", {}) or {}
    icc = options.get(ICC_OPTION)
    if str(icc).lower() != "false":
        yield (
            f"a shared network (role {labels_of(props).get(LABEL_ROLE)!r}) has `options.{ICC_OPTION}` "
            f'{icc!r}, not "false": containers on it could reach each other.'
        )


def check_no_ipv6(props: Props, config: Config) -> Iterator[str]:
    if config.get("allowIpv6") is True:
        return
    if field(props, "ipv6", False) is True:
        yield "`ipv6` is true: IPv6 bypasses Docker 20.10's iptables isolation (no ip6tables by default)."


POLICIES = [
    resource_policy(
        "cage-network-internal",
        f"Make every network labelled {LABEL_ROLE}={ROLE_CAGE_NETWORK} `internal: true`.",
        (NETWORK,),
        check_cage_network_internal,
    ),
    resource_policy(
        "shared-network-icc-off",
        f'Set `options` {ICC_OPTION}="false" on every network that is not a cage\'s own '
        f"({LABEL_ROLE}={ROLE_CAGE_NETWORK}) network.",
        (NETWORK,),
        check_shared_network_icc_off,
    ),
    resource_policy(
        "network-no-ipv6",
        "Leave `ipv6` off on Docker networks unless the `allowIpv6` config is true.",
        (NETWORK,),
        check_no_ipv6,
        {"allowIpv6": {"type": "boolean", "default": False}},
    ),
]
