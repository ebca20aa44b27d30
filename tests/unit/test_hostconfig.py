"""The rendered host hardening, as text (pure; the real tools read it in tests/host)."""

from __future__ import annotations

import ipaddress
import json
import re

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from components.conventions import CAGE_BRIDGE_PREFIX, EGRESS_BRIDGE_PREFIX
from components.hostconfig import (
    CAGE_ADDRESS_POOL,
    DEFAULT_BRIDGE_IP,
    DOCKER_ENGINE_VERSION,
    DOCKER_REPO_KEY_FINGERPRINT,
    FORBIDDEN_V4,
    HETZNER_RESOLVERS,
    NFT_TABLE,
    SYSCTLS,
    cgroup_driver,
    daemon_config,
    render_bootstrap_script,
    render_cloud_init,
    render_daemon_json,
    render_host_key_install,
    render_nftables,
    render_sshd_config,
    render_sysctls,
)
from components.hostkeys import derive_first_contact_key, derive_ssh_host_key
from components.hostscripts import header_variables

OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlBtDA0i5ihElhG3/PErDdYCsd0LYDdWGvMgnr6swy5 ops@clawstaff"
KEY = derive_ssh_host_key("stack sealing secret", "fsn1-cage-01")


def resolved(script: str) -> str:
    """The rendered script with every `"$NAME"` of a header variable replaced by its value: the text of
    the commands as bash runs them (the files the bootstrap installs arrive in header variables)."""
    for name, value in header_variables(script).items():
        script = script.replace(f'"${name}"', value)
    return script


BOOTSTRAP_ARGS = {
    "host_name": "fsn1-cage-01",
    "ssh_authorized_keys": [OPERATOR_KEY],
    "ssh_allowed_cidrs": ["203.0.113.0/24"],
}


# daemon.json ---------------------------------------------------------------------------------------


def test_daemon_config_carries_every_isolation_setting() -> None:
    config = daemon_config()
    assert config["userns-remap"] == "default"
    assert config["icc"] is False
    assert config["no-new-privileges"] is True
    assert config["live-restore"] is True
    assert config["userland-proxy"] is False
    assert config["ipv6"] is False and config["ip6tables"] is False
    assert config["insecure-registries"] == []
    assert config["default-cgroupns-mode"] == "private"
    assert config["log-driver"] == "json-file"
    assert {"max-size", "max-file"} <= set(config["log-opts"])
    assert config["default-ulimits"]["core"] == {"Name": "core", "Soft": 0, "Hard": 0}
    assert config["dns"] == list(HETZNER_RESOLVERS)


def test_daemon_config_never_opens_a_socket_itself() -> None:
    """No "hosts": the unit's `-H fd://` (or dockerd's default) is the only, unix, socket."""
    assert "hosts" not in daemon_config()
    assert "tcp://" not in render_daemon_json()


def test_dns_is_optional_and_validated() -> None:
    assert "dns" not in daemon_config(dns=[])
    assert daemon_config(dns=["10.255.255.53"])["dns"] == ["10.255.255.53"]
    with pytest.raises(ValueError):
        daemon_config(dns=["resolver.example"])


def test_daemon_json_is_stable_sorted_text() -> None:
    text = render_daemon_json()
    assert text == render_daemon_json()
    assert json.loads(text) == daemon_config()
    keys = [line.split('"')[1] for line in text.splitlines() if line.startswith('  "')]
    assert keys == sorted(keys)


def test_cage_pool_is_disjoint_from_every_forbidden_range() -> None:
    """The firewall drops cage traffic to these ranges without exceptions; that is only safe when a
    cage's own network (cage <-> proxy) never falls inside one of them."""
    pool = ipaddress.ip_network(CAGE_ADDRESS_POOL)
    for forbidden in FORBIDDEN_V4:
        assert not pool.overlaps(ipaddress.ip_network(forbidden)), forbidden
    assert not pool.overlaps(ipaddress.ip_network(DEFAULT_BRIDGE_IP, strict=False))
    assert daemon_config()["default-address-pools"] == [{"base": CAGE_ADDRESS_POOL, "size": 29}]


