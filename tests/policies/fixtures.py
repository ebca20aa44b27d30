"""A compliant cage as camelCase resource inputs: exactly what components/cage.py and components/host.py emit.

One cage is a claw container, its proxy, its internal cage network and four host-side commands (limits,
key, proxy config and, when asked for, the volume), each command local on a local host and remote over the
host's pinned SSH connection on a Hetzner host; a host adds its Docker provider and its egress network.
The scripts, names, sealing and constants come from the components' own pure functions, so the fixture
cannot drift from them silently; tests/policies/test_real_stacks.py compares it with the cages of the real
prod and local graphs. Each function returns fresh dicts, so a test can break one field and keep the rest.
"""

from __future__ import annotations

import copy
import hashlib
from decimal import Decimal
from typing import Any

from components import cage as cage_component
from components import cageaudit, cagehost, seccomp
from components import conventions as cv
from components.config import Endpoint
from components.egress import PROXY_PORT, egress_allowlist, render_proxy_config
from components.hostkeys import derive_ssh_host_key
from components.sealing import CLAW_ENV, cage_key_file_text, derive_cage_key, seal_credentials

CLAW = "acme-support"
ORG = "acme"
HOST = "fsn1-cage-01"
HOST_ADDRESS = "203.0.113.10"
STACK = "dev"
PROJECT = "clawstaff"
SEALING_KEY = "a sealing secret that only the fixture knows"
CLAW_IMAGE = "ghcr.io/clawstaff/claw-runtime@sha256:" + "3f" * 32
PROXY_IMAGE = "ghcr.io/clawstaff/egress-proxy@sha256:" + "a7" * 32
CONTROL_PLANE = Endpoint("control.clawstaff.example", 443)
CLAW_CPUS = Decimal("1")
CLAW_MEMORY = 1024 * cage_component.MiB
CLAW_PIDS = 256
CLAW_TMPFS = 256 * cage_component.MiB
VOLUME_SIZE = 1024 * cage_component.MiB
CLAW_UID = 10000

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"
DOCKER_PROVIDER_TYPE = "pulumi:providers:docker"
CAGE_TYPE = "clawstaff:fleet:ClawCage"
HOST_TYPE = "clawstaff:fleet:ClawHost"

Props = dict[str, Any]
StackEntry = tuple[str, str, Props, str]  # (type, resource name, props, provider urn)


# The cage's limits as the local engine has them (no systemd); the slice form has tests of its own.
DRIVER = "cgroupfs"


def urn(type_: str, name: str, parent_type: str = CAGE_TYPE) -> str:
    """A resource's URN; a provider's has no parent type, as the harness and the engine name it."""
    if type_.startswith("pulumi:providers:"):
        return f"urn:pulumi:{STACK}::{PROJECT}::{type_}::{name}"
    return f"urn:pulumi:{STACK}::{PROJECT}::{parent_type}${type_}::{name}"


def docker_provider_urn(host: str = HOST) -> str:
    return urn(DOCKER_PROVIDER_TYPE, f"{host}-docker")


# Every cage resource of the default host is created through this provider.
DOCKER_PROVIDER = docker_provider_urn()
COMMAND_PROVIDER = f"urn:pulumi:{STACK}::{PROJECT}::pulumi:providers:command::default"


def host_address(host: str) -> str:
    """A documentation address per host (RFC 5737), stable for a name."""
    if host == HOST:
        return HOST_ADDRESS
    return f"203.0.113.{int(hashlib.sha256(host.encode()).hexdigest(), 16) % 200 + 20}"


def host_public_key(host: str) -> str:
    return derive_ssh_host_key(SEALING_KEY, host).public_openssh


def labels(claw: str, org: str, host: str, role: str) -> list[dict[str, str]]:
    return [
        {"label": cv.LABEL_CLAW, "value": claw},
        {"label": cv.LABEL_ORG, "value": org},
        {"label": cv.LABEL_HOST, "value": host},
        {"label": cv.LABEL_ROLE, "value": role},
    ]


def claw_container_name(claw: str) -> str:
    return f"claw-{claw}"


def proxy_container_name(claw: str) -> str:
    return f"proxy-{claw}"


