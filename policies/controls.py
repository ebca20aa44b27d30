"""The control map: for every policy of the pack, what it refuses, why, the controls it implements (CIS Docker
Benchmark v1.6.0 items where one applies, and the product's isolation claims) and the tests that prove it.

    python policies/controls.py --markdown > docs/controls.md   # `make controls`; a test checks it is current

tests/policies/test_controls.py holds the map to the pack: every policy has an entry, every entry a policy,
every proof file exists.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

from rules import RULE_MODULES

# The product's claims (README, "The isolation contract"), as the map names them.
CLAIMS = {
    "isolation": "own sandbox per claw; no lateral access; private namespaces; no privilege",
    "egress": "a cage reaches only its endpoints, through its own proxy",
    "credentials": "credentials sealed at rest, opened only inside the cage; key material never in scripts or state",
    "limits": "hard CPU, memory and pids limits per cage; neighbours unaffected",
    "audit": "every request and every container's output is logged and kept",
    "teardown": "deleting a cage leaves nothing behind",
}

# CIS Docker Benchmark v1.6.0 items the map cites, with their titles (see the note in docs/controls.md).
CIS = {
    "2.2": "Ensure network traffic is restricted between containers on the default bridge",
    "4.1": "Ensure that a user for the container has been created",
    "4.2": "Ensure that containers use only trusted base images",
    "5.2": "Ensure that, if applicable, an AppArmor Profile is enabled",
    "5.3": "Ensure that, if applicable, SELinux security options are set",
    "5.4": "Ensure that Linux kernel capabilities are restricted within containers",
    "5.5": "Ensure that privileged containers are not used",
    "5.6": "Ensure sensitive host system directories are not mounted on containers",
    "5.8": "Ensure privileged ports are not mapped within containers",
    "5.9": "Ensure that only needed ports are open on the container",
    "5.10": "Ensure that the host's network namespace is not shared",
    "5.11": "Ensure that the memory usage for containers is limited",
    "5.12": "Ensure that CPU priority is set appropriately on containers",
    "5.13": "Ensure that the container's root filesystem is mounted as read only",
    "5.14": "Ensure that incoming container traffic is bound to a specific host interface",
    "5.15": "Ensure that the 'on-failure' container restart policy is set to '5'",
    "5.16": "Ensure that the host's process namespace is not shared",
    "5.17": "Ensure that the host's IPC namespace is not shared",
    "5.18": "Ensure that host devices are not directly exposed to containers",
    "5.20": "Ensure mount propagation mode is not set to shared",
    "5.22": "Ensure the default seccomp profile is not Disabled",
    "5.25": "Ensure that cgroup usage is confirmed",
    "5.26": "Ensure that the container is restricted from acquiring additional privileges",
    "5.29": "Ensure that the PIDs cgroup limit is used",
    "5.30": 'Ensure that Docker\'s default bridge "docker0" is not used',
    "5.31": "Ensure that the host's user namespaces are not shared",
    "5.32": "Ensure that the Docker socket is not mounted inside any containers",
}


@dataclass(frozen=True)
class Control:
    refuses: str
    rationale: str
    cis: tuple[str, ...]
    claims: tuple[str, ...]
    proof: tuple[str, ...]


T = "tests/policies/"
I = "tests/integration/"
CONTAINER_TESTS = (T + "test_container_rules.py", T + "test_policyrun.py")
NETWORK_TESTS = (T + "test_network_rules.py",)
HETZNER_TESTS = (T + "test_hetzner_rules.py",)
STACK_TESTS = (T + "test_stack_rules.py", T + "test_real_stacks.py")
ALLOWLIST_TESTS = (T + "test_allowlist.py", T + "test_allowlist_sdk.py", T + "test_real_stacks.py")
PROCESS, FILESYSTEM = I + "test_isolation_process.py", I + "test_isolation_filesystem.py"
NETWORK, LIMITS = I + "test_isolation_network.py", I + "test_isolation_limits.py"


def c(refuses: str, rationale: str, cis: Sequence[str], claims: Sequence[str], *proof: str) -> Control:
    return Control(refuses, rationale, tuple(cis), tuple(claims), tuple(proof))


CONTROLS: dict[str, Control] = {
    # --- containers --------------------------------------------------------------------------------
    "container-not-privileged": c(
        "`privileged: true`", "a privileged container has every device and capability of the host",
        ["5.5"], ["isolation"], *CONTAINER_TESTS, PROCESS,
    ),
    "container-drops-all-capabilities": c(
        "capabilities not dropped to none; any added outside `allowedCapabilities`",
        "Docker's default set (NET_RAW, SETUID, ...) is more than a claw needs", ["5.4"], ["isolation"],
        *CONTAINER_TESTS, PROCESS,
    ),
    "container-no-new-privileges": c(
        "no `no-new-privileges:true`", "setuid binaries and file capabilities could raise privileges",
        ["5.26"], ["isolation"], *CONTAINER_TESTS, PROCESS,
    ),
    "container-seccomp-confined": c(
        "`seccomp=unconfined`", "every syscall reachable widens the kernel attack surface", ["5.22"],
        ["isolation"], *CONTAINER_TESTS, PROCESS,
    ),
    "container-apparmor-confined": c(
        "`apparmor=unconfined`", "the host's MAC profile is a second fence", ["5.2"], ["isolation"],
        *CONTAINER_TESTS,
    ),
    "container-read-only-rootfs": c(
        "a writable root filesystem", "the runtime cannot be altered from inside", ["5.13"], ["isolation"],
        *CONTAINER_TESTS, FILESYSTEM,
    ),
    "container-non-root-user": c(
        "a user name, uid 0 or gid 0", "a name may map to root inside the image", ["4.1"], ["isolation"],
        *CONTAINER_TESTS, PROCESS,
    ),
    "container-memory-limited": c(
        "no memory limit, swap beyond it, or above `maxMemoryMb`", "one cage must not take the host's memory",
        ["5.11"], ["limits"], *CONTAINER_TESTS, LIMITS,
    ),
    "container-cpu-limited": c(
        "no CPU limit, or above `maxCpus`", "one cage must not take every CPU", ["5.12"], ["limits"],
        *CONTAINER_TESTS, LIMITS,
    ),
    "container-runtime-as-marked": c(
        "a `runtime` outside `registeredRuntimes`, on any container but a claw, or other than its "
        "clawstaff.runtime label says (a claw marked gvisor under runc)",
        "the gVisor tier is a boundary the customer chose: a claw marked for it must never fall back to the host "
        "kernel, and no unreviewed runtime may run a cage", [], ["isolation"], *CONTAINER_TESTS,
        "tests/vm/test_vm_gvisor.py",
    ),
    "container-no-host-namespaces": c(
        "`host` or `container:` network, PID, IPC, user or cgroup namespace modes; shareable IPC",
        "a shared namespace is a shared kernel view with the host or another cage", ["5.10", "5.16", "5.17", "5.31"],
        ["isolation"], *CONTAINER_TESTS, PROCESS,
    ),
    "container-no-published-ports": c(
        "published ports, `publishAllPorts`", "a cage takes no inbound traffic", ["5.8", "5.9", "5.14"],
        ["isolation", "egress"], *CONTAINER_TESTS, NETWORK,
    ),
    "container-no-devices": c(
        "host devices, device cgroup rules; GPUs unless `allowGpus`", "a device node reaches the host kernel",
        ["5.18"], ["isolation"], *CONTAINER_TESTS,
    ),
    "container-mounts-confined": c(
        "bind mounts outside the cage's own key directory, proxy config and volume; named volumes; volumes-from",
        "a host path is host state; another cage's path is lateral access", ["5.6"], ["isolation", "credentials"],
        *CONTAINER_TESTS, FILESYSTEM,
    ),
    "container-no-docker-socket": c(
        "the Docker or containerd socket, or a directory holding it", "the engine's socket is root on the host",
        ["5.32"], ["isolation"], *CONTAINER_TESTS, PROCESS,
    ),
    "container-tmpfs-noexec-sized": c(
        "a tmpfs without noexec, nosuid or size=", "scratch space must neither run code nor fill memory", [],
        ["isolation", "limits"], *CONTAINER_TESTS, FILESYSTEM,
    ),
    "container-image-pinned": c(
        "an image not pinned by digest, or from outside `allowedRegistries`",
        "what runs is the reviewed, reproducible image", ["4.2"], ["isolation"], *CONTAINER_TESTS,
        I + "test_images.py",
    ),
    "container-sysctls-safe": c(
        "sysctls outside `safeSysctls`", "only namespaced, harmless kernel settings", [], ["isolation"],
        *CONTAINER_TESTS,
    ),
    "container-restart-bounded": c(
        "`always`, `unless-stopped`, or on-failure without 1..`maxRestarts` retries",
        "a crashing cage must not restart forever", ["5.15"], ["limits"], *CONTAINER_TESTS,
    ),
    "container-log-rotation": c(
        "no log driver, `none`, or rotation without max-size and max-file",
        "audit: logs are kept, and bounded", [], ["audit"], *CONTAINER_TESTS, I + "test_isolation_audit.py",
    ),
    "container-labels-claw-org": c(
        "a container without its claw, org and role labels", "every rule and every audit line names the cage",
        [], ["isolation", "audit"], *CONTAINER_TESTS,
    ),
    "container-env-no-plaintext-credentials": c(
        "env named like a credential; a CLAWCAGE_SEALED that is not the sealed format",
        "credentials reach a cage only sealed", [], ["credentials"], *CONTAINER_TESTS,
        I + "test_isolation_credentials.py",
    ),
    "container-cgroup-parent-confined": c(
        "a cgroup parent outside /clawstaff/", "outside the cage's cgroup its limits do not hold", ["5.25"],
        ["limits"], *CONTAINER_TESTS, LIMITS,
    ),
    # --- networks ----------------------------------------------------------------------------------
    "cage-network-internal": c(
        "a cage network that is not internal", "the proxy is the cage's only way out", [], ["egress"],
        *NETWORK_TESTS, NETWORK,
    ),
    "shared-network-icc-off": c(
        "ICC on for a network shared by several cages' proxies", "proxies must not reach each other",
        ["2.2"], ["isolation"], *NETWORK_TESTS, NETWORK,
    ),
    "network-no-ipv6": c(
        "IPv6 on a Docker network (unless `allowIpv6`)", "Docker 20.10 does not filter IPv6 by default", [],
        ["isolation", "egress"], *NETWORK_TESTS,
    ),
    # --- Hetzner -----------------------------------------------------------------------------------
    "hcloud-server-firewall-attached": c(
        "a server created without a firewall", "no window in which a host boots unprotected", [],
        ["isolation"], *HETZNER_TESTS,
    ),
    "hcloud-server-allowed-image-location": c(
        "images and locations outside the config", "hosts run the reviewed OS, where the data may live", [],
        ["isolation"], *HETZNER_TESTS,
    ),
    "hcloud-server-ssh-keys-only": c(
        "no SSH keys, rescue mode, password login in user data", "no password reaches a host", [],
        ["isolation", "credentials"], *HETZNER_TESTS,
    ),
    "hcloud-firewall-no-open-ingress": c(
        "whole-internet ingress on ports `publicPorts` does not list", "hosts answer only operators", [],
        ["isolation"], *HETZNER_TESTS,
    ),
    # --- commands ----------------------------------------------------------------------------------
    "command-key-material-via-secrets": c(
        "private keys, stdin values and key-like literals in a command's scripts",
        "scripts are plaintext in state, diffs and process listings", [], ["credentials"],
        T + "test_command_rules.py",
    ),
    # --- the graph ---------------------------------------------------------------------------------
    "cage-network-shared-only-with-own-proxy": c(
        "a claw's network joined by anything but its own proxy", "no lateral path between cages", [],
        ["isolation", "egress"], *STACK_TESTS, NETWORK,
    ),
    "cage-has-one-proxy-and-one-network": c(
        "a cage without exactly one claw, proxy and network; a claw on another network (docker0 included)",
        "the cage's shape is what the other rules reason about", ["5.30"], ["isolation", "egress"], *STACK_TESTS,
    ),
    "cage-resources-not-shared": c(
        "networks, mount sources or key paths shared by two cages", "cages share no state", [],
        ["isolation", "credentials"], *STACK_TESTS, FILESYSTEM,
    ),
    "cage-on-one-host": c(
        "a cage's resources on different Docker providers or hosts", "a cage's parts must meet on one host", [],
        ["isolation"], *STACK_TESTS,
    ),
    "secrets-reach-containers-sealed": c(
        "a command's secret in a container's env; two cages with one sealed blob",
        "plaintext never reaches a container; each cage its own key", [], ["credentials"], *STACK_TESTS,
        I + "test_isolation_credentials.py",
    ),
    "cage-limits-enforced": c(
        "containers outside /clawstaff/<claw>; no, several or wrong limits commands; limits above `maxPids`; "
        "a limits command on another host; no delete", "the whole cage's pids, memory and cpu are capped",
        ["5.29", "5.25", "5.11", "5.12"], ["limits", "teardown"], *STACK_TESTS, LIMITS,
        I + "test_isolation_teardown.py",
    ),
    # --- the allowlist -----------------------------------------------------------------------------
    "claw-container-allowlist": c(
        "any claw container input outside its table (namespace modes, runtime, DNS, hosts, security options, "
        "env names, groups, mount options, devices, sysctls, ports, ...), any value outside its row",
        "a denylist misses what its authors did not think of; the cage is what the table says",
        ["5.3", "5.10", "5.16", "5.17", "5.18", "5.20", "5.22", "5.30", "5.31"],
        ["isolation", "egress", "credentials", "audit"], *ALLOWLIST_TESTS,
    ),
    "broker-container-allowlist": c(
        "any broker container input outside its table (another network, an env beyond its sealed values, "
        "bindings and upstream, a mount beyond its key and CA directories)",
        "the broker holds brokered values: nothing beyond its table", ["5.3", "5.10", "5.16", "5.17", "5.18", "5.20"],
        ["isolation", "credentials", "audit"], *ALLOWLIST_TESTS,
    ),
    "brokered-secret-stays-out-of-the-claw": c(
        "a brokered secret declared sealed for the claw, or not declared as its placeholder; a placeholder no "
        "broker binds", "the claw holds a placeholder, the broker the value", [], ["credentials"],
        "tests/policies/test_broker_rules.py", "tests/unit/test_broker.py", I + "test_isolation_broker.py",
    ),
    "claw-holds-no-cage-ca-key": c(
        "a PEM private key in a claw's env; a claw mounting the broker's key directory or its state root; the "
        "CA directory writable from the claw", "the cage CA's key stays in the broker's memory", ["5.6"],
        ["credentials"], "tests/policies/test_broker_rules.py", I + "test_isolation_broker.py",
    ),
    "proxy-container-allowlist": c(
        "any proxy container input outside its table, any value outside its row",
        "the proxy is the cage's door: nothing beyond its table", ["5.3", "5.10", "5.16", "5.17", "5.18", "5.20"],
        ["isolation", "egress", "audit"], *ALLOWLIST_TESTS,
    ),
    "cage-network-allowlist": c(
        "any cage network input outside its table (driver, IPAM, attachable, options, a bridge the host "
        "firewall does not match)", "the host firewall knows cage bridges by name", [], ["isolation", "egress"],
        *ALLOWLIST_TESTS,
    ),
    "egress-network-allowlist": c(
        "any egress network input outside its table (another subnet, internal, options)",
        "the host firewall knows the egress subnet and bridge", ["2.2"], ["isolation", "egress"],
        *ALLOWLIST_TESTS,
    ),
    "cage-command-allowlist": c(
        "a cage command with inputs outside its table (update, environment, triggers, password, private key, "
        "jump host) or scripts of another piece or cage", "host-side state comes only from the rendered scripts",
        [], ["credentials", "teardown"], *ALLOWLIST_TESTS, I + "test_isolation_teardown.py",
    ),
}  # fmt: skip


def pack_policies() -> list[tuple[str, str]]:
    return [(p.name, p.description) for module in RULE_MODULES for p in module.POLICIES]


NOTE = """\
CIS numbers are those of the **CIS Docker Benchmark v1.6.0**. That version put "Ensure swarm mode is not
Enabled, if not needed" at 5.1, which moved every later container-runtime item up by one against v1.4.0
and v1.5.0 (v1.5.0's 5.3 capabilities, 5.4 privileged, 5.9 host network, 5.10 memory, 5.11 CPU, 5.12
read-only rootfs, 5.15 host PID, 5.16 host IPC, 5.21 seccomp, 5.25 no-new-privileges, 5.28 pids limit,
5.31 Docker socket are v1.6.0's 5.4, 5.5, 5.10, 5.11, 5.12, 5.13, 5.16, 5.17, 5.22, 5.26, 5.29 and 5.32);
v1.6.0 likewise put "Run the Docker daemon as a non-root user" at 2.1, so ICC on the default bridge is
2.2. The numbering here was checked against public implementations that follow v1.6.0, not against the
CIS document itself; where an item is only an analogue it says so below:

- 2.2 is about the daemon's default bridge; the pack holds the host's shared egress network to the same
  rule (the daemon side, `icc: false` in daemon.json, is the host's: tests/host/test_dockerd.py);
- 4.1 and 4.2 are image items; the pack checks the container's `user` and the image's pin, not the image;
- 5.25 ("cgroup usage is confirmed") is read as: the container's cgroup parent is the cage's own;
- 5.3 (SELinux options) is cited because the allowlist refuses every security option but
  no-new-privileges, `label=disable` among them; the hosts do not run SELinux.

Items the pack does not cite, and why: 5.1 (swarm, a host setting), 5.7 (sshd in a container: the image
has none, tests/integration/test_images.py), 5.19 (ulimits: the allowlist refuses them, limits live in the
cage's cgroup), 5.21 (UTS: pulumi-docker has no UTS mode input), 5.23/5.24 (`docker exec`, not a
deployment input), 5.27 (health checks: the claw has one, nothing requires it), 5.28 (image freshness:
images are pinned by digest instead)."""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown() -> str:
    lines = [
        "# Control map of the `clawcage-isolation` policy pack",
        "",
        "Generated by `python policies/controls.py --markdown > docs/controls.md` (`make controls`) from",
        "policies/controls.py; tests/policies/test_controls.py fails when this file is stale. Every policy is",
        "mandatory. The cage's allowlist tables are in [allowlist.md](allowlist.md) (`make allowlist`).",
        "",
        "## Claims",
        "",
        "| claim | what it promises |",
        "|---|---|",
        *[f"| {name} | {text} |" for name, text in CLAIMS.items()],
        "",
        "## Policies",
        "",
        "| rule | refuses | rationale | CIS v1.6.0 | claims | proved by |",
        "|---|---|---|---|---|---|",
    ]
    for name, _ in pack_policies():
        control = CONTROLS[name]
        lines.append(
            f"| `{name}` | {_cell(control.refuses)} | {_cell(control.rationale)} | "
            f"{', '.join(control.cis) or '—'} | {', '.join(control.claims)} | "
            f"{', '.join(f'`{p}`' for p in control.proof)} |"
        )
    lines += ["", "## CIS items and the rules that implement them", "", "| item | title | rules |", "|---|---|---|"]
    for item, title in sorted(CIS.items(), key=lambda kv: tuple(int(x) for x in kv[0].split("."))):
        rules = [name for name, _ in pack_policies() if item in CONTROLS[name].cis]
        lines.append(f"| {item} | {title} | {', '.join(f'`{r}`' for r in rules)} |")
    lines += ["", "## Claims and the rules that implement them", "", "| claim | rules |", "|---|---|"]
    for claim in CLAIMS:
        rules = [name for name, _ in pack_policies() if claim in CONTROLS[name].claims]
        lines.append(f"| {claim} | {', '.join(f'`{r}`' for r in rules)} |")
    lines += ["", "## About the CIS numbers", "", NOTE, ""]
    return "\n".join(lines)


if __name__ == "__main__":
    if "--markdown" not in sys.argv[1:]:
        sys.exit("usage: python policies/controls.py --markdown > docs/controls.md")
    sys.stdout.write(render_markdown())