def test_engine_version_is_pinned_past_the_embedded_dns_fix() -> None:
    epoch, rest = DOCKER_ENGINE_VERSION.split(":")
    upstream = tuple(int(p) for p in rest.split("-")[0].split("."))
    assert epoch == "5" and upstream >= (26, 0, 0)  # CVE-2024-29018 fixed in 26.0.0
    assert rest.endswith("~debian.12~bookworm")
    assert re.fullmatch(r"[0-9A-F]{40}", DOCKER_REPO_KEY_FINGERPRINT)


# nftables ------------------------------------------------------------------------------------------


def test_rules_replace_only_their_own_table() -> None:
    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    assert "flush ruleset" not in rules
    tables = re.findall(r"^(?:delete )?table (\w+) (\w+)", rules, flags=re.M)
    assert set(tables) == {("inet", NFT_TABLE)}
    # create-if-missing, delete, define: one atomic transaction, re-runnable.
    assert (
        rules.index(f"table inet {NFT_TABLE}\n")
        < rules.index(f"delete table inet {NFT_TABLE}")
        < rules.index(f"table inet {NFT_TABLE} {{")
    )


def test_rules_cover_cage_and_egress_bridges_and_every_forbidden_range() -> None:
    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    for prefix in (CAGE_BRIDGE_PREFIX, EGRESS_BRIDGE_PREFIX):
        assert f'iifname "{prefix}*" counter drop' in rules  # input from the bridge: dropped
        assert f'iifname "{prefix}*" jump cage_destination' in rules
    for network in FORBIDDEN_V4:
        assert network in rules
    assert "fib daddr type local" in rules
    assert "meta nfproto ipv6" in rules
    assert "priority dstnat - 10" in rules  # before Docker's DNAT
    assert rules.count("priority filter - 10") == 3  # forward, input, output: before Docker's filter chains
    # The metadata service (user-data) is root's alone on the host itself (proved on the VM tier).
    assert "ip daddr 169.254.169.254 meta skuid != 0 counter reject" in rules.split("chain output")[1]


def test_admin_ssh_cidrs_are_normalised_and_split_by_family() -> None:
    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.77/24", "2001:db8::1/48", "203.0.113.0/24"])
    assert "elements = { 203.0.113.0/24 }" in rules
    assert "elements = { 2001:db8::/48 }" in rules
    assert "policy drop;" in rules.split("chain input")[1]


def test_bad_or_missing_admin_cidrs_are_refused() -> None:
    with pytest.raises(ValueError, match="not a CIDR: 'office'"):
        render_nftables(ssh_allowed_cidrs=["office"])
    with pytest.raises(ValueError, match="ssh_allowed_cidrs is empty"):
        render_nftables(ssh_allowed_cidrs=[])


def test_unguarded_input_keeps_the_cage_rules() -> None:
    guarded = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    unguarded = render_nftables(ssh_allowed_cidrs=[], guard_host_input=False)
    assert "policy accept;" in unguarded.split("chain input")[1]
    assert "tcp dport 22" not in unguarded
    assert (
        guarded.split("chain input")[0].split("set admin_ssh_v4")[0]
        == unguarded.split("chain input")[0].split("set admin_ssh_v4")[0]
    )
    assert (
        guarded.split("chain cage_destination")[1].split("chain input")[0]
        == unguarded.split("chain cage_destination")[1].split("chain input")[0]
    )


@given(st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(8, 32)), min_size=1, max_size=5))
def test_every_allowed_cidr_appears_normalised(raw: list[tuple[int, int]]) -> None:
    cidrs = [f"{ipaddress.IPv4Address(address)}/{prefix}" for address, prefix in raw]
    rules = render_nftables(ssh_allowed_cidrs=cidrs)
    admin = rules.split("set admin_ssh_v4")[1].split("}")[0]
    for cidr in cidrs:
        assert str(ipaddress.ip_network(cidr, strict=False)) in admin