def cage_network_name(claw: str) -> str:
    return f"cage-{claw}"


def egress_network_name(host: str) -> str:
    return f"egress-{host}"


def cage_key(claw: str) -> bytes:
    return derive_cage_key(SEALING_KEY, claw)


def sealed_blob(claw: str) -> str:
    """Real AES-SIV ciphertext under the cage's own key, as cage.py puts it in CLAWCAGE_SEALED."""
    return seal_credentials(cage_key(claw), claw, {"ANTHROPIC_API_KEY": f"sk-ant-{claw}-0123456789"})


def proxy_config(claw: str, org: str) -> str:
    return render_proxy_config(
        claw=claw, org=org, allowlist=egress_allowlist([Endpoint("api.anthropic.com", 443)], CONTROL_PLANE)
    )


def _hardening(uid: int, memory: int, cpus: Decimal, tmpfs_size: int, claw: str, driver: str, init: bool) -> Props:
    """components.cage.hardening, as inputs: what claw and proxy share."""
    return {
        "user": f"{uid}:{uid}",
        "readOnly": True,
        "tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={tmpfs_size}"},
        "capabilities": {"drops": ["ALL"], "adds": []},
        "securityOpts": ["no-new-privileges:true", seccomp.security_opt()],
        "privileged": False,
        "init": init,
        "restart": "on-failure",
        "maxRetryCount": cage_component.MAX_RESTARTS,
        "memory": cage_component.memory_mb(memory),
        "memorySwap": cage_component.memory_mb(memory),
        "cpus": str(cpus),
        "cgroupParent": cagehost.cgroup_parent(claw, driver),
        "ipcMode": "private",
        "sysctls": {"net.ipv6.conf.all.disable_ipv6": "1"},
        "logDriver": "json-file",
        "logOpts": dict(cage_component.LOG_OPTS),
        "mustRun": True,
    }


def claw_container(
    claw: str = CLAW, org: str = ORG, host: str = HOST, volume: bool = True, driver: str = DRIVER
) -> Props:
    proxy_url = f"http://{cv.PROXY_ALIAS}:{PROXY_PORT}"
    mounts = [
        {
            "type": "bind",
            "source": cv.host_key_dir(claw),
            "target": cv.CAGE_KEY_MOUNT.rsplit("/", 1)[0],
            "readOnly": True,
        }
    ]
    if volume:
        mounts.append(
            {
                "type": "bind",
                "source": cagehost.volume_mount_path(claw),
                "target": cv.CAGE_VOLUME_MOUNT,
                "readOnly": False,
            }
        )
    return {
        "name": claw_container_name(claw),
        "image": CLAW_IMAGE,
        "networksAdvanced": [{"name": cage_network_name(claw)}],
        "dns": list(cage_component.CAGE_DNS),
        "envs": [
            f"{cv.SEALED_ENV}={sealed_blob(claw)}",
            f"{CLAW_ENV}={claw}",
            f"HOME={cage_component.CLAW_HOME}",
            f"HTTPS_PROXY={proxy_url}",
            f"HTTP_PROXY={proxy_url}",
            f"https_proxy={proxy_url}",
            f"http_proxy={proxy_url}",
        ],
        "mounts": mounts,
        "workingDir": cage_component.CLAW_WORKDIR,
        "labels": labels(claw, org, host, cv.ROLE_CLAW) + [{"label": cv.LABEL_RUNTIME, "value": "runc"}],
        "healthcheck": {
            "tests": [
                "CMD",
                *cage_component.HEALTHCHECK_PYTHON,
                "-c",
                f"import socket; socket.create_connection(('{cv.PROXY_ALIAS}', {PROXY_PORT}), 3).close()",
            ],
            "interval": "30s",
            "timeout": "5s",
            "retries": 3,
            "startPeriod": "10s",
        },
        **_hardening(CLAW_UID, CLAW_MEMORY, CLAW_CPUS, CLAW_TMPFS, claw, driver, init=False),
    }


