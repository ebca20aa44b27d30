"""Hetzner policies: firewall attached at creation, no world-open ingress, allowed image/location, keys only."""

from __future__ import annotations

from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_NUMBER_VALUE, UNKNOWN_STRING_VALUE

import hetzner_rules
from tests.policies import fixtures as fx
from tests.policies.harness import policy_named, validate_resource

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"


def check(name: str, type_: str, props: dict[str, Any], config: dict[str, Any] | None = None) -> list[str]:
    return validate_resource(policy_named(hetzner_rules.POLICIES, name), type_, props, config)


@pytest.mark.parametrize("name", [p.name for p in hetzner_rules.POLICIES])
def test_the_compliant_server_and_firewall_pass(name: str) -> None:
    assert check(name, SERVER, fx.hcloud_server()) == []
    assert check(name, FIREWALL, fx.hcloud_firewall()) == []


def test_a_server_without_a_firewall_is_refused() -> None:
    assert (
        "`firewallIds` is empty"
        in check("hcloud-server-firewall-attached", SERVER, {**fx.hcloud_server(), "firewallIds": []})[0]
    )
    assert (
        "`firewallIds` is empty"
        in check(
            "hcloud-server-firewall-attached",
            SERVER,
            {k: v for k, v in fx.hcloud_server().items() if k != "firewallIds"},
        )[0]
    )


def test_firewall_ids_not_yet_known_still_show_a_firewall_is_attached() -> None:
    # The id of a firewall created in the same update is unknown during preview; the list is not.
    assert (
        check("hcloud-server-firewall-attached", SERVER, {**fx.hcloud_server(), "firewallIds": [UNKNOWN_NUMBER_VALUE]})
        == []
    )


def test_an_unknown_firewall_list_fails_closed() -> None:
    props = {**fx.hcloud_server(), "firewallIds": UNKNOWN_STRING_VALUE}
    messages = check("hcloud-server-firewall-attached", SERVER, props)
    assert len(messages) == 1 and "cannot verify `firewallIds`" in messages[0]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"image": "ubuntu-24.04"}, "`image` 'ubuntu-24.04' is not one of the allowed images"),
        ({"location": "ash"}, "location 'ash' is not one of the allowed locations"),
        ({"location": None, "datacenter": "ash-dc1"}, "location 'ash'"),
        ({"location": None}, "location None"),
    ],
)
def test_image_and_location_must_be_allowed(change: dict[str, Any], expected: str) -> None:
    messages = check("hcloud-server-allowed-image-location", SERVER, {**fx.hcloud_server(), **change})
    assert any(expected in m for m in messages), messages


def test_image_and_location_config() -> None:
    props = {**fx.hcloud_server(), "image": "debian-13", "location": None, "datacenter": "hil-dc1"}
    assert (
        check(
            "hcloud-server-allowed-image-location",
            SERVER,
            props,
            {"allowedImages": ["debian-13"], "allowedLocations": ["hil"]},
        )
        == []
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"sshKeys": []}, "`sshKeys` is empty"),
        ({"rescue": "linux64"}, "`rescue` is set"),
        ({"userData": "#cloud-config\nssh_pwauth: true\n"}, "enables password login ('ssh_pwauth: true')"),
        ({"userData": "#cloud-config\nchpasswd:\n  list: root:hunter2\n"}, "enables password login ('chpasswd:')"),
        (
            {"userData": "#!/bin/sh\necho 'PasswordAuthentication yes' >> /etc/ssh/sshd_config\n"},
            "'PasswordAuthentication yes'",
        ),
    ],
)
def test_ssh_keys_only(change: dict[str, Any], expected: str) -> None:
    messages = check("hcloud-server-ssh-keys-only", SERVER, {**fx.hcloud_server(), **change})
    assert any(expected in m for m in messages), messages


def test_user_data_unknown_during_preview_fails_closed() -> None:
    messages = check("hcloud-server-ssh-keys-only", SERVER, {**fx.hcloud_server(), "userData": UNKNOWN_STRING_VALUE})
    assert len(messages) == 1 and "cannot verify `userData`" in messages[0]


def _with_rule(rule: dict[str, Any]) -> dict[str, Any]:
    props = fx.hcloud_firewall()
    props["rules"].append(rule)
    return props


@pytest.mark.parametrize(
    "rule",
    [
        {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["0.0.0.0/0"]},
        {"direction": "in", "protocol": "tcp", "port": "any", "sourceIps": ["::/0"]},
        {"direction": "in", "protocol": "udp", "port": "53", "sourceIps": ["0.0.0.0/1", "128.0.0.0/1"]},
        {"direction": "in", "protocol": "icmp", "sourceIps": ["0.0.0.0/0"]},
        {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["not-a-cidr"]},
    ],
)
def test_world_open_ingress_is_refused(rule: dict[str, Any]) -> None:
    messages = check("hcloud-firewall-no-open-ingress", FIREWALL, _with_rule(rule))
    assert len(messages) == 1 and "`rules[2]` admits" in messages[0] and "does not list" in messages[0]


def test_configured_public_ports_and_outbound_rules_pass() -> None:
    props = _with_rule({"direction": "in", "protocol": "tcp", "port": "443", "sourceIps": ["0.0.0.0/0", "::/0"]})
    assert check("hcloud-firewall-no-open-ingress", FIREWALL, props) != []
    assert check("hcloud-firewall-no-open-ingress", FIREWALL, props, {"publicPorts": ["tcp/443"]}) == []


def test_an_unknown_rule_source_fails_closed() -> None:
    props = _with_rule({"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": [UNKNOWN_STRING_VALUE]})
    messages = check("hcloud-firewall-no-open-ingress", FIREWALL, props)
    assert len(messages) == 1 and "cannot verify `rules`" in messages[0]
