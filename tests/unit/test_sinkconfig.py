"""The audit sink's host as text (components/sinkconfig.py, firewall.render_sink_nftables): its
bootstrap, its firewall, its certificates and their install script. Pure; the real tools read the
same text in tests/host/test_sink_tools.py."""

from __future__ import annotations

import ipaddress
import os
import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import given
from hypothesis import strategies as st

from components import trailpki, trailship
from components.firewall import render_nftables, render_sink_nftables
from components.hostconfig import (
    cloud_init_with_bootstrap,
    common_bootstrap_header,
    pack_files,
    render_bootstrap_script,
)
from components.hostkeys import derive_first_contact_key
from components.sysctls import HARDENING_SYSCTLS, SYSCTLS, render_sysctls
from components.hostscripts import FOLDER, header_variables, script_facts
from components.sinkconfig import (
    SINK_PACKAGES,
    SINK_SYSCTLS,
    render_sink_bootstrap,
    render_sink_certs_install,
    sink_certificates,
    sink_certificates_stdin,
)
from components.trailship import HostFile
from tests.unit.test_hostconfig import OPERATOR_KEY
from tests.unit.test_hostscripts import RENDERED_EXCLUDES, shellcheck

ADMIN = ["203.0.113.0/24", "2001:db8::/48"]
SINK_ARGS = {
    "host_name": "fsn1-trail",
    "ssh_authorized_keys": [OPERATOR_KEY],
    "ssh_allowed_cidrs": ADMIN,
    "address": "10.0.2.10",
    "upload_sources": ["10.0.0.0/16"],
    "retention_days": 400,
    "max_use": 30 * 10**9,
}
VALIDITY = trailpki.yearly_validity(datetime(2026, 12, 3, tzinfo=timezone.utc))


def _chain(rules: str, name: str) -> list[str]:
    body = rules.split(f"chain {name} {{", 1)[1].split("\n    }", 1)[0]
    return [line.strip() for line in body.strip().splitlines() if line.strip() and not line.strip().startswith("#")]


def set_elements(rules: str, name: str) -> list[str]:
    body = rules.split(f"set {name} {{", 1)[1].split("}", 1)[0]
    found = re.search(r"elements = \{ (.*) $", body, flags=re.M)
    return found.group(1).split(", ") if found else []


# --- the sink's firewall --------------------------------------------------------------------------------


def test_the_sinks_input_admits_ssh_from_the_admins_and_the_trail_port_from_the_cage_hosts_alone() -> None:
    rules = render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=["10.0.0.0/16"], upload_port=19532)
    chain = _chain(rules, "input")
    assert chain[0] == "type filter hook input priority filter - 10; policy drop;"
    accepts = [line for line in chain if " accept" in line]
    assert accepts == [
        "ct state established,related accept",
        'iif "lo" accept',
        accepts[2],  # ICMP, rate-limited
        accepts[3],  # ICMPv6
        "tcp dport 22 ip saddr @admin_ssh_v4 accept",
        "tcp dport 22 ip6 saddr @admin_ssh_v6 accept",
        'tcp dport 19532 ip saddr @trail_hosts_v4 accept comment "trail uploads from the cage hosts"',
        'tcp dport 19532 ip6 saddr @trail_hosts_v6 accept comment "trail uploads from the cage hosts"',
    ]
    assert accepts[2].startswith("icmp type") and accepts[3].startswith("icmpv6 type")
    assert chain[-1] == "counter drop"  # everything else, logged (rate-limited) before
    assert (set_elements(rules, "admin_ssh_v4"), set_elements(rules, "admin_ssh_v6")) == (
        ["203.0.113.0/24"],
        ["2001:db8::/48"],
    )
    assert (set_elements(rules, "trail_hosts_v4"), set_elements(rules, "trail_hosts_v6")) == (["10.0.0.0/16"], [])
    # It routes nothing, and only root reaches the metadata service (its user-data).
    assert _chain(rules, "forward") == ["type filter hook forward priority filter - 10; policy drop;"]
    assert "ip daddr 169.254.169.254 meta skuid != 0 counter reject" in rules.split("chain output")[1]
    assert "cg-" not in rules and "ce-" not in rules  # no cage bridge on the sink


def test_the_sink_shares_the_host_input_and_metadata_rules_with_a_cage_host() -> None:
    sink = render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=["10.0.0.0/16"], upload_port=19532)
    cage = render_nftables(ssh_allowed_cidrs=ADMIN)
    cage_input = _chain(cage, "input")[3:]  # after the hook and the two cage-bridge drops
    sink_input = [line for line in _chain(sink, "input")[1:] if "19532" not in line]
    assert sink_input == cage_input
    assert _chain(sink, "output") == _chain(cage, "output")


