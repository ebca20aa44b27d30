"""The host firewalls, rendered as nftables rulesets: a cage host's (components/hostscripts/files/
firewall.nft: what cages and proxies may reach, what reaches the host, and what a cage bridge may
carry) and the audit sink's (firewall-sink.nft: admin SSH and the cage hosts' trail uploads, nothing
else). Both share the host's own inbound rules (firewall-host-input.nft, then firewall-input-drop.nft)
and the metadata rule (firewall-output.nft). Pure functions of their arguments; each bootstrap installs
its ruleset as a unit of its own, and tools/engine.py loads the cage host's on this machine's engine.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from components.addresses import HOST_FIREWALL_FORBIDDEN_V4
from components.conventions import CAGE_BRIDGE_PREFIX, EGRESS_BRIDGE_PREFIX
from components.egress import CAGE_CONNECTIONS_BURST, CAGE_CONNECTIONS_PER_SECOND, PROXY_PORT
from components.hostscripts import host_file

# Hetzner's recursive resolvers (IPv4; cages have no IPv6).
HETZNER_RESOLVERS: tuple[str, ...] = ("185.12.64.1", "185.12.64.2")

# Destinations a cage or its proxy must never reach (components/addresses.py says what and why); the
# host's own addresses are matched with `fib daddr type local` instead of a list.
FORBIDDEN_V4: tuple[str, ...] = HOST_FIREWALL_FORBIDDEN_V4

NFT_TABLE = "clawstaff"
# Tracked connections one proxy may hold at once (its tunnels and lookups; Squid's own limit is
# max_filedescriptors). With the default of 100 cages per host, 100 x 1024 stays well below the
# kernel's usual nf_conntrack_max (262144), so no cage can fill the host's table; a cage's own
# bridge keeps no state at all (firewall.nft, raw_prerouting).
PROXY_MAX_FLOWS = 1024


def _split_cidrs(cidrs: Sequence[str]) -> tuple[list[str], list[str]]:
    v4: list[str] = []
    v6: list[str] = []
    for cidr in cidrs:
        try:
            network = ipaddress.ip_network(cidr, strict=False)
        except ValueError as err:
            raise ValueError(f"not a CIDR: {cidr!r} ({err})") from None
        (v4 if network.version == 4 else v6).append(str(network))
    return sorted(set(v4)), sorted(set(v6))


def _nft_set(name: str, kind: str, elements: Sequence[str], interval: bool = True) -> str:
    lines = [f"    set {name} {{", f"        type {kind}"]
    if interval:
        lines.append("        flags interval")
    if elements:
        lines.append(f"        elements = {{ {', '.join(elements)} }}")
    lines.append("    }")
    return "\n".join(lines)


def _piece(name: str) -> str:
    """A part of a ruleset, as the template takes it (without its last newline)."""
    return host_file(name).removesuffix("\n")


def _host_input() -> str:
    """The host's own inbound rules, then the logged drop of everything else."""
    return _piece("firewall-host-input.nft") + "\n" + _piece("firewall-input-drop.nft")


def render_nftables(
    *,
    ssh_allowed_cidrs: Sequence[str],
    dns_resolvers: Sequence[str] = HETZNER_RESOLVERS,
    guard_host_input: bool = True,
) -> str:
    """A complete `nft -f` file that replaces only `table inet clawstaff`, atomically.

    Docker's own tables (iptables-nft `ip filter`/`ip nat`) are never flushed. Our base chains run
    before Docker's (lower priority number); a drop in any base chain is final, so Docker's later
    accepts cannot undo it. Cage bridges are `cg-*`, the proxies' shared egress bridge `ce-*`.

    `dns_resolvers`: the daemon's upstream resolvers, the one private destination a proxy (never a
    cage) may reach, on port 53 only. `guard_host_input=False` keeps the cage rules but leaves the
    host's other inbound traffic alone; for a development machine whose own services are not ours.
    """
    if guard_host_input and not ssh_allowed_cidrs:
        raise ValueError("ssh_allowed_cidrs is empty: the host would refuse all admin SSH")
    ssh_v4, ssh_v6 = _split_cidrs(ssh_allowed_cidrs)
    resolvers = sorted({str(ipaddress.IPv4Address(r)) for r in dns_resolvers})

    if guard_host_input:
        host_input, input_policy = _host_input(), "drop"
    else:
        host_input = "        # host input is not guarded on this machine (guard_host_input=False): only cages are"
        input_policy = "accept"
    return host_file(
        "firewall.nft",
        table=NFT_TABLE,
        cg=f'"{CAGE_BRIDGE_PREFIX}*"',
        ce=f'"{EGRESS_BRIDGE_PREFIX}*"',
        forbidden_v4=_nft_set("forbidden_v4", "ipv4_addr", FORBIDDEN_V4),
        upstream_dns_v4=_nft_set("upstream_dns_v4", "ipv4_addr", resolvers, interval=False),
        admin_ssh_v4=_nft_set("admin_ssh_v4", "ipv4_addr", ssh_v4),
        admin_ssh_v6=_nft_set("admin_ssh_v6", "ipv6_addr", ssh_v6),
        input_policy=input_policy,
        host_input=host_input,
        output_chain=_piece("firewall-output.nft"),
        proxy_max_flows=str(PROXY_MAX_FLOWS),
        proxy_port=str(PROXY_PORT),
        cage_connections_rate=str(CAGE_CONNECTIONS_PER_SECOND),
        cage_connections_burst=str(CAGE_CONNECTIONS_BURST),
    )


def render_sink_nftables(*, ssh_allowed_cidrs: Sequence[str], upload_sources: Sequence[str], upload_port: int) -> str:
    """The audit sink's complete `nft -f` file (replaces only `table inet clawstaff`): inbound, the
    host's own rules (established, loopback, ICMP, SSH from `ssh_allowed_cidrs`) and TCP `upload_port`
    from `upload_sources` (addresses or CIDRs of the cage hosts, either family; none while the stack
    has no cage host) alone; nothing is forwarded; the metadata service is root's, as on a cage host."""
    if not ssh_allowed_cidrs:
        raise ValueError("ssh_allowed_cidrs is empty: the sink would refuse all admin SSH")
    if isinstance(upload_port, bool) or not isinstance(upload_port, int) or not 1 <= upload_port <= 65535:
        raise ValueError(f"upload_port {upload_port!r} is not a TCP port (1 to 65535)")
    ssh_v4, ssh_v6 = _split_cidrs(ssh_allowed_cidrs)
    trail_v4, trail_v6 = _split_cidrs(upload_sources)
    return host_file(
        "firewall-sink.nft",
        table=NFT_TABLE,
        admin_ssh_v4=_nft_set("admin_ssh_v4", "ipv4_addr", ssh_v4),
        admin_ssh_v6=_nft_set("admin_ssh_v6", "ipv6_addr", ssh_v6),
        trail_hosts_v4=_nft_set("trail_hosts_v4", "ipv4_addr", trail_v4),
        trail_hosts_v6=_nft_set("trail_hosts_v6", "ipv6_addr", trail_v6),
        output_chain=_piece("firewall-output.nft"),
        host_input=_piece("firewall-host-input.nft"),
        input_drop=_piece("firewall-input-drop.nft"),
        upload_port=str(upload_port),
    )
