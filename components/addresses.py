"""Address ranges that are not the public internet, in one place, each named list saying whom it serves.

The three lists differ on purpose:
- NON_PUBLIC_NETWORKS (components.config): a dedicated host's address, and the word "private" in the
  message for an IP literal in an endpoint. The documentation ranges (192.0.2.0/24, 198.51.100.0/24,
  203.0.113.0/24, 2001:db8::/32) are accepted: the examples use them. An IPv4-mapped IPv6 address is
  unwrapped before the check, so ::ffff:0:0/96 need not be listed.
- BLOCKED_DESTINATIONS (components.egress): what a cage's proxy refuses to connect to, whatever a name
  resolves to. Squid sees addresses as they are, so also the documentation ranges (never a real
  service), IPv4-mapped and NAT64 addresses (an IPv4 address in disguise) and the IPv6 discard prefix.
- HOST_FIREWALL_FORBIDDEN_V4 (components.hostconfig): where the host firewall drops a cage's or a
  proxy's packets. Not 198.18.0.0/15: the cage and egress networks live there (CAGE_ADDRESS_POOL,
  conventions.EGRESS_SUBNET), and a cage reaching its own proxy must not look forbidden. Not
  192.0.0.0/24 either, as the firewall has always been written; adding it changes every host's
  bootstrap, a change of its own.

Each list is in address order (IPv4 first): the proxy config and the firewall render them as given.
"""

from __future__ import annotations

import ipaddress

# IANA special-purpose IPv4 space that matters here.
THIS_NETWORK_V4 = "0.0.0.0/8"
RFC1918_V4 = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
SHARED_V4 = "100.64.0.0/10"  # carrier-grade NAT
LOOPBACK_V4 = "127.0.0.0/8"
LINK_LOCAL_V4 = "169.254.0.0/16"  # 169.254.169.254 serves cloud user-data
IETF_PROTOCOL_V4 = "192.0.0.0/24"
BENCHMARKING_V4 = "198.18.0.0/15"  # RFC 2544; the hosts' cage and egress networks
MULTICAST_V4 = "224.0.0.0/4"
RESERVED_V4 = "240.0.0.0/4"
DOCUMENTATION_V4 = ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24")

UNSPECIFIED_V6 = "::/128"
LOOPBACK_V6 = "::1/128"
UNIQUE_LOCAL_V6 = "fc00::/7"
LINK_LOCAL_V6 = "fe80::/10"
MULTICAST_V6 = "ff00::/8"
TRANSLATED_V6 = ("::ffff:0:0/96", "64:ff9b::/96")  # IPv4-mapped, NAT64
DISCARD_V6 = "100::/64"
DOCUMENTATION_V6 = "2001:db8::/32"


def in_address_order(*groups: str | tuple[str, ...]) -> tuple[str, ...]:
    """The networks of `groups`, each once, IPv4 before IPv6, by address then prefix length."""
    flat = {n for g in groups for n in ((g,) if isinstance(g, str) else g)}
    return tuple(
        sorted(
            flat,
            key=lambda n: (
                ipaddress.ip_network(n).version,
                ipaddress.ip_network(n).network_address,
                ipaddress.ip_network(n).prefixlen,
            ),
        )
    )


HOST_FIREWALL_FORBIDDEN_V4 = in_address_order(
    THIS_NETWORK_V4, RFC1918_V4, SHARED_V4, LOOPBACK_V4, LINK_LOCAL_V4, MULTICAST_V4, RESERVED_V4
)
_NOT_PUBLIC = (
    HOST_FIREWALL_FORBIDDEN_V4,
    IETF_PROTOCOL_V4,
    BENCHMARKING_V4,
    UNSPECIFIED_V6,
    LOOPBACK_V6,
    UNIQUE_LOCAL_V6,
    LINK_LOCAL_V6,
    MULTICAST_V6,
)
NON_PUBLIC_NETWORKS = in_address_order(*_NOT_PUBLIC)
BLOCKED_DESTINATIONS = in_address_order(*_NOT_PUBLIC, DOCUMENTATION_V4, TRANSLATED_V6, DISCARD_V6, DOCUMENTATION_V6)
