"""Resource rules for Hetzner Cloud servers and firewalls (pulumi-hcloud 1.43.3 camelCase inputs).

A server must be created behind a firewall (`firewallIds` at creation, so there is no window in which it
boots unprotected; a later FirewallAttachment does not count), from an allowed image and location, with
SSH keys and no way to log in by password. A firewall may open a port to the whole internet only if the
`publicPorts` config lists it; a source range shorter than /8 (IPv4) or /16 (IPv6) counts as the whole
internet, so 0.0.0.0/1 + 128.0.0.0/1 does not slip through.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import HCLOUD_FIREWALL, HCLOUD_SERVER
from policy_support import UNKNOWN, Unverifiable, field, resource_policy

Props = Mapping[str, Any]
Config = Mapping[str, Any]


def check_server_firewall(props: Props, config: Config) -> Iterator[str]:
    # The ids themselves are unknown until the firewall exists; that the list is non-empty is known.
    firewall_ids = props.get("firewallIds")
    if firewall_ids is UNKNOWN:
        raise Unverifiable("firewallIds")
    if not isinstance(firewall_ids, list) or not firewall_ids:
        yield "`firewallIds` is empty: the server would boot with every port reachable."


def _location(props: Props) -> str | None:
    location = field(props, "location")
    if location:
        return str(location)
    datacenter = field(props, "datacenter")
    return str(datacenter).split("-")[0] if datacenter else None


def check_server_image_location(props: Props, config: Config) -> Iterator[str]:
    images = [str(i) for i in config.get("allowedImages", [])]
    locations = [str(loc) for loc in config.get("allowedLocations", [])]
    image = field(props, "image")
    if image not in images:
        yield f"`image` {image!r} is not one of the allowed images {images}."
    location = _location(props)
    if location not in locations:
        yield f"location {location!r} is not one of the allowed locations {locations}."


_PASSWORD_USER_DATA = re.compile(
    r"^\s*(ssh_pwauth\s*:\s*(true|yes|1)\b|chpasswd\s*:|(plain_text_|hashed_)?passwd\s*:|password\s*:)"
    r"|PasswordAuthentication\s+yes|PermitRootLogin\s+yes",
    re.IGNORECASE | re.MULTILINE,
)


def check_server_ssh_keys_only(props: Props, config: Config) -> Iterator[str]:
    if not field(props, "sshKeys", []):
        yield "`sshKeys` is empty: Hetzner then sets a root password and mails it."
    if field(props, "rescue"):
        yield "`rescue` is set: the rescue system is entered with a root password."
    user_data = field(props, "userData")
    if user_data and (match := _PASSWORD_USER_DATA.search(str(user_data))):
        yield f"`userData` enables password login ({match.group(0).strip()!r})."


def _opens_to_world(cidr: str) -> bool:
    try:
        network = ipaddress.ip_network(cidr.strip(), strict=False)
    except ValueError:
        return True  # what cannot be parsed cannot be shown to be narrow
    return network.prefixlen < (8 if network.version == 4 else 16)


def _rule_key(rule: Mapping[str, Any]) -> str:
    protocol = str(rule.get("protocol", "")).lower()
    port = rule.get("port")
    return f"{protocol}/{port}" if port not in (None, "") else protocol


def check_firewall_no_open_ingress(props: Props, config: Config) -> Iterator[str]:
    allowed = {str(p).lower() for p in config.get("publicPorts", [])}
    for index, rule in enumerate(field(props, "rules", []) or []):
        if not isinstance(rule, Mapping) or str(rule.get("direction", "")).lower() != "in":
            continue
        wide = [c for c in rule.get("sourceIps") or [] if _opens_to_world(str(c))]
        key = _rule_key(rule)
        if wide and key not in allowed:
            yield (
                f"`rules[{index}]` admits {wide} on {key}, which the `publicPorts` config "
                f"{sorted(allowed)} does not list."
            )


POLICIES = [
    resource_policy(
        "hcloud-server-firewall-attached",
        "Attach a firewall to every Hetzner server at creation (`firewallIds`).",
        (HCLOUD_SERVER,),
        check_server_firewall,
    ),
    resource_policy(
        "hcloud-server-allowed-image-location",
        "Create servers only from the `allowedImages` config in the `allowedLocations` config.",
        (HCLOUD_SERVER,),
        check_server_image_location,
        {
            "allowedImages": {"type": "array", "items": {"type": "string"}, "default": ["debian-13", "debian-12"]},
            "allowedLocations": {"type": "array", "items": {"type": "string"}, "default": ["fsn1", "nbg1", "hel1"]},
        },
    ),
    resource_policy(
        "hcloud-server-ssh-keys-only",
        "Give servers `sshKeys`, no `rescue`, and user data that enables no password login.",
        (HCLOUD_SERVER,),
        check_server_ssh_keys_only,
    ),
    resource_policy(
        "hcloud-firewall-no-open-ingress",
        "Admit 0.0.0.0/0 or ::/0 inbound only on ports listed in the `publicPorts` config "
        '("tcp/443", "udp/51820", "icmp"); restrict everything else to known CIDRs.',
        (HCLOUD_FIREWALL,),
        check_firewall_no_open_ingress,
        {"publicPorts": {"type": "array", "items": {"type": "string"}, "default": []}},
    ),
]