def test_a_dedicated_sinks_sources_are_the_cage_hosts_addresses_split_by_family() -> None:
    sources = ["203.0.113.99", "2001:db8:5e3b::/64", "198.51.100.7", "203.0.113.99/32"]
    rules = render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=sources, upload_port=19532)
    assert set_elements(rules, "trail_hosts_v4") == ["198.51.100.7/32", "203.0.113.99/32"]
    assert set_elements(rules, "trail_hosts_v6") == ["2001:db8:5e3b::/64"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ssh_allowed_cidrs": [], "upload_sources": ["10.0.0.0/16"], "upload_port": 19532}, "refuse all admin SSH"),
        ({"ssh_allowed_cidrs": ADMIN, "upload_sources": ["cage-host-1"], "upload_port": 19532}, "not a CIDR"),
        ({"ssh_allowed_cidrs": ADMIN, "upload_sources": ["10.0.0.0/16"], "upload_port": 0}, "not a TCP port"),
        ({"ssh_allowed_cidrs": ADMIN, "upload_sources": ["10.0.0.0/16"], "upload_port": True}, "not a TCP port"),
    ],
)
def test_a_sink_firewall_that_would_lock_out_or_admit_nonsense_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_sink_nftables(**kwargs)


def test_a_stack_without_cage_hosts_yet_admits_nobody_to_the_trail_port() -> None:
    rules = render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=[], upload_port=19532)
    assert (set_elements(rules, "trail_hosts_v4"), set_elements(rules, "trail_hosts_v6")) == ([], [])


@given(st.lists(st.ip_addresses(), min_size=1, max_size=6))
def test_every_source_is_admitted_normalised_in_its_family(addresses) -> None:
    rules = render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=[str(a) for a in addresses], upload_port=19532)
    for address in addresses:
        network = str(ipaddress.ip_network(address))
        assert network in set_elements(rules, "trail_hosts_v4" if address.version == 4 else "trail_hosts_v6")


# --- the bootstrap ----------------------------------------------------------------------------------------


def test_the_sink_bootstrap_carries_the_generic_hardening_of_a_cage_hosts() -> None:
    sink = header_variables(render_sink_bootstrap(**SINK_ARGS))
    cage = header_variables(
        render_bootstrap_script(host_name="fsn1-cage-01", ssh_authorized_keys=[OPERATOR_KEY], ssh_allowed_cidrs=ADMIN)
    )
    same = ("AUTHORIZED_KEYS", "SSHD_CONFIG", "AUTO_UPGRADES", "UNATTENDED_UPGRADES", "SSHD_DROPIN_PATH", "HOST_KEY_PATH",
            "SYSCTL_PATH", "FIREWALL_PATH", "NFT_TABLE", "DEBIAN_CODENAME")  # fmt: skip
    assert {k: sink[k] for k in same} == {k: cage[k] for k in same}
    assert set(common_bootstrap_header(host_name="h", ssh_authorized_keys=[OPERATOR_KEY], codename="trixie",
                                       sysctls=SYSCTLS, firewall="f", firewall_unit="u")) <= set(sink)  # fmt: skip
    assert sink["HOST_NAME"] == "fsn1-trail" and sink["DEBIAN_CODENAME"] == "trixie"
    assert sink["FIREWALL_RULES"] == render_sink_nftables(
        ssh_allowed_cidrs=ADMIN, upload_sources=["10.0.0.0/16"], upload_port=19532
    )
    assert "Description=clawstaff host firewall (audit sink" in sink["FIREWALL_UNIT"]
    assert script_facts(render_sink_bootstrap(**SINK_ARGS)) == {"script": "sink-bootstrap", "host": "fsn1-trail",
                                                               "role": "audit-sink"}  # fmt: skip


def test_the_sinks_sysctls_harden_the_kernel_and_route_nothing() -> None:
    assert SINK_SYSCTLS == (("net.ipv4.ip_forward", "0", "the sink routes nothing"), *HARDENING_SYSCTLS)
    assert set(HARDENING_SYSCTLS) < set(SYSCTLS)  # a cage host has every one, and Docker's routing besides
    conf = header_variables(render_sink_bootstrap(**SINK_ARGS))["SYSCTL_CONF"]
    assert conf == render_sysctls(SINK_SYSCTLS)
    assert "net.ipv4.ip_forward = 0" in conf and "bridge" not in conf and "vm.swappiness" not in conf


