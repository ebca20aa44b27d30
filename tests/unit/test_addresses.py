"""The address lists of components.addresses: each equal to the literal it replaced (the proxy config
and the host firewall render them, so their order is part of the output), and the host firewall's
copy in components.hostconfig the same list until it imports it."""

from __future__ import annotations

from components import addresses, egress, hostconfig
from components.config import fields

BEFORE_NON_PUBLIC = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.168.0.0/16", "198.18.0.0/15", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "fc00::/7", "fe80::/10", "ff00::/8",
)  # fmt: skip
BEFORE_BLOCKED = (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
    "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24",
    "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
    "::/128", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "100::/64", "2001:db8::/32", "fc00::/7",
    "fe80::/10", "ff00::/8",
)  # fmt: skip
BEFORE_FIREWALL = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)


def test_each_list_is_the_one_it_replaced_in_the_same_order():
    assert addresses.NON_PUBLIC_NETWORKS == BEFORE_NON_PUBLIC
    assert addresses.BLOCKED_DESTINATIONS == BEFORE_BLOCKED
    assert addresses.HOST_FIREWALL_FORBIDDEN_V4 == BEFORE_FIREWALL


def test_the_users_read_the_one_list():
    assert egress.BLOCKED_DESTINATIONS is addresses.BLOCKED_DESTINATIONS
    assert tuple(str(n) for n in fields.NON_PUBLIC_NETWORKS) == addresses.NON_PUBLIC_NETWORKS
    assert hostconfig.FORBIDDEN_V4 == addresses.HOST_FIREWALL_FORBIDDEN_V4


def test_the_lists_nest_as_their_comments_say():
    public_only = set(addresses.NON_PUBLIC_NETWORKS)
    assert public_only <= set(addresses.BLOCKED_DESTINATIONS)
    assert set(addresses.HOST_FIREWALL_FORBIDDEN_V4) <= public_only
    assert addresses.BENCHMARKING_V4 not in addresses.HOST_FIREWALL_FORBIDDEN_V4  # the cages live there
    assert not set(addresses.DOCUMENTATION_V4) & public_only  # the examples use them
