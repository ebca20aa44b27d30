"""The few conventions of the clawstaff components that the pack relies on, restated on purpose.

The pack imports nothing from the program it judges (it must refuse a bad graph whoever wrote it), so
these names are copied from components/conventions.py, components/cagehost.py and components/hostscripts;
tests/policies/test_conventions_agree.py fails if the two drift apart.
"""

from __future__ import annotations

import posixpath

CONTAINER = "docker:index/container:Container"
NETWORK = "docker:index/network:Network"
HCLOUD_SERVER = "hcloud:index/server:Server"
HCLOUD_FIREWALL = "hcloud:index/firewall:Firewall"
LOCAL_COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"
COMMANDS = (LOCAL_COMMAND, REMOTE_COMMAND)
DOCKER_PROVIDER = "pulumi:providers:docker"

LABEL_CLAW = "clawstaff.claw"
LABEL_ORG = "clawstaff.org"
LABEL_HOST = "clawstaff.host"
LABEL_ROLE = "clawstaff.role"
ROLE_CLAW = "claw"
ROLE_PROXY = "proxy"
ROLE_BROKER = "broker"
ROLE_CAGE_NETWORK = "cage-network"
ROLE_EGRESS_NETWORK = "egress-network"
CONTAINER_ROLES = (ROLE_CLAW, ROLE_PROXY, ROLE_BROKER)
# The runtime a claw's config gives it (a label on the claw container) and what each means as the
# container's `runtime` input: runc is the engine's default (the input unset), gVisor the engine's runsc.
LABEL_RUNTIME = "clawstaff.runtime"
RUNTIME_INPUTS = {"runc": None, "gvisor": "runsc"}

ICC_OPTION = "com.docker.network.bridge.enable_icc"

# Host-side state of a cage and where it appears inside the containers:
# - the key directory HOST_KEY_ROOT/<claw> (a tmpfs), read-only at the parent of CAGE_KEY_MOUNT, claw only
#   (the directory, not the key file: the file is replaced by a rename, which a file bind mount would miss);
# - the proxy's config directory HOST_PROXY_CONFIG_ROOT/<claw>, read-only at PROXY_CONFIG_MOUNT, proxy only;
# - the encrypted volume below HOST_VOLUME_ROOT/<claw>, at CAGE_VOLUME_MOUNT, claw only.
HOST_KEY_ROOT = "/run/clawstaff/cages"
HOST_VOLUME_ROOT = "/srv/clawstaff/volumes"
HOST_PROXY_CONFIG_ROOT = "/etc/clawstaff/proxies"
CAGE_KEY_MOUNT = "/run/clawcage/key"
CAGE_KEY_DIR_MOUNT = posixpath.dirname(CAGE_KEY_MOUNT)
CAGE_VOLUME_MOUNT = "/data"
PROXY_CONFIG_MOUNT = "/etc/clawcage"

# Sealed credentials: "clawcage-v1:" + standard base64 of AES-SIV output (16-byte tag, then the data).
SEALED_ENV = "CLAWCAGE_SEALED"
SEALED_PREFIX = "clawcage-v1:"
SEALED_MIN_BYTES = 16 + 1

# Whole-cage limits (components/cagehost.py, components/hostscripts/limits-*.sh): the claw and its proxy run
# below the cage's parent cgroup (`cgroupParent`, below); one command resource creates it. Its `create`
# is `/bin/bash -c '<script>'`; the script's header (written by components/hostscripts.render_script) holds
# the marker line, one JSON facts line `# clawcage-facts: {...}` naming the script (`limits-create`), the
# cage (`claw`), its cgroup and its limits, then the assignments below, which must agree with the facts;
# its body writes them to the cgroup's pids, memory and cpu limits. Its `delete` (same marker, facts of
# `limits-delete`) removes the cgroup.
CGROUP_ROOT = "clawstaff"
LIMITS_SHELL = ("/bin/bash", "-c")
LIMITS_MARKER = "# clawstaff limits of cage {claw}:"
FACTS_PREFIX = "# clawcage-facts: "
LIMITS_CREATE_SCRIPT = "limits-create"
LIMITS_DELETE_SCRIPT = "limits-delete"
LIMITS_CGROUP_VAR = "CG"
LIMITS_CGROUP_FACT = "cgroup"
# Each limit's header variable and the key of the facts line that carries the same value.
LIMITS_VARS = ("PIDS", "MEMORY", "CPU_QUOTA", "CPU_PERIOD")
LIMITS_FACTS = {"PIDS": "pids", "MEMORY": "memory", "CPU_QUOTA": "cpu_quota", "CPU_PERIOD": "cpu_period"}
LIMITS_DELETE_COMMAND = "rmdir"