def proxy_container(claw: str = CLAW, org: str = ORG, host: str = HOST, driver: str = DRIVER) -> Props:
    return {
        "name": proxy_container_name(claw),
        "image": PROXY_IMAGE,
        "networksAdvanced": [
            {"name": cage_network_name(claw), "aliases": [cv.PROXY_ALIAS]},
            {"name": egress_network_name(host)},
        ],
        "mounts": [
            {
                "type": "bind",
                "source": cagehost.proxy_config_dir(claw),
                "target": cv.PROXY_CONFIG_MOUNT,
                "readOnly": True,
            }
        ],
        "labels": labels(claw, org, host, cv.ROLE_PROXY)
        + [{"label": "clawstaff.config-sha256", "value": hashlib.sha256(proxy_config(claw, org).encode()).hexdigest()}],
        **_hardening(
            CLAW_UID + 1,
            cage_component.PROXY_MEMORY,
            cage_component.PROXY_CPUS,
            16 * cage_component.MiB,
            claw,
            driver,
            init=True,
        ),
    }


def cage_network(claw: str = CLAW, org: str = ORG, host: str = HOST) -> Props:
    return {
        "name": cage_network_name(claw),
        "driver": "bridge",
        "internal": True,
        "ipv6": False,
        "options": {
            "com.docker.network.bridge.enable_icc": "true",
            "com.docker.network.bridge.name": cv.cage_bridge_name(claw),
        },
        "labels": labels(claw, org, host, cv.ROLE_CAGE_NETWORK),
    }


def egress_network(host: str = HOST) -> Props:
    return {
        "name": egress_network_name(host),
        "driver": "bridge",
        "internal": False,
        "ipv6": False,
        "ipamConfigs": [{"subnet": cv.EGRESS_SUBNET, "gateway": cv.EGRESS_GATEWAY}],
        "options": {
            "com.docker.network.bridge.enable_icc": "false",
            "com.docker.network.bridge.name": cv.egress_bridge_name(host),
        },
        "labels": [{"label": cv.LABEL_ROLE, "value": cv.ROLE_EGRESS_NETWORK}, {"label": cv.LABEL_HOST, "value": host}],
    }


def docker_provider(host: str = HOST, local: bool = False) -> Props:
    """components.host: the local engine's socket, or SSH to the host pinning its derived key."""
    if local:
        return {"host": "unix:///var/run/docker.sock"}
    address = host_address(host)
    return {
        "host": f"ssh://root@{address}:22",
        "sshOpts": [
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            f"KnownHostsCommand=/bin/echo {address} {host_public_key(host)}",
            "-o",
            "BatchMode=yes",
        ],
    }


def connection(host: str = HOST) -> Props:
    """A remote command's `connection` to a Hetzner host (a secret in the real graph)."""
    return {
        "host": host_address(host),
        "user": "root",
        "hostKey": host_public_key(host),
        "port": 22,
        "perDialTimeout": 15,
        "dialErrorLimit": 10,
    }


def _command(create: str, delete: str, stdin: str | None, host: str, remote: bool) -> Props:
    props: Props = {"create": cagehost.shell_command(create), "delete": cagehost.shell_command(delete)}
    if stdin is not None:
        props["stdin"] = stdin
    if remote:
        props["connection"] = connection(host)
    return props


def limits_command(
    claw: str = CLAW, host: str = HOST, remote: bool = False, pids: int = CLAW_PIDS, driver: str | None = None
) -> Props:
    """The cage's parent cgroup with the whole cage's limits (claw + proxy), as ClawCage sizes it: by
    default a slice on a Hetzner host (remote) and a cgroup on the local engine, as cage() has it."""
    driver = driver or ("systemd" if remote else "cgroupfs")
    return _command(
        cagehost.render_limits_create(
            claw,
            cpus=CLAW_CPUS + cage_component.PROXY_CPUS,
            memory=CLAW_MEMORY + cage_component.PROXY_MEMORY,
            pids=pids + cage_component.PROXY_PIDS,
            driver=driver,
        ),
        cagehost.render_limits_delete(claw, driver=driver),
        None,
        host,
        remote,
    )


