"""The rendered nftables rules: accepted by `nft -c`, idempotent, harmless to Docker's tables, and
(in throwaway network namespaces) actually stopping cage and proxy traffic to the host and to
private space while a proxy still reaches a public address."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from components.hostconfig import NFT_TABLE, render_nftables
from tests.host.conftest import Namespaces, require_tool, run

pytestmark = pytest.mark.host

HOST_PORT = 2222  # a stand-in for any host service (sshd, dockerd's metrics, ...)
WORLD_PORT = 8080


@pytest.mark.parametrize("guard_host_input", [True, False])
def test_nft_check_accepts_the_rules(tmp_path: Path, guard_host_input: bool) -> None:
    nft = require_tool("nft")
    rules = tmp_path / "firewall.nft"
    rules.write_text(
        render_nftables(ssh_allowed_cidrs=["203.0.113.0/24", "2001:db8::/48"], guard_host_input=guard_host_input)
    )
    run([nft, "-c", "-f", str(rules)])


def test_nft_check_is_a_real_check(tmp_path: Path) -> None:
    """Control: nft -c rejects a corrupted rule, so the passing check above means something."""
    nft = require_tool("nft")
    rules = tmp_path / "firewall.nft"
    rules.write_text(
        render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"]).replace("fib daddr type local", "fib daddr type nowhere")
    )
    assert subprocess.run([nft, "-c", "-f", str(rules)], capture_output=True).returncode != 0


def test_loading_twice_replaces_only_our_table(namespaces: Namespaces, tmp_path: Path) -> None:
    require_tool("nft")
    host = namespaces.new("fw")
    rules = tmp_path / "firewall.nft"
    rules.write_text(render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"]))
    # Stand-in for Docker's iptables-nft tables, which must survive every reload of ours.
    namespaces.exec(
        host,
        "nft",
        "add table ip filter; add chain ip filter DOCKER-USER; add rule ip filter DOCKER-USER counter return",
    )
    namespaces.exec(host, "nft", "-f", str(rules))
    namespaces.exec(host, "nft", "-f", str(rules))
    tables = namespaces.exec(host, "nft", "list", "tables").stdout.split("\n")
    assert sorted(t.strip() for t in tables if t.strip()) == sorted(["table ip filter", f"table inet {NFT_TABLE}"])
    assert "DOCKER-USER" in namespaces.exec(host, "nft", "list", "table", "ip", "filter").stdout
    listed = namespaces.exec(host, "nft", "list", "table", "inet", NFT_TABLE).stdout
    assert listed.count("chain input") == 1 and listed.count("chain forward") == 1


def _veth(ns: Namespaces, host: str, host_if: str, other: str, host_addr: str, other_addr: str, gateway: str) -> None:
    ns.exec(host, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", other)
    ns.exec(host, "ip", "addr", "add", host_addr, "dev", host_if)
    ns.exec(host, "ip", "link", "set", host_if, "up")
    ns.exec(other, "ip", "addr", "add", other_addr, "dev", "eth0")
    ns.exec(other, "ip", "link", "set", "eth0", "up")
    ns.exec(other, "ip", "route", "add", "default", "via", gateway)


@pytest.fixture
def topology(namespaces: Namespaces) -> dict[str, str]:
    """host routes between a cage (behind cg-probe), a proxy (behind ce-probe) and a "world" that
    has a private address, a public-looking address (TEST-NET-3) and the metadata address."""
    require_tool("nft")
    ns = namespaces
    host, cage, proxy, world = ns.new("host"), ns.new("cage"), ns.new("proxy"), ns.new("world")
    ns.exec(host, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    _veth(ns, host, "cg-probe", cage, "198.18.0.1/29", "198.18.0.2/29", "198.18.0.1")
    _veth(ns, host, "ce-probe", proxy, "198.18.0.9/29", "198.18.0.10/29", "198.18.0.9")
    ns.exec(host, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", world)
    for address in ("10.9.0.1/24", "203.0.113.1/24"):
        ns.exec(host, "ip", "addr", "add", address, "dev", "up0")
    ns.exec(host, "ip", "link", "set", "up0", "up")
    ns.exec(host, "ip", "route", "add", "default", "via", "203.0.113.2")
    for address in ("10.9.0.2/24", "203.0.113.2/24", "169.254.169.254/32"):
        ns.exec(world, "ip", "addr", "add", address, "dev", "eth0")
    ns.exec(world, "ip", "link", "set", "eth0", "up")
    ns.exec(world, "ip", "route", "add", "198.18.0.0/16", "via", "203.0.113.1")
    ns.listen(host, HOST_PORT)
    ns.listen(world, WORLD_PORT, 53)
    return {"host": host, "cage": cage, "proxy": proxy, "world": world}


def test_rules_isolate_cages_and_proxies(namespaces: Namespaces, topology: dict[str, str], tmp_path: Path) -> None:
    ns, host, cage, proxy = namespaces, topology["host"], topology["cage"], topology["proxy"]
    # Control: without the rules every probe below gets through, so "blocked" is the rules' doing.
    assert ns.probe(cage, "198.18.0.1", HOST_PORT) == "open"
    assert ns.probe(cage, "10.9.0.2", WORLD_PORT) == "open"
    assert ns.probe(proxy, "169.254.169.254", WORLD_PORT) == "open"

    rules = tmp_path / "firewall.nft"
    # 10.9.0.2 plays the upstream resolver: the one private destination a proxy may reach, port 53 only.
    rules.write_text(render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"], dns_resolvers=["10.9.0.2"]))
    ns.exec(host, "nft", "-f", str(rules))

    expectations = {
        (cage, "198.18.0.1", HOST_PORT): "blocked",  # the host, through the cage bridge's gateway
        (cage, "10.9.0.1", HOST_PORT): "blocked",  # the host, at another of its addresses
        (cage, "10.9.0.2", WORLD_PORT): "blocked",  # private space
        (cage, "203.0.113.2", WORLD_PORT): "blocked",  # anything routed: a cage only talks to its proxy
        (cage, "10.9.0.2", 53): "blocked",  # the resolver exception is for proxies, not cages
        (proxy, "198.18.0.9", HOST_PORT): "blocked",
        (proxy, "203.0.113.1", HOST_PORT): "blocked",  # the host's public-looking address
        (proxy, "10.9.0.2", WORLD_PORT): "blocked",
        (proxy, "169.254.169.254", WORLD_PORT): "blocked",  # cloud metadata (user-data)
        (proxy, "198.18.0.2", 22): "blocked",  # another cage network, routed
        (proxy, "203.0.113.2", WORLD_PORT): "open",  # the proxy's real job: public egress
        (proxy, "10.9.0.2", 53): "open",  # upstream DNS
    }
    observed = {key: ns.probe(*key) for key in expectations}
    assert observed == expectations


def test_guarded_input_admits_ssh_only_from_allowed_cidrs(
    namespaces: Namespaces, topology: dict[str, str], tmp_path: Path
) -> None:
    ns, host, world = namespaces, topology["host"], topology["world"]
    ns.listen(host, 22)
    rules = tmp_path / "firewall.nft"
    rules.write_text(render_nftables(ssh_allowed_cidrs=["203.0.113.2/32"]))
    ns.exec(host, "nft", "-f", str(rules))
    assert ns.probe(world, "203.0.113.1", 22) == "open"  # from 203.0.113.2, allowed
    assert ns.probe(world, "203.0.113.1", HOST_PORT) == "blocked"  # any other port
    # The same host from the world's other address: not in the allowlist.
    ns.exec(world, "ip", "route", "replace", "10.9.0.0/24", "dev", "eth0", "src", "10.9.0.2")
    assert ns.probe(world, "10.9.0.1", 22) == "blocked"
