"""The production host path, run for real on a Debian 13 VM: cloud-init with the program's
user-data, the first contact pinned to the first-contact key, the derived host key, the bootstrap
(Debian's docker.io, daemon.json, nftables, sysctls, sshd) under systemd and cgroup v2."""

from __future__ import annotations

import json

import pytest

from components import hostscripts
from components.hostconfig import HOST_KEY_PATH, NFT_TABLE, SYSCTL_PATH, render_daemon_json
from components.runtimes import RUNSC, RUNSC_PACKAGE, RUNSC_PATH
from tests.vm.conftest import ssh
from tools import mockrun, vmhost

pytestmark = pytest.mark.vm


def test_cloud_init_ran_the_programs_user_data_without_errors(vm_host):
    host, machine, status, _ = vm_host
    assert status.get("status") == "done", status
    assert status.get("errors") == [], status
    # The user-data cloud-init consumed is the one the program rendered, byte for byte.
    done = ssh(machine, "cat /var/lib/cloud/instance/user-data.txt")
    assert done.returncode == 0 and done.stdout == host.user_data


def test_systemd_and_cgroup_v2_as_on_every_current_hetzner_image(vm_host):
    _, machine, _, _ = vm_host
    assert ssh(machine, "readlink /proc/1/exe").stdout.strip().endswith("systemd")
    assert ssh(machine, "stat -f -c %T /sys/fs/cgroup").stdout.strip() == "cgroup2fs"
    state = ssh(machine, "systemctl is-system-running").stdout.strip()
    failed = ssh(machine, "systemctl --failed --no-legend --plain").stdout
    assert state == "running", failed


def test_the_engine_is_debians_docker_io_hardened_on_cgroup_v2(vm_host):
    host, machine, _, _ = vm_host
    info = json.loads(ssh(machine, "docker info --format '{{json .}}'").stdout)
    version = tuple(int(p) for p in info["ServerVersion"].split(".")[:2])
    assert version >= (26, 0), info["ServerVersion"]  # the CVE-2024-29018 fix
    configured = json.loads(ssh(machine, "cat /etc/docker/daemon.json").stdout)
    # The program's daemon.json, as rendered for this host: with runsc, because a claw of it runs under gVisor.
    rendered = hostscripts.header_variables(mockrun.unwrap_secrets(host.bootstrap_command.inputs["stdin"]))
    assert (
        configured == json.loads(rendered["DAEMON_JSON"]) == json.loads(render_daemon_json(runtimes=("runc", "gvisor")))
    )
    assert info["Runtimes"][RUNSC]["path"] == RUNSC_PATH and "runc" in info["Runtimes"]
    assert info["DefaultRuntime"] == "runc"
    assert ssh(machine, f"dpkg-query -W -f='${{Status}}' {RUNSC_PACKAGE}").stdout == "install ok installed"
    driver = next(o.split("=", 1)[1] for o in configured["exec-opts"] if o.startswith("native.cgroupdriver="))
    assert info["CgroupVersion"] == "2" and info["CgroupDriver"] == driver
    assert any(opt.startswith("name=userns") for opt in info["SecurityOptions"]), info["SecurityOptions"]
    assert info["LiveRestoreEnabled"] is True
    assert ssh(machine, "dpkg-query -W -f='${Status}' docker.io").stdout == "install ok installed"
    assert ssh(machine, "systemctl is-active docker.service").stdout.strip() == "active"


def test_the_firewall_is_loaded_and_the_engine_requires_it(vm_host):
    _, machine, _, _ = vm_host
    assert ssh(machine, f"nft list table inet {NFT_TABLE}").returncode == 0
    assert ssh(machine, "systemctl is-active clawstaff-firewall.service").stdout.strip() == "active"
    requires = ssh(machine, "systemctl show -p Requires --value docker.service").stdout
    assert "clawstaff-firewall.service" in requires


def test_swap_off_and_sysctls_applied(vm_host):
    _, machine, _, _ = vm_host
    assert ssh(machine, "swapon --show --noheadings").stdout.strip() == ""
    wanted = ssh(machine, f"cat {SYSCTL_PATH}").stdout
    for line in (line for line in wanted.splitlines() if line and not line.startswith("#")):
        key, _, value = (p.strip() for p in line.partition("="))
        assert ssh(machine, f"sysctl -n {key}").stdout.split() == value.split(), key