# sysctls, sshd -------------------------------------------------------------------------------------


def test_sysctls_render_each_key_once() -> None:
    text = render_sysctls()
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    keys = [line.split(" = ")[0] for line in settings]
    assert len(keys) == len(set(keys)) == len(SYSCTLS)
    assert "net.ipv4.ip_forward = 1" in settings
    assert "net.bridge.bridge-nf-call-iptables = 1" in settings  # bridged cage traffic meets the firewall


def test_sshd_drop_in_is_keys_only() -> None:
    lines = dict(line.split(" ", 1) for line in render_sshd_config().splitlines() if line and not line.startswith("#"))
    assert lines["PasswordAuthentication"] == "no"
    assert lines["KbdInteractiveAuthentication"] == "no"
    assert lines["PermitRootLogin"] == "prohibit-password"
    assert lines["AuthenticationMethods"] == "publickey"
    assert lines["HostKey"] == "/etc/ssh/ssh_host_ed25519_key"


# bootstrap, cloud-init -----------------------------------------------------------------------------


def test_bootstrap_is_strict_bash_and_deterministic() -> None:
    script = render_bootstrap_script(**BOOTSTRAP_ARGS)
    assert script.startswith("#!/bin/bash\n")
    assert "set -euo pipefail" in script.splitlines()[2]
    assert script == render_bootstrap_script(**BOOTSTRAP_ARGS)
    assert not [line for line in script.splitlines() if line != line.rstrip()]  # keeps YAML literal blocks


def test_bootstrap_installs_exactly_the_rendered_files() -> None:
    script = resolved(render_bootstrap_script(**BOOTSTRAP_ARGS))
    for rendered in (
        render_daemon_json(),
        render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"]),
        render_sysctls(),
        render_sshd_config(),
    ):
        assert rendered in script
    assert OPERATOR_KEY in script


def test_bootstrap_does_every_step() -> None:
    # Debian 12: the pinned docker-ce from Docker's repository.
    script = resolved(render_bootstrap_script(**BOOTSTRAP_ARGS, debian="debian-12"))
    for step in (
        "swapoff -a",
        "modprobe br_netfilter",
        "sysctl -q -p /etc/sysctl.d/90-clawstaff.conf",
        "sshd -t",
        "unattended-upgrades",
        "systemctl enable --now auditd.service",
        "/etc/apt/apt.conf.d/20auto-upgrades",
        "nft -c -f /etc/clawstaff/firewall.nft",
        "systemctl enable clawstaff-firewall.service",
        "Requires=clawstaff-firewall.service",
        "docker_key_ok",
        DOCKER_REPO_KEY_FINGERPRINT,
        f"readonly DOCKER_VERSION='{DOCKER_ENGINE_VERSION}'",
        "apt-mark hold docker-ce docker-ce-cli",
        "name=userns",
    ):
        assert step in script, step
    # daemon.json lands before the package whose installation first starts the engine.
    assert script.index("put /etc/docker/daemon.json") < script.index('"docker-ce=$DOCKER_VERSION"')


def test_debian_13_bootstrap_takes_debians_own_engine_with_the_dns_fix() -> None:
    script = render_bootstrap_script(**BOOTSTRAP_ARGS)  # debian-13 is the default
    header = resolved(script)
    assert "readonly ENGINE=docker.io" in header and "readonly DEBIAN_CODENAME=trixie" in header
    assert "readonly DOCKER_VERSION=26.1.5" in header  # the lowest accepted: CVE-2024-29018 fixed in 26.0.0
    assert "apt-get install -y -q --no-install-recommends docker.io docker-cli" in script
    assert 'dpkg --compare-versions "$installed" ge "$DOCKER_VERSION"' in script
    assert script.index("put /etc/docker/daemon.json") < script.index("docker.io docker-cli")