def test_the_sink_bootstrap_installs_debians_stunnel_and_journal_remote_and_every_trail_file() -> None:
    script = render_sink_bootstrap(**SINK_ARGS)
    header = header_variables(script)
    assert header["PACKAGES"].split() == list(SINK_PACKAGES)
    assert {"stunnel4", "systemd-journal-remote", "nftables", "unattended-upgrades"} <= set(SINK_PACKAGES)
    files = trailship.sink_files(listen="10.0.2.10:19532", retention_days=400, max_use=30 * 10**9)
    assert header["SINK_FILES"] == pack_files(files)
    assert header["SINK_UNITS"].split() == list(trailship.SINK_UNITS)
    assert header["VERIFY_UNITS"].split() == [
        "/etc/systemd/system/clawstaff-trail-vacuum.service", "/etc/systemd/system/clawstaff-trail-vacuum.timer"
    ]  # fmt: skip
    assert (header["TRAIL_DIR"], header["UPLOAD_PORT"], header["REMOTE_PORT"]) == ("/etc/clawstaff/trail", "19532",
                                                                                   "19531")  # fmt: skip
    # No Docker, no cage machinery on the sink.
    for cage_only in ("docker", "DAEMON_JSON", "br_netfilter", "swapoff", "auditd", "RUNSC"):
        assert cage_only not in script.split("# shellcheck shell=bash")[0], cage_only
    body = "\n".join(
        line for line in (FOLDER / "sink-bootstrap.sh").read_text().splitlines() if not line.startswith("#")
    )
    steps = ["require_system", "install_sshd_config", "put_files", "install_packages", "write_firewall",
             "load_firewall", "systemd-analyze verify", "verify_host"]  # fmt: skip
    assert [body.index(step) for step in steps] == sorted(body.index(step) for step in steps)
    # The trail's files are on disk before the packages whose units they change.
    assert body.index("put_files") < body.index("install_packages")


def test_the_stunnel_listens_on_the_address_the_cage_hosts_reach() -> None:
    files = header_variables(render_sink_bootstrap(**{**SINK_ARGS, "address": "198.51.100.9"}))["SINK_FILES"]
    assert "\naccept = 198.51.100.9:19532\n" in files


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"debian": "debian-12"}, "the audit sink's image 'debian-12' is not one of debian-13"),
        ({"address": "sink.example.net"}, "not an IP address"),
        ({"host_name": "Trail"}, "not a DNS label"),
        ({"ssh_authorized_keys": []}, "nobody could administer"),
        ({"upload_sources": ["10.0.0.0/33"]}, "not a CIDR"),
        ({"retention_days": 0}, "whole number of days"),
        ({"max_use": 1}, "less than two trail files"),
    ],
)
def test_a_sink_bootstrap_that_cannot_be_right_is_refused(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        render_sink_bootstrap(**{**SINK_ARGS, **change})


def test_the_sink_bootstrap_is_deterministic_linted_bash_and_fits_the_user_data() -> None:
    script = render_sink_bootstrap(**SINK_ARGS)
    assert script == render_sink_bootstrap(**SINK_ARGS)
    assert script.startswith("#!/bin/bash\n") and script.splitlines()[2] == "set -euo pipefail"
    first = derive_first_contact_key("stack sealing secret", "fsn1-trail")
    user_data = cloud_init_with_bootstrap(host_name="fsn1-trail", ssh_authorized_keys=[OPERATOR_KEY],
                                          first_contact_key=first, script=script)  # fmt: skip
    assert len(user_data.encode()) < 32 * 1024  # Hetzner Cloud's user-data limit


def test_shellcheck_passes_on_the_rendered_sink_scripts(tmp_path: Path) -> None:
    paths = []
    for name, text in {"bootstrap": render_sink_bootstrap(**SINK_ARGS),
                       "certs": render_sink_certs_install("10.0.2.10")}.items():  # fmt: skip
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        paths.append(path)
    shellcheck(paths, RENDERED_EXCLUDES)


# --- the files a bootstrap installs, as one header variable ------------------------------------------------


PUT_FILES_HARNESS = """
set -euo pipefail
source "$LIB"
put() { mkdir -p "$(dirname "$ROOT$1")"; cat >"$ROOT$1"; chmod "$2" "$ROOT$1"; CHANGED="$CHANGED$1 "; }
put_files < <(printf '%s' "$PACKED")
printf '%s' "$CHANGED"
"""


def _put_files(tmp_path: Path, packed: str) -> subprocess.CompletedProcess:
    """lib/host-common.sh's put_files on `packed`, its `put` writing below tmp_path (no root needed)."""
    env = {**os.environ, "LIB": str(FOLDER / "lib/host-common.sh"), "ROOT": str(tmp_path), "PACKED": packed}
    return subprocess.run(["bash", "-c", PUT_FILES_HARNESS], env=env, capture_output=True, text=True)


def test_put_files_installs_exactly_the_packed_files_with_their_modes(tmp_path: Path) -> None:
    files = trailship.sink_files(listen="10.0.2.10:19532", retention_days=400, max_use=30 * 10**9)
    files["/etc/clawstaff/odd"] = HostFile(0o600, "  leading\n\n\\tab\there\r\nlast line without a newline")
    files["/etc/clawstaff/empty"] = HostFile(0o640, "")
    done = _put_files(tmp_path, pack_files(files))
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.split()) == sorted(files)
    for path, file in files.items():
        written = tmp_path / path.lstrip("/")
        expected = file.text if not file.text or file.text.endswith("\n") else file.text + "\n"
        assert written.read_bytes() == expected.encode(), path
        assert written.stat().st_mode & 0o7777 == file.mode, path