# Two forms, by the engine's cgroup driver (the facts line's `driver`): "systemd", the slice
# clawstaff-<claw>.slice below clawstaff.slice (`-` in the claw's name escaped as `\x2d`), whose name
# is the containers' `cgroupParent`; "cgroupfs", the cgroup /clawstaff/<claw>, whose path it is.
CGROUP_DRIVERS = ("systemd", "cgroupfs")
LIMITS_DRIVER_FACT = "driver"
LIMITS_DRIVER_VAR = "DRIVER"


def cage_slice(claw: str) -> str:
    """The systemd slice of a cage (same rule as components.conventions.cage_slice)."""
    return f"{CGROUP_ROOT}-{claw.replace('-', chr(92) + 'x2d')}.slice"


def cage_cgroup(claw: str, driver: str) -> str:
    """The cage's cgroup relative to the cgroup mount: the `CG` of its limits scripts."""
    return f"{CGROUP_ROOT}.slice/{cage_slice(claw)}" if driver == "systemd" else f"{CGROUP_ROOT}/{claw}"


def cgroup_parent(claw: str, driver: str) -> str:
    """The `cgroupParent` of a cage's containers (same rule as components.cagehost.cgroup_parent)."""
    return cage_slice(claw) if driver == "systemd" else f"/{CGROUP_ROOT}/{claw}"


# What the cage's allowlist (policies/allowlist.py) names beyond the above: resource names, the proxy's
# alias and port on the cage network, the claw's DNS upstream, the bridge-name prefixes the host firewall
# matches, the egress network's subnet, the cage runtime's env names and the host scripts of a cage.
CLAW_CONTAINER_NAME = "claw-{claw}"
PROXY_CONTAINER_NAME = "proxy-{claw}"
CAGE_NETWORK_NAME = "cage-{claw}"
EGRESS_NETWORK_NAME = "egress-{host}"
PROXY_ALIAS = "egress-proxy"
PROXY_PORT = 3128
CAGE_DNS = ("127.0.0.1",)
CAGE_BRIDGE_PREFIX = "cg-"
EGRESS_BRIDGE_PREFIX = "ce-"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
EGRESS_SUBNET = "198.19.0.0/20"
EGRESS_GATEWAY = "198.19.0.1"
CLAW_ENV = "CLAWCAGE_CLAW"
RESERVED_ENV_PREFIX = "CLAWCAGE_"
PROXY_ENV_NAMES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
LABEL_CONFIG_SHA256 = "clawstaff.config-sha256"
CAGE_SCRIPT_PIECES = ("limits", "key", "proxy-config", "volume", "broker-state", "audit")

# The credential broker of a cage with brokered secrets (components/broker.py, components/cage.py): a
# container on the cage network only (alias BROKER_ALIAS, the proxy's port), whose way out is the cage's
# Squid. Its host state is HOST_BROKER_ROOT/<claw>: `key/` (the broker key: broker only, read-only, at
# the parent of CAGE_KEY_MOUNT) and `ca/` (the cage CA's certificate: broker read-write, claw
# read-only, at BROKER_CA_MOUNT). The claw's env then points its proxy variables at the broker, its
# trust at the CA directory (BROKER_CA_ENV), and declares the names its sealed blob holds as values
# (ENV_DELIVERED_ENV) and as placeholders (PLACEHOLDERS_ENV); the broker's BROKER_ENV names its
# bindings (JSON, no value).
BROKER_CONTAINER_NAME = "broker-{claw}"
BROKER_ALIAS = "egress-broker"
BROKER_URL = f"http://{BROKER_ALIAS}:{PROXY_PORT}"
HOST_BROKER_ROOT = "/run/clawstaff/brokers"
BROKER_CA_MOUNT = "/run/clawcage-ca"
BROKER_CA_ENV = {
    "SSL_CERT_FILE": f"{BROKER_CA_MOUNT}/bundle.pem",
    "REQUESTS_CA_BUNDLE": f"{BROKER_CA_MOUNT}/bundle.pem",
    "CURL_CA_BUNDLE": f"{BROKER_CA_MOUNT}/bundle.pem",
    "GIT_SSL_CAINFO": f"{BROKER_CA_MOUNT}/bundle.pem",
    "NODE_EXTRA_CA_CERTS": f"{BROKER_CA_MOUNT}/cage-ca.pem",
}
BROKER_ENV = "CLAWCAGE_BROKER"
BROKER_UPSTREAM_ENV = "CLAWCAGE_UPSTREAM"
ENV_DELIVERED_ENV = "CLAWCAGE_ENV_DELIVERED"
PLACEHOLDERS_ENV = "CLAWCAGE_PLACEHOLDERS"
# The claw's HOME and working directory: nothing Python trusts is writable (attack finding 6).
CLAW_HOME = "/nonexistent"
CLAW_WORKDIR = "/"
# Syscalls a cage's seccomp profile must never allow (attack finding 7).
SECCOMP_REFUSED = ("io_uring_setup", "io_uring_enter", "io_uring_register")