def test_sshd_presents_the_derived_host_key_and_nothing_else(vm_host):
    host, machine, _, _ = vm_host
    assert host.host_key_public != host.first_contact_public
    public = ssh(machine, f"cat {HOST_KEY_PATH}.pub").stdout.split()[:2]
    assert public == host.host_key_public.split()[:2]
    keys = ssh(machine, "ls /etc/ssh/ | grep '^ssh_host_.*_key$'").stdout.split()
    assert keys == ["ssh_host_ed25519_key"]
    assert "passwordauthentication no" in ssh(machine, "sshd -T").stdout


def test_the_first_contact_key_is_trusted_no_more(vm_host):
    """After the first contact, a client pinning the first-contact key (the one in the user-data)
    is refused by its own ssh: the server no longer holds that key."""
    host, machine, _, _ = vm_host
    with pytest.raises(vmhost.HostKeyRefused):
        vmhost.run_remote(host.host_key_command, address=machine.address, identity=machine.operator_key)


def test_a_wrong_host_key_makes_the_deployment_refuse(vm_host):
    """A connection pinned to another key than the host presents: refused before anything runs."""
    host, machine, _, _ = vm_host
    impostor = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlBtDA0i5ihElhG3/PErDdYCsd0LYDdWGvMgnr6swy5 impostor"
    connection = dict(vmhost.mockrun.unwrap_secrets(host.bootstrap_command.inputs["connection"]), hostKey=impostor)
    command = vmhost.mockrun.Registered(
        urn=host.bootstrap_command.urn, type=host.bootstrap_command.type, name="impostor-check", custom=True,
        inputs={**host.bootstrap_command.inputs, "connection": connection, "create": "touch /root/ran", "stdin": ""},
    )  # fmt: skip
    with pytest.raises(vmhost.HostKeyRefused):
        vmhost.run_remote(command, address=machine.address, identity=machine.operator_key)
    assert ssh(machine, "test -e /root/ran").returncode == 1  # nothing ran


def test_no_long_lived_secret_in_what_the_metadata_service_serves(vm_host):
    """The user-data (what Hetzner's metadata service serves, and cloud-init's copy on disk) holds the
    first-contact key, which the server no longer has; never the derived host key."""
    host, machine, _, _ = vm_host
    private = ssh(machine, f"cat {HOST_KEY_PATH}").stdout
    body = [line for line in private.splitlines()[2:-1] if line]
    assert body, "the derived private key is installed"
    for line in body:
        assert line not in host.user_data
    on_disk = ssh(machine, "cat /var/lib/cloud/instance/user-data.txt").stdout
    assert all(line not in on_disk for line in body)
    first_contact = host.first_contact_public.split()[1]
    assert first_contact not in ssh(machine, "cat /etc/ssh/*.pub").stdout


METADATA_STANDIN = (
    "ip addr replace 169.254.169.254/32 dev lo && "
    "(python3 -m http.server --bind 169.254.169.254 80 --directory /var/lib/cloud/instance "
    ">/dev/null 2>&1 & echo $! > /run/metadata-standin.pid) && sleep 2"
)
FETCH = (
    'python3 -I -c "import urllib.request,sys; '
    "sys.stdout.write(urllib.request.urlopen('http://169.254.169.254/user-data.txt', timeout=5).read()[:13].decode())\""
)


def test_the_metadata_address_is_root_only_on_the_host(vm_host):
    _, machine, _, _ = vm_host
    assert ssh(machine, METADATA_STANDIN).returncode == 0
    try:
        as_root = ssh(machine, FETCH)
        assert as_root.returncode == 0 and as_root.stdout == "#cloud-config", as_root.stderr
        as_nobody = ssh(machine, f"runuser -u nobody -- {FETCH}")
        assert as_nobody.returncode != 0
        assert "Connection refused" in as_nobody.stderr or "refused" in as_nobody.stderr.lower(), as_nobody.stderr
    finally:
        ssh(machine, "kill $(cat /run/metadata-standin.pid); ip addr del 169.254.169.254/32 dev lo")


def test_the_audit_daemon_runs_with_the_programs_settings(vm_host):
    from components.hostconfig import AUDIT_BASE_RULES, AUDITD_CONF

    _, machine, _, _ = vm_host
    status = dict(line.split(" ", 1) for line in ssh(machine, "auditctl -s").stdout.splitlines() if " " in line)
    assert int(status["pid"]) > 0 and status["enabled"] == "1", status
    assert status["backlog_limit"] == "8192" and status["backlog_wait_time"] == "60000", status
    assert ssh(machine, "cat /etc/audit/auditd.conf").stdout == AUDITD_CONF
    assert ssh(machine, "cat /etc/audit/rules.d/audit.rules").stdout == AUDIT_BASE_RULES
