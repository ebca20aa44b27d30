"""The hardened Docker daemon of a host: its daemon.json, as a pure function (components.hostconfig puts
it in the bootstrap; tools/engine.py gives it to this machine's engine). Every key is there for an
isolation or audit reason; tests/host/test_dockerd.py starts a real dockerd with it.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence

from components.conventions import LABEL_CLAW, LABEL_HOST, LABEL_ORG, LABEL_ROLE
from components.firewall import HETZNER_RESOLVERS
from components.runtimes import RUNC, engine_runtimes

# Cage and egress networks live in 198.18.0.0/15 (reserved for benchmarking by RFC 2544, never routed
# on the internet), deliberately outside RFC 1918, 100.64.0.0/10 and 169.254.0.0/16: the host firewall
# can then drop every cage packet towards private space without exceptions, because a cage talking to
# its own proxy never looks like private traffic. Docker allocates cage networks from the first half;
# the host's one egress network takes an explicit subnet from the second, so the two never overlap.
CAGE_ADDRESS_POOL = "198.18.0.0/16"
# A cage network holds the gateway, the cage and its proxy: a /29 (6 usable addresses) is plenty and
# gives 8192 networks per host.
CAGE_SUBNET_PREFIX = 29
DEFAULT_BRIDGE_IP = "172.17.0.1/16"

NOFILE_SOFT = 4096
NOFILE_HARD = 16384
LOG_MAX_SIZE = "10m"
LOG_MAX_FILE = "5"


# The engine's cgroup driver, which decides the form of a cage's limits (components.cagehost): systemd
# on every host the program provisions (Hetzner's images run systemd on cgroup v2, and bootstrap
# refuses anything else); cgroupfs on the local engine tools/engine.py starts, which has no systemd.
PROVISIONED_CGROUP_DRIVER = "systemd"
LOCAL_CGROUP_DRIVER = "cgroupfs"


def cgroup_driver(host_kind: str) -> str:
    """The cgroup driver of a host's engine: "local" is this machine's engine, the rest are provisioned."""
    return LOCAL_CGROUP_DRIVER if host_kind == "local" else PROVISIONED_CGROUP_DRIVER


def daemon_config(
    *,
    dns: Sequence[str] = HETZNER_RESOLVERS,
    cgroup_driver: str = PROVISIONED_CGROUP_DRIVER,
    runtimes: Sequence[str] = (RUNC,),
) -> dict:
    """The hardened daemon.json. Every key is here for an isolation or audit reason.

    No "hosts" key: the engine listens only on its unix socket, which the packaged systemd unit
    passes as `-H fd://` (a "hosts" key next to that flag makes dockerd refuse to start), and which
    dockerd uses by default when started without -H. There is never a TCP socket.
    """
    config: dict = {
        # Container root is an unprivileged uid range on the host (user namespace per daemon).
        "userns-remap": "default",
        # No traffic between containers of one bridge unless a network opts in: the shared egress
        # network of the proxies keeps this default; a two-member cage network opts in.
        "icc": False,
        "no-new-privileges": True,
        # Restarting or upgrading the daemon does not kill the cages.
        "live-restore": True,
        # Published ports go through iptables DNAT, not a root-owned userland proxy listening on the host.
        "userland-proxy": False,
        "iptables": True,
        "ipv6": False,
        "ip6tables": False,
        "insecure-registries": [],
        "experimental": False,
        # A container gets its own cgroup namespace and cannot see the host's cgroup tree.
        "default-cgroupns-mode": "private",
        # A cage's containers land below its own parent cgroup (components.cagehost), which holds the
        # whole cage's pids, memory and cpu limits: with systemd, the cage's slice, which systemd owns
        # like every other cgroup on the host; without systemd, the cgroup /clawstaff/<claw>.
        "exec-opts": [f"native.cgroupdriver={cgroup_driver}"],
        "default-address-pools": [{"base": CAGE_ADDRESS_POOL, "size": CAGE_SUBNET_PREFIX}],
        # The default bridge keeps Docker's usual subnet instead of taking a /29 from the cage pool;
        # no cage is ever attached to it (policy), image builds use it.
        "bip": DEFAULT_BRIDGE_IP,
        # Logs rotate (audit without filling the disk) and carry the cage's identity labels.
        "log-driver": "json-file",
        "log-opts": {
            "max-size": LOG_MAX_SIZE,
            "max-file": LOG_MAX_FILE,
            "compress": "true",
            "labels": ",".join((LABEL_CLAW, LABEL_ORG, LABEL_HOST, LABEL_ROLE)),
        },
        # core=0: a crashing cage must not dump its decrypted credentials to disk. nofile: bounded,
        # plenty for an agent, and below the daemon's own hard limit (a container cannot raise its
        # limit above that of the daemon that starts it). No nproc limit here: with userns-remap
        # every cage runs as the same host uid, so an nproc budget would be shared between cages;
        # each cage gets its own pids limit instead.
        "default-ulimits": {
            "core": {"Name": "core", "Soft": 0, "Hard": 0},
            "nofile": {"Name": "nofile", "Soft": NOFILE_SOFT, "Hard": NOFILE_HARD},
        },
    }
    resolvers = [str(ipaddress.IPv4Address(r)) for r in dns]
    if resolvers:
        config["dns"] = resolvers
    # gVisor, registered only on a host that holds a gVisor claw (components.runtimes); runc stays the
    # default runtime, so a container that names none runs under runc.
    registered = engine_runtimes(runtimes, cgroup_driver=cgroup_driver)
    if registered:
        config["runtimes"] = registered
    return config


def render_daemon_json(**kw) -> str:
    """daemon.json text: sorted keys and fixed indentation, so the same config is the same bytes."""
    return json.dumps(daemon_config(**kw), indent=2, sort_keys=True) + "\n"