def key_command(claw: str = CLAW, host: str = HOST, remote: bool = False) -> Props:
    """Writes the per-cage key to the host's tmpfs; the key comes in as a secret stdin."""
    return _command(
        cagehost.render_key_create(claw, uid=CLAW_UID),
        cagehost.render_key_delete(claw),
        cage_key_file_text(cage_key(claw)),
        host,
        remote,
    )


def proxy_config_command(claw: str = CLAW, org: str = ORG, host: str = HOST, remote: bool = False) -> Props:
    return _command(
        cagehost.render_proxy_config_create(claw),
        cagehost.render_proxy_config_delete(claw),
        proxy_config(claw, org),
        host,
        remote,
    )


def volume_command(claw: str = CLAW, host: str = HOST, remote: bool = False) -> Props:
    kek = cagehost.derive_volume_kek(SEALING_KEY, claw)
    return _command(
        cagehost.render_volume_create(claw, size=VOLUME_SIZE, uid=CLAW_UID),
        cagehost.render_volume_delete(claw),
        cagehost.volume_kek_stdin(kek),
        host,
        remote,
    )


def audit_command(claw: str = CLAW, host: str = HOST, remote: bool = False, volume: bool = True) -> Props:
    return _command(
        cageaudit.render_audit_create(claw, uid=CLAW_UID, volume=volume),
        cageaudit.render_audit_delete(claw),
        None,
        host,
        remote,
    )


def cage(
    claw: str = CLAW, org: str = ORG, host: str = HOST, *, volume: bool = True, remote: bool = True
) -> list[StackEntry]:
    """One compliant cage in the order cage.py creates it; the host's provider and egress network are apart.

    remote: the host is a Hetzner host reached over SSH (pair with host_resources(host)); False: the local
    host (pair with host_resources(host, local=True)). A Hetzner host's cage is a systemd slice, the local
    engine's a cgroup (components.hostconfig.cgroup_driver)."""
    provider = docker_provider_urn(host)
    command_type = REMOTE_COMMAND if remote else COMMAND
    driver = "systemd" if remote else "cgroupfs"
    entries: list[StackEntry] = [
        (NETWORK, f"{claw}-network", cage_network(claw, org, host), provider),
        (command_type, f"{claw}-limits", limits_command(claw, host, remote, driver=driver), COMMAND_PROVIDER),
        (command_type, f"{claw}-key", key_command(claw, host, remote), COMMAND_PROVIDER),
        (command_type, f"{claw}-proxy-config", proxy_config_command(claw, org, host, remote), COMMAND_PROVIDER),
    ]
    if volume:
        entries.append((command_type, f"{claw}-volume", volume_command(claw, host, remote), COMMAND_PROVIDER))
    entries.append((command_type, f"{claw}-audit", audit_command(claw, host, remote, volume), COMMAND_PROVIDER))
    entries += [
        (CONTAINER, f"{claw}-proxy", proxy_container(claw, org, host, driver), provider),
        (CONTAINER, f"{claw}-claw", claw_container(claw, org, host, volume, driver), provider),
    ]
    return entries


def host_resources(host: str = HOST, local: bool = False) -> list[StackEntry]:
    """What a ClawHost adds that the cages use: its Docker provider and its egress network."""
    provider = docker_provider_urn(host)
    return [
        (DOCKER_PROVIDER_TYPE, f"{host}-docker", docker_provider(host, local), ""),
        (NETWORK, f"{host}-egress", egress_network(host), provider),
    ]


def hcloud_server() -> Props:
    return {
        "name": HOST,
        "serverType": "ccx33",
        "image": "debian-12",
        "location": "fsn1",
        "sshKeys": ["admin-key"],
        "firewallIds": [4711],
        "userData": "#cloud-config\nssh_pwauth: false\ndisable_root: true\n",
        "publicNets": [{"ipv4Enabled": True, "ipv6Enabled": True}],
    }


def hcloud_firewall() -> Props:
    return {
        "name": f"{HOST}-firewall",
        "rules": [
            {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": ["203.0.113.0/24"]},
            {"direction": "out", "protocol": "tcp", "port": "443", "destinationIps": ["0.0.0.0/0", "::/0"]},
        ],
    }


def fresh(props: Props) -> Props:
    return copy.deepcopy(props)