def test_bootstrap_refuses_an_unknown_release() -> None:
    with pytest.raises(ValueError, match="debian-11"):
        render_bootstrap_script(**BOOTSTRAP_ARGS, debian="debian-11")


@pytest.mark.parametrize("host_name", ["fsn1; rm -rf /", "Host", "a" * 64, "-lead", "trail-", ""])
def test_bootstrap_refuses_hostile_host_names(host_name: str) -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        render_bootstrap_script(**{**BOOTSTRAP_ARGS, "host_name": host_name})


@pytest.mark.parametrize(
    "key", [OPERATOR_KEY + "\nssh-ed25519 AAAA injected", "ssh-ed25519", "not a key", "CLAWSTAFF_EOF"]
)
def test_bootstrap_refuses_malformed_authorized_keys(key: str) -> None:
    with pytest.raises(ValueError):
        render_bootstrap_script(**{**BOOTSTRAP_ARGS, "ssh_authorized_keys": [key]})
    with pytest.raises(ValueError, match="empty"):
        render_bootstrap_script(**{**BOOTSTRAP_ARGS, "ssh_authorized_keys": []})


def test_host_key_install_never_carries_the_private_key() -> None:
    script = render_host_key_install(KEY)
    assert "PRIVATE KEY" not in script
    assert KEY.private_openssh.splitlines()[1] not in script
    assert KEY.fingerprint in script
    assert 'cat >"$tmp"' in script  # from stdin


def test_cloud_init_holds_the_first_contact_key_and_runs_the_bootstrap() -> None:
    first = derive_first_contact_key("stack sealing secret", "fsn1-cage-01")
    text = render_cloud_init(**BOOTSTRAP_ARGS, first_contact_key=first)
    assert text.startswith("#cloud-config\n")
    document = yaml.safe_load(text)
    assert document["ssh_keys"] == {"ed25519_private": first.private_openssh, "ed25519_public": first.public_openssh}
    assert document["ssh_deletekeys"] is True
    assert document["ssh_pwauth"] is False
    (written,) = document["write_files"]
    assert written["content"] == render_bootstrap_script(**BOOTSTRAP_ARGS)
    assert written["permissions"] == "0700"
    assert document["runcmd"] == [[written["path"]]]
    assert "content: |" in text  # a readable literal block, not an escaped one-line string


def test_user_data_holds_no_long_lived_secret() -> None:
    """The metadata service serves user-data to anything on the server, for the server's life: the
    derived host key (and the sealing key it comes from) are never in it."""
    first = derive_first_contact_key("stack sealing secret", "fsn1-cage-01")
    text = render_cloud_init(**BOOTSTRAP_ARGS, first_contact_key=first)
    for line in KEY.private_openssh.splitlines()[2:-1]:  # the first base64 line is the format header
        assert line not in text
    assert KEY.public_openssh.split()[1] not in text
    assert "stack sealing secret" not in text
    assert first.public_openssh.split()[1] != KEY.public_openssh.split()[1]


def test_cloud_init_is_deterministic_and_fits_hetzner_user_data() -> None:
    first = derive_first_contact_key("stack sealing secret", "fsn1-cage-01")
    text = render_cloud_init(**BOOTSTRAP_ARGS, first_contact_key=first)
    assert text == render_cloud_init(
        **BOOTSTRAP_ARGS, first_contact_key=derive_first_contact_key("stack sealing secret", "fsn1-cage-01")
    )
    assert len(text.encode()) < 32 * 1024  # Hetzner Cloud's user-data limit


# attack-findings (issue 12) -------------------------------------------------------------------------


