"""Names, labels and host paths that the components emit and that tests and the policy pack read.

The policy pack imports nothing from here on purpose (it must judge any program); it restates the
few conventions it relies on. Keep the two in step: a test checks that they agree.
"""

from __future__ import annotations

import hashlib
import re

# Labels on every container and network of a cage.
LABEL_CLAW = "clawstaff.claw"
LABEL_ORG = "clawstaff.org"
LABEL_HOST = "clawstaff.host"
LABEL_ROLE = "clawstaff.role"
LABEL_RUNTIME = "clawstaff.runtime"  # on the claw container: the runtime its config gives it (components.runtimes)
ROLE_CLAW = "claw"
ROLE_PROXY = "proxy"
ROLE_BROKER = "broker"  # the credential broker, in a cage with brokered secrets (components.broker)
ROLE_CAGE_NETWORK = "cage-network"
ROLE_EGRESS_NETWORK = "egress-network"

# Labels on the stack's Hetzner servers (and their firewalls): the host's name, and what the server is
# for (`hcloud server list -l clawstaff-role=audit-sink`).
SERVER_LABEL_HOST = "clawstaff-host"
SERVER_LABEL_ROLE = "clawstaff-role"
SERVER_ROLE_CAGE_HOST = "cage-host"
SERVER_ROLE_AUDIT_SINK = "audit-sink"

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

# --- names ------------------------------------------------------------------------------------------

# A DNS label (RFC 1123): every claw, org, host and pool name, and each label of an egress host name.
# Match it whole (re.fullmatch, or with \Z): "$" would let a trailing newline through.
DNS_LABEL_PATTERN = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
DNS_LABEL = re.compile(DNS_LABEL_PATTERN)
# An environment variable name a claw's secret may take (before the reserved names below).
ENV_NAME_PATTERN = r"[A-Z_][A-Z0-9_]*"


def is_dns_label(text: str) -> bool:
    return DNS_LABEL.fullmatch(text) is not None


# Environment names no claw secret may take. One rule, two lists, because two programs check it:
# - OPENER_RESERVED_NAMES: what cage-init (images/claw-runtime/cage-init, which cannot import this
#   package) refuses to export when it opens a sealed blob: the cage's own variable and the names that
#   change how the claw's process finds programs or loads code. cage-init holds a copy of this list as
#   part of the sealed format (tests/unit/test_sealing.py checks that the two agree);
# - RESERVED_ENV_NAMES: what the stack config refuses, the list above and the names the cage sets for
#   the claw (HOSTNAME, its proxy) or that would reroute its traffic; and any name starting with
#   RESERVED_ENV_PREFIX, the cage runtime's own namespace.
RESERVED_ENV_PREFIX = "CLAWCAGE_"
OPENER_RESERVED_NAMES = frozenset(
    {"CLAWCAGE_SEALED", "PATH", "HOME", "LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP"}
)
RESERVED_ENV_NAMES = OPENER_RESERVED_NAMES | frozenset(
    {"HOSTNAME", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"}
    # the trust of a cage with brokered secrets (components.broker.CA_ENV)
    | {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "NODE_EXTRA_CA_CERTS"}
)


# What a claw can make the engine copy from its stdout and stderr (docs/attack-findings.md, finding 3):
# cage-init, the claw container's pid 1, relays both at this rate through one token bucket and holds the
# claw back beyond it. cage-init holds the same figures (tests/unit/test_sealing.py checks they agree).
CLAW_LOG_RATE_BYTES = 64 * 1024  # per second, sustained
CLAW_LOG_BURST_BYTES = 1024 * 1024  # at once, after a quiet spell
CLAW_LOG_THROTTLE_NOTE_SECONDS = 10.0  # the `log-throttled` record, at most this often


def is_reserved_env_name(name: str) -> bool:
    return name in RESERVED_ENV_NAMES or name.startswith(RESERVED_ENV_PREFIX)


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


# The broker's host-side state (a cage with brokered secrets): on the keys' tmpfs, one directory per
# claw holding `key/` (the broker key, the broker's uid only, read-only at CAGE_KEY_DIR_MOUNT in the
# broker, never in the claw) and `ca/` (the cage CA's certificate the broker publishes: written by the
# broker, read-only in the claw; never a private key).
HOST_BROKER_ROOT = "/run/clawstaff/brokers"


def host_broker_dir(claw: str) -> str:
    return f"{HOST_BROKER_ROOT}/{claw}"


def host_broker_key_dir(claw: str) -> str:
    return f"{host_broker_dir(claw)}/key"


def host_broker_ca_dir(claw: str) -> str:
    return f"{host_broker_dir(claw)}/ca"


# The egress proxy's rendered squid.conf, per cage, on the host's disk (no secret in it); the proxy
# container mounts the directory read-only at PROXY_CONFIG_MOUNT.
# The kernel audit rules of a cage (components/hostscripts/audit-create.sh) carry this key; it is how
# its create and delete find them, and how the trail (tools/audittrail.py) names the claw of a record.
AUDIT_KEY_PREFIX = "clawcage-"


def audit_key(claw: str) -> str:
    return f"{AUDIT_KEY_PREFIX}{claw}"


def proxy_container(claw: str) -> str:
    """The name of a cage's egress proxy container (its log is the cage's API calls)."""
    return f"proxy-{claw}"


HOST_PROXY_CONFIG_ROOT = "/etc/clawstaff/proxies"
PROXY_CONFIG_MOUNT = "/etc/clawcage"
# The proxy's name on its cage network: the claw's HTTPS_PROXY points here.
PROXY_ALIAS = "egress-proxy"
# Where a cage's whole-cage limits live, by the engine's cgroup driver (components.cagehost):
# - "systemd" (every host the program provisions: systemd and cgroup v2): the slice
#   clawstaff-<claw>.slice below clawstaff.slice, a unit the limits script writes; the containers'
#   `cgroupParent` is the slice's name. `-` in a claw's name is escaped as systemd escapes it (`\x2d`):
#   unescaped, `acme` would be the parent slice of `acme-support` and hold its limits too;
# - "cgroupfs" (this machine's engine: no systemd): the cgroup /clawstaff/<claw>, made by the script.
CGROUP_ROOT = "clawstaff"
CGROUP_DRIVERS = ("systemd", "cgroupfs")


def systemd_escape(name: str) -> str:
    """A DNS label as one component of a systemd unit name (`systemd-escape`: `-` is `\x2d`)."""
    return name.replace("-", "\\x2d")


def cage_slice(claw: str) -> str:
    """The systemd slice of a cage: a child of clawstaff.slice."""
    return f"{CGROUP_ROOT}-{systemd_escape(claw)}.slice"


def cage_cgroup(claw: str, driver: str) -> str:
    """The cage's cgroup, relative to the cgroup mount (for systemd: where the slice lives)."""
    if driver == "systemd":
        return f"{CGROUP_ROOT}.slice/{cage_slice(claw)}"
    if driver == "cgroupfs":
        return f"{CGROUP_ROOT}/{claw}"
    raise ValueError(f"cgroup driver {driver!r} is not one of {', '.join(CGROUP_DRIVERS)}")


def cage_cgroup_parent(claw: str, driver: str) -> str:
    """The `cgroupParent` of a cage's containers: the slice's name, or the cgroup's absolute path."""
    return cage_slice(claw) if driver == "systemd" else "/" + cage_cgroup(claw, driver)
