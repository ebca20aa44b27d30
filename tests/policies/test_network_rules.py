"""Network policies: a cage network is internal, a shared one has ICC off, IPv6 stays off."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import network_rules
from tests.policies import fixtures as fx
from tests.policies.harness import policy_named, validate_resource


def check(name: str, props: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    return validate_resource(policy_named(network_rules.POLICIES, name), fx.NETWORK, props, config)


@pytest.mark.parametrize("name", [p.name for p in network_rules.POLICIES])
@pytest.mark.parametrize("props", [fx.cage_network(), fx.egress_network()], ids=["cage", "egress"])
def test_the_compliant_networks_pass(name: str, props: dict[str, Any]) -> None:
    assert check(name, props) == []


def test_a_cage_network_that_is_not_internal_is_refused() -> None:
    props = fx.cage_network()
    props["internal"] = False
    assert check("cage-network-internal", props) == [
        "the cage network is not `internal`: the claw could route out without its egress proxy."
    ]


def test_a_shared_network_with_icc_on_is_refused() -> None:
    props = fx.egress_network()
    props["options"]["com.docker.network.bridge.enable_icc"] = "true"
    messages = check("shared-network-icc-off", props)
    assert len(messages) == 1 and "'true', not \"false\"" in messages[0] and "'egress-network'" in messages[0]


def test_an_unlabelled_network_counts_as_shared() -> None:
    messages = check("shared-network-icc-off", {"name": "scratch", "driver": "bridge"})
    assert len(messages) == 1 and "role None" in messages[0] and 'None, not "false"' in messages[0]


def test_icc_stays_on_inside_a_cage_network() -> None:
    # ICC off on the two-member cage network would cut the claw from its own proxy (its only way out).
    assert check("shared-network-icc-off", fx.cage_network()) == []


def test_ipv6_is_refused_unless_configured() -> None:
    props = fx.egress_network()
    props["ipv6"] = True
    assert "`ipv6` is true" in check("network-no-ipv6", props)[0]
    assert check("network-no-ipv6", props, {"allowIpv6": True}) == []


@pytest.mark.parametrize(
    ("name", "props", "key"),
    [
        ("cage-network-internal", {**fx.cage_network(), "internal": UNKNOWN_STRING_VALUE}, "internal"),
        ("cage-network-internal", {**fx.cage_network(), "labels": UNKNOWN_STRING_VALUE}, "labels"),
        ("shared-network-icc-off", {**fx.egress_network(), "options": UNKNOWN_STRING_VALUE}, "options"),
        ("network-no-ipv6", {**fx.egress_network(), "ipv6": UNKNOWN_STRING_VALUE}, "ipv6"),
    ],
)
def test_an_input_unknown_during_preview_fails_closed(name: str, props: dict[str, Any], key: str) -> None:
    messages = check(name, props)
    assert len(messages) == 1 and f"cannot verify `{key}`" in messages[0]
