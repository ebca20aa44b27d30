"""Names, labels and host paths that the components emit and that tests and the policy pack read.

The policy pack imports nothing from here on purpose (it must judge any program); it restates the
few conventions it relies on. Keep the two in step: a test checks that they agree.
"""

from __future__ import annotations

import hashlib

# Labels on every container and network of a cage.
LABEL_CLAW = "clawstaff.claw"
LABEL_ORG = "clawstaff.org"
LABEL_HOST = "clawstaff.host"
LABEL_ROLE = "clawstaff.role"
ROLE_CLAW = "claw"
ROLE_PROXY = "proxy"
ROLE_CAGE_NETWORK = "cage-network"
ROLE_EGRESS_NETWORK = "egress-network"

# Linux bridge names (IFNAMSIZ: 15 characters). Host firewall rules match these prefixes.
CAGE_BRIDGE_PREFIX = "cg-"
EGRESS_BRIDGE_PREFIX = "ce-"
# The host's shared egress network (every proxy of the host is on it): an explicit subnet, outside the
# pool Docker allocates cage networks from (components.hostconfig.CAGE_ADDRESS_POOL). A /20 holds
# 4093 proxies, which bounds the cages per host.
EGRESS_SUBNET = "198.19.0.0/20"
EGRESS_GATEWAY = "198.19.0.1"
MAX_CAGES_PER_HOST = 4000

# Host-side state of a cage. The key directory is a tmpfs (never disk); volumes live below the
# volume root, one directory per claw.
HOST_KEY_ROOT = "/run/clawstaff/cages"
HOST_VOLUME_ROOT = "/srv/clawstaff/volumes"
CAGE_KEY_DIR_MOUNT = "/run/clawcage"  # the cage's key directory, read-only, in the claw container
CAGE_KEY_MOUNT = f"{CAGE_KEY_DIR_MOUNT}/key"
CAGE_VOLUME_MOUNT = "/data"
SEALED_ENV = "CLAWCAGE_SEALED"


def _short(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:12]


def cage_bridge_name(claw: str) -> str:
    """A stable bridge name for a claw's cage network, unique per claw within 15 characters."""
    return CAGE_BRIDGE_PREFIX + _short(claw)


def egress_bridge_name(host: str) -> str:
    return EGRESS_BRIDGE_PREFIX + _short(host)


def host_key_dir(claw: str) -> str:
    return f"{HOST_KEY_ROOT}/{claw}"


def host_volume_dir(claw: str) -> str:
    return f"{HOST_VOLUME_ROOT}/{claw}"

# The egress proxy's rendered squid.conf, per cage, on the host's disk (no secret in it); the proxy
# container mounts the directory read-only at PROXY_CONFIG_MOUNT.
HOST_PROXY_CONFIG_ROOT = "/etc/clawstaff/proxies"
PROXY_CONFIG_MOUNT = "/etc/clawcage"
# The proxy's name on its cage network: the claw's HTTPS_PROXY points here.
PROXY_ALIAS = "egress-proxy"
# Cgroup parent of a cage's containers (cgroupfs driver): the whole-cage limits live there.
CGROUP_ROOT = "clawstaff"