@pytest.mark.parametrize(
    ("packed", "said"),
    [
        ("file 0644 3 /etc/x\none\n", "the file list ends inside /etc/x"),
        ("files 0644 1 /etc/x\none\n", "a malformed file list"),
        ("file 644 1 /etc/x\none\n", "a malformed file list"),
        ("file 0644 1 etc/x\none\n", "a malformed file list"),
    ],
)
def test_put_files_refuses_a_list_it_cannot_read_whole(tmp_path: Path, packed: str, said: str) -> None:
    done = _put_files(tmp_path, packed)
    assert done.returncode != 0 and said in done.stderr


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"etc/x": HostFile(0o644, "x")}, "must be absolute"),
        ({"/etc/a b": HostFile(0o644, "x")}, "without spaces"),
        ({"/etc/x": HostFile(0o4755, "x")}, "not a permission mode"),
    ],
)
def test_pack_files_refuses_what_put_files_would_misread(files: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        pack_files(files)


# --- the certificates ------------------------------------------------------------------------------------------


def test_the_sinks_certificate_names_the_one_address_the_cage_hosts_reach_it_at() -> None:
    ca, sink = sink_certificates("stack secret", "prod", "fsn1-trail", "10.0.2.10", VALIDITY)
    names = sink.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.0.2.10"]
    assert names.get_values_for_type(x509.DNSName) == []
    sink.certificate.verify_directly_issued_by(ca.certificate)
    assert (sink.certificate.not_valid_before_utc, sink.certificate.not_valid_after_utc) == (
        VALIDITY.not_before, VALIDITY.not_after
    )  # fmt: skip
    assert (ca, sink) == sink_certificates("stack secret", "prod", "fsn1-trail", "10.0.2.10", VALIDITY)


def test_the_install_reads_ca_certificate_and_key_on_stdin_and_never_carries_them() -> None:
    ca, sink = sink_certificates("stack secret", "prod", "fsn1-trail", "10.0.2.10", VALIDITY)
    assert sink_certificates_stdin(ca, sink) == ca.certificate_pem + sink.certificate_pem + sink.key_pem
    script = render_sink_certs_install("10.0.2.10")
    for secret_or_long in (sink.key_pem, ca.key_pem, sink.certificate_pem, ca.certificate_pem):
        for line in secret_or_long.splitlines()[1:-1]:
            assert line not in script
    assert "PRIVATE KEY" not in script
    header = header_variables(script)
    assert header == {"TRAIL_DIR": "/etc/clawstaff/trail", "ADDRESS": "10.0.2.10",
                      "SINK_UNITS": " ".join(trailship.SINK_UNITS), "UPLOAD_PORT": "19532",
                      "REMOTE_PORT": "19531"}  # fmt: skip
    body = (FOLDER / "sink-certs-install.sh").read_text()
    assert 'openssl verify -purpose sslserver -verify_ip "$ADDRESS" -CAfile' in body
    assert 'put "$TRAIL_DIR/sink.key" 0600' in body
    assert body.index("openssl verify") < body.index("put ") < body.index("restart_sink_units")
    assert script_facts(script) == {"script": "sink-certs-install", "role": "audit-sink"}


def test_the_install_refuses_an_address_that_is_not_an_ip() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        render_sink_certs_install("sink.example.net")