def test_cage_bridges_are_untracked_and_carry_only_tcp_to_the_proxy_port() -> None:
    from components.egress import PROXY_PORT
    from components.hostconfig import PROXY_MAX_FLOWS

    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    raw = rules.split("chain raw_prerouting {", 1)[1].split("}", 1)[0]
    assert "hook prerouting priority raw" in raw and f'iifname "{CAGE_BRIDGE_PREFIX}*" notrack' in raw
    bridge = rules.split("chain cage_bridge {", 1)[1].split("\n    }", 1)[0]
    lines = [l.strip() for l in bridge.strip().splitlines()]
    assert lines[0].startswith("meta l4proto != tcp counter drop")
    assert lines[1].startswith(f"tcp sport {PROXY_PORT} tcp flags & (fin | syn | rst | ack) == syn counter drop")
    assert lines[3:5] == [f"tcp dport {PROXY_PORT} return", f"tcp sport {PROXY_PORT} return"]
    assert lines[5].startswith("counter drop")
    # never one negated pair of ports in a rule: nft merges `sport != P dport != P` into a wrong match
    statements = "\n".join(l for l in rules.splitlines() if not l.strip().startswith("#"))
    assert not re.search(r"sport != \S+ tcp dport !=|dport != \S+ tcp sport !=", statements)
    assert f'iifname "{CAGE_BRIDGE_PREFIX}*" oifname "{CAGE_BRIDGE_PREFIX}*" jump cage_bridge' in rules
    assert f"ct count over {PROXY_MAX_FLOWS} }} counter drop" in rules


def test_a_cages_new_connections_to_its_proxy_are_rate_limited_per_bridge() -> None:
    from components.egress import CAGE_CONNECTIONS_BURST, CAGE_CONNECTIONS_PER_SECOND, PROXY_PORT

    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    bridge = rules.split("chain cage_bridge {", 1)[1].split("\n    }", 1)[0]
    lines = [l.strip() for l in bridge.strip().splitlines()]
    # every SYN to the proxy's port, before the rule that lets it through; keyed by the cage's bridge
    assert lines[2] == (
        f"tcp dport {PROXY_PORT} tcp flags & (fin | syn | rst | ack) == syn add @cage_connections "
        f"{{ iifname limit rate over {CAGE_CONNECTIONS_PER_SECOND}/second burst {CAGE_CONNECTIONS_BURST} packets }} "
        "jump cage_throttled"
    )
    throttled = rules.split("chain cage_throttled {", 1)[1].split("\n    }", 1)[0]
    assert 'log prefix "clawstaff-cage-throttled: "' in throttled and "limit rate 10/minute" in throttled
    assert throttled.strip().splitlines()[-1].strip().startswith("counter drop")
    assert "set cage_connections {" in rules and "type ifname" in rules


def test_every_connection_a_proxy_opens_is_logged_by_the_host_when_it_opens() -> None:
    rules = render_nftables(ssh_allowed_cidrs=["203.0.113.0/24"])
    forward = rules.split("chain forward {", 1)[1].split("\n    }", 1)[0]
    last = [l.strip() for l in forward.strip().splitlines()][-1]
    assert (
        last
        == f'iifname "{EGRESS_BRIDGE_PREFIX}*" ct state new meta l4proto tcp log prefix "clawstaff-proxy-open: " level info'
    )


def test_bootstrap_refuses_cgroup_v1_and_hosts_get_yama() -> None:
    script = render_bootstrap_script(**BOOTSTRAP_ARGS)
    assert "[ -f /sys/fs/cgroup/cgroup.controllers ]" in script and "cgroup v2" in script
    assert ("kernel.yama.ptrace_scope", "2") in {(k, v) for k, v, _ in SYSCTLS}


def test_provisioned_hosts_run_the_systemd_cgroup_driver_and_the_local_engine_cgroupfs() -> None:
    # The cages' limits take the form of the engine's driver (components.cagehost): a slice on a host
    # the program provisions (systemd on cgroup v2), a cgroup on this machine's engine (no systemd).
    assert daemon_config()["exec-opts"] == ["native.cgroupdriver=systemd"]
    assert daemon_config(cgroup_driver="cgroupfs")["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert [cgroup_driver(kind) for kind in ("cloud", "dedicated", "local")] == ["systemd", "systemd", "cgroupfs"]
