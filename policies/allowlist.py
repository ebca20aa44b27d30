"""The allowlist of a ClawCage's shape: every input each of its resources may set, and the values it may take.

One table per resource a cage is made of. A row is `input: Row(allowed values, why)`; an input without
a row may not be set at all, and an input with a row may take only the values the row allows. The rules
in allowlist_rules.py apply the tables and quote the row in every violation; a value marked "checked by
<policy>" is left to that policy, which reports it in its own words. Inputs are pulumi-docker 5.2.0's and
pulumi-command 1.2.1's camelCase names, as the engine hands them to the pack. Rows marked "provider
default" are inputs the program leaves unset: only the provider's own default may appear there.

    python policies/allowlist.py                                 # the tables, as text
    python policies/allowlist.py --markdown > docs/allowlist.md  # as Markdown (`make allowlist`; checked current)
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cage_conventions import (
    CLAW_HOME,
    CLAW_WORKDIR,
    SECCOMP_REFUSED,
    BRIDGE_NAME_OPTION,
    CAGE_BRIDGE_PREFIX,
    CAGE_DNS,
    CAGE_KEY_DIR_MOUNT,
    CAGE_NETWORK_NAME,
    CAGE_VOLUME_MOUNT,
    CLAW_CONTAINER_NAME,
    CLAW_ENV,
    EGRESS_BRIDGE_PREFIX,
    EGRESS_GATEWAY,
    EGRESS_NETWORK_NAME,
    EGRESS_SUBNET,
    HOST_BROKER_ROOT,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    HOST_VOLUME_ROOT,
    ICC_OPTION,
    LABEL_CLAW,
    LABEL_CONFIG_SHA256,
    LABEL_HOST,
    LABEL_ORG,
    LABEL_ROLE,
    LABEL_RUNTIME,
    RUNTIME_INPUTS,
    PROXY_ALIAS,
    PROXY_CONFIG_MOUNT,
    PROXY_CONTAINER_NAME,
    PROXY_ENV_NAMES,
    PROXY_PORT,
    RESERVED_ENV_PREFIX,
    ROLE_BROKER,
    ROLE_CAGE_NETWORK,
    ROLE_CLAW,
    ROLE_EGRESS_NETWORK,
    ROLE_PROXY,
    SEALED_ENV,
    BROKER_ALIAS,
    BROKER_CA_ENV,
    BROKER_CA_MOUNT,
    BROKER_CONTAINER_NAME,
    BROKER_ENV,
    BROKER_UPSTREAM_ENV,
    BROKER_URL,
)
from shape import Fields, Is, Items, Judged, ListOf, Number, OneOf, Pairs, Script, SeccompProfile, Text, Value


@dataclass(frozen=True)
class Row:
    allowed: Value
    why: str
    required: bool = False


ANY_TEXT = Text(r"(?s).*", "any text")
DNS_LABEL = Text(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", "a DNS label")
DURATION = Text(r"[0-9]+(ns|us|ms|s|m|h)", "a duration such as 30s")
PROVIDER_DEFAULT = "provider default: the program leaves it unset"
PROXY_URL = f"http://{PROXY_ALIAS}:{PROXY_PORT}"


def _mounts(owner: str) -> Row:
    def judged(says: str, bad: Any) -> Judged:
        return Judged("container-mounts-confined", says, (bad,))

    return Row(
        ListOf(
            Fields(
                {
                    "type": Is("bind"),
                    "source": judged("the cage's own host path", "/etc"),
                    "target": judged("its fixed path in the container", "/host"),
                    "readOnly": judged("true where that policy requires it", False),
                },
                required=("type", "source", "target"),
            )
        ),
        f"bind mounts of {owner} only, no bindOptions (propagation), volumeOptions, tmpfsOptions or consistency",
    )


def _labels(role: str, *extra: tuple[str, Value]) -> Row:
    names: dict[str, Value] = {LABEL_CLAW: Is("{claw}"), LABEL_ORG: DNS_LABEL, LABEL_HOST: DNS_LABEL}
    names.update({LABEL_ROLE: Is(role), **dict(extra)})
    return Row(Pairs(names, "label"), "the cage's own labels; what a reviewer and the stack rules read")


# What the claw and its proxy share (components/cage.py `hardening`).
_HARDENING: dict[str, Row] = {
    "image": Row(
        Judged("container-image-pinned", "pinned by digest from an allowed registry", ("busybox:latest",)),
        "a reviewed, reproducible image",
    ),
    "user": Row(
        Text(r"[1-9][0-9]*:[1-9][0-9]*", "a numeric, non-root uid:gid (no root group)", ("0:0", "10001:0", "claw")),
        "no root user or group inside the cage",
    ),
    "readOnly": Row(Judged("container-read-only-rootfs", "true", (False,)), "an immutable runtime"),
    "tmpfs": Row(
        Fields({"/tmp": Text(r"rw,noexec,nosuid,nodev,size=[1-9][0-9]*", '"rw,noexec,nosuid,nodev,size=<bytes>"')}),
        "one sized scratch directory where nothing executes",
    ),
    "capabilities": Row(
        Fields(
            {
                "drops": Judged("container-drops-all-capabilities", '["ALL"]', (["NET_RAW"],)),
                "adds": Judged("container-drops-all-capabilities", "none (or allowedCapabilities)", (["SYS_ADMIN"],)),
            }
        ),
        "no capability",
    ),
    "securityOpts": Row(
        Items((Is("no-new-privileges:true"), SeccompProfile(SECCOMP_REFUSED))),
        "the project's own seccomp profile, the same on every engine; no new privileges",
    ),
    "privileged": Row(Judged("container-not-privileged", "false", (True,)), "never privileged"),
    "restart": Row(Judged("container-restart-bounded", '"on-failure" or "no"', ("always",)), "bounded restarts"),
    "maxRetryCount": Row(Judged("container-restart-bounded", "1..maxRestarts", (50,)), "bounded restarts"),
    "memory": Row(Judged("container-memory-limited", "MB, at most maxMemoryMb", (0, 65536)), "a memory limit"),
    "memorySwap": Row(Judged("container-memory-limited", "= memory", (99999,)), "no swap beyond memory"),
    "cpus": Row(Judged("container-cpu-limited", "at most maxCpus", ("64",)), "a CPU limit"),
    "cgroupParent": Row(
        Judged(
            "cage-limits-enforced",
            "clawstaff-<claw>.slice (systemd, `-` as \\x2d) or /clawstaff/<claw> (cgroupfs)",
            ("/system.slice", "/clawstaff/other-claw", "clawstaff-acme.slice"),
        ),
        "inside the whole cage's pids, memory and cpu limits",
    ),
    "ipcMode": Row(Is("private"), "a private IPC namespace nobody can join"),
    "sysctls": Row(
        Fields({"net.ipv6.conf.all.disable_ipv6": Is("1")}),
        "IPv6 off inside the cage, nothing else (stricter than the safeSysctls config, which other containers use)",
    ),
    "logDriver": Row(
        Judged("container-log-rotation", "json-file or local (or a shippingLogDrivers driver)", ("none",)),
        "audit: logs are kept and rotated",
    ),
    "logOpts": Row(
        Fields(
            {
                "max-size": Text(r"[1-9][0-9]*[kmg]", "a size such as 10m"),
                "max-file": Text(r"[1-9][0-9]*", "a count such as 5"),
            }
        ),
        "audit: rotation only (no mode=non-blocking that drops lines, no other options)",
    ),
    "mustRun": Row(Is(True), "a cage runs or the update fails"),
    "gpus": Row(Judged("container-no-devices", "unset, unless the allowGpus config", ("all",)), "no GPU by default"),
    "deviceRequests": Row(
        Judged("container-no-devices", "unset, unless the allowGpus config", ([{"driver": "nvidia", "count": -1}],)),
        "no GPU or CDI device by default",
    ),
    "publishAllPorts": Row(Judged("container-no-published-ports", "false", (True,)), PROVIDER_DEFAULT),
    "attach": Row(Is(False), PROVIDER_DEFAULT),
    "logs": Row(Is(False), PROVIDER_DEFAULT),
    "start": Row(Is(True), PROVIDER_DEFAULT),
    "rm": Row(Is(False), PROVIDER_DEFAULT),
    "removeVolumes": Row(Is(True), PROVIDER_DEFAULT),
    "stdinOpen": Row(Is(False), PROVIDER_DEFAULT),
    "tty": Row(Is(False), PROVIDER_DEFAULT),
    "wait": Row(Is(False), PROVIDER_DEFAULT),
    "waitTimeout": Row(Is(60), PROVIDER_DEFAULT),
    "memoryReservation": Row(Is(0), PROVIDER_DEFAULT),
}

CLAW_CONTAINER: dict[str, Row] = {
    "name": Row(Is(CLAW_CONTAINER_NAME), "one container per cage, named after its claw"),
    **_HARDENING,
    "command": Row(ListOf(ANY_TEXT), "the claw's own program (stack config), started by the image's cage-init"),
    "init": Row(
        Is(False),
        "the image's cage-init is pid 1: it reaps, and relays the claw's output at a bounded rate from a process "
        "the claw cannot open, read or trace (Docker's init would hold the container's stdout where the claw can)",
    ),
    "networksAdvanced": Row(
        Items((Fields({"name": Is(CAGE_NETWORK_NAME)}, required=("name",)),)),
        "its own cage network only; no alias, no fixed address",
    ),
    "dns": Row(
        Items(tuple(Is(server) for server in CAGE_DNS)),
        "no resolver that reaches out (Docker's embedded DNS forwards to 127.0.0.1 in the cage's namespace)",
        required=True,
    ),
    "envs": Row(
        Pairs(
            {
                SEALED_ENV: Judged("container-env-no-plaintext-credentials", "sealed credentials", ("plaintext",)),
                CLAW_ENV: Is("{claw}"),
                "HOME": Is(CLAW_HOME),
                **{name: OneOf((PROXY_URL, BROKER_URL)) for name in PROXY_ENV_NAMES},
                **{name: Is(value) for name, value in BROKER_CA_ENV.items()},
            },
            "env",
            open_pattern=RESERVED_ENV_PREFIX + r"[A-Z0-9_]+",
            open_says=f"{RESERVED_ENV_PREFIX}*=any (the cage runtime's own names)",
        ),
        "the cage runtime's names and the proxy (its broker's, with brokered secrets, and then the cage CA's "
        "certificate files); no plaintext credential, no NO_PROXY or other bypass",
    ),
    "workingDir": Row(Is(CLAW_WORKDIR), "not writable: no working directory whose files Python would import"),
    "mounts": _mounts(
        f"the cage's key directory {HOST_KEY_ROOT}/<claw>, volume below {HOST_VOLUME_ROOT}/<claw> and (brokered "
        f"secrets) the broker's CA directory {HOST_BROKER_ROOT}/<claw>/ca, read-only"
    ),
    "labels": _labels(ROLE_CLAW, (LABEL_RUNTIME, OneOf(tuple(RUNTIME_INPUTS)))),
    "runtime": Row(
        Judged("container-runtime-as-marked", '"runsc" (gVisor) when the claw is marked gvisor, else unset', ("kata",)),
        "gVisor for a claw whose config asks for it; runc, the engine's default, otherwise",
    ),
    "healthcheck": Row(
        Fields(
            {
                "tests": ListOf(ANY_TEXT),
                "interval": DURATION,
                "timeout": DURATION,
                "startPeriod": DURATION,
                "retries": Number(0, 100, "0..100"),
            }
        ),
        "runs inside the claw container, as the claw",
    ),
}

PROXY_CONTAINER: dict[str, Row] = {
    "name": Row(Is(PROXY_CONTAINER_NAME), "one proxy per cage, named after its claw"),
    **_HARDENING,
    "init": Row(Is(True), "Docker's init reaps the proxy's processes"),
    "networksAdvanced": Row(
        Items(
            (
                Fields({"name": Is(CAGE_NETWORK_NAME), "aliases": Items((Is(PROXY_ALIAS),))}, required=("name",)),
                Fields({"name": Is(EGRESS_NETWORK_NAME)}, required=("name",)),
            )
        ),
        f"its cage network (as {PROXY_ALIAS}) and its host's egress network, nothing else",
    ),
    "mounts": _mounts(f"the cage's proxy configuration {HOST_PROXY_CONFIG_ROOT}/<claw>"),
    "labels": _labels(ROLE_PROXY, (LABEL_CONFIG_SHA256, Text(r"[0-9a-f]{64}", "a sha256 hex digest"))),
}

BROKER_CONTAINER: dict[str, Row] = {
    "name": Row(Is(BROKER_CONTAINER_NAME), "one broker per cage with brokered secrets, named after its claw"),
    **_HARDENING,
    "init": Row(Is(True), "Docker's init reaps the broker's processes"),
    "networksAdvanced": Row(
        Items((Fields({"name": Is(CAGE_NETWORK_NAME), "aliases": Items((Is(BROKER_ALIAS),))}, required=("name",)),)),
        f"its cage network only (as {BROKER_ALIAS}): its way out is the cage's proxy",
    ),
    "dns": Row(
        Items(tuple(Is(server) for server in CAGE_DNS)),
        "no resolver that reaches out: the cage's proxy resolves the upstream",
        required=True,
    ),
    "envs": Row(
        Pairs(
            {
                SEALED_ENV: Judged("container-env-no-plaintext-credentials", "sealed credentials", ("plaintext",)),
                CLAW_ENV: Is("{claw}"),
                BROKER_ENV: Text(r"\{.*\}", "the broker's bindings as JSON (names, forms, endpoints, placeholders)"),
                BROKER_UPSTREAM_ENV: Is(PROXY_URL),
                "HOME": Is(CLAW_HOME),
            },
            "env",
        ),
        "the brokered values sealed for the broker key, its bindings and its upstream (the cage's proxy)",
    ),
    "workingDir": Row(Is(CLAW_WORKDIR), "not writable"),
    "mounts": _mounts(
        f"the broker's key directory {HOST_BROKER_ROOT}/<claw>/key (read-only) and CA directory "
        f"{HOST_BROKER_ROOT}/<claw>/ca"
    ),
    "labels": _labels(ROLE_BROKER),
}

_NETWORK_DEFAULTS: dict[str, Row] = {
    "ipv6": Row(Judged("network-no-ipv6", "false (unless allowIpv6)", (True,)), "no IPv6 around the host firewall"),
    "ingress": Row(Is(False), PROVIDER_DEFAULT),
    "attachable": Row(Is(False), PROVIDER_DEFAULT),
    "ipamDriver": Row(Is("default"), PROVIDER_DEFAULT),
}

CAGE_NETWORK: dict[str, Row] = {
    "name": Row(Is(CAGE_NETWORK_NAME), "one network per cage, named after its claw"),
    "driver": Row(Is("bridge"), "a local bridge on the cage's host"),
    "internal": Row(Judged("cage-network-internal", "true", (False,)), "no route out but the proxy"),
    **_NETWORK_DEFAULTS,
    "options": Row(
        Fields(
            {
                ICC_OPTION: Is("true"),
                BRIDGE_NAME_OPTION: Text(CAGE_BRIDGE_PREFIX + "[0-9a-f]{12}", f"{CAGE_BRIDGE_PREFIX}<12 hex>"),
            },
            required=(BRIDGE_NAME_OPTION,),
        ),
        f"the claw reaches its proxy; the bridge is named {CAGE_BRIDGE_PREFIX}*, which the host firewall matches",
        required=True,
    ),
    "labels": _labels(ROLE_CAGE_NETWORK),
}

EGRESS_NETWORK: dict[str, Row] = {
    "name": Row(Is(EGRESS_NETWORK_NAME), "one egress network per host"),
    "driver": Row(Is("bridge"), "a local bridge on the host"),
    "internal": Row(Is(False), "the proxies' way out"),
    **_NETWORK_DEFAULTS,
    "ipamConfigs": Row(
        Items((Fields({"subnet": Is(EGRESS_SUBNET), "gateway": Is(EGRESS_GATEWAY)}, required=("subnet", "gateway")),)),
        "the fixed subnet the host firewall knows, outside the cage pool",
    ),
    "options": Row(
        Fields(
            {
                ICC_OPTION: Judged("shared-network-icc-off", '"false"', ("true",)),
                BRIDGE_NAME_OPTION: Text(EGRESS_BRIDGE_PREFIX + "[0-9a-f]{12}", f"{EGRESS_BRIDGE_PREFIX}<12 hex>"),
            },
            required=(ICC_OPTION, BRIDGE_NAME_OPTION),
        ),
        f"no proxy reaches another; the bridge is named {EGRESS_BRIDGE_PREFIX}*, which the host firewall matches",
        required=True,
    ),
    "labels": Row(
        Pairs({LABEL_ROLE: Is(ROLE_EGRESS_NETWORK), LABEL_HOST: DNS_LABEL}, "label"),
        "the host's egress network, of no cage",
    ),
}

CAGE_COMMAND: dict[str, Row] = {
    "create": Row(Script("create"), "a fixed, rendered script per piece, read from its facts line", required=True),
    "delete": Row(Script("delete"), "teardown: the same piece removes what it created", required=True),
    "stdin": Row(ANY_TEXT, "the piece's input (the cage key, the volume key, the proxy config), never in a script"),
    "connection": Row(
        Fields(
            {
                "host": ANY_TEXT,
                "user": Is("root"),
                "hostKey": Text(r"ssh-ed25519 [A-Za-z0-9+/]+={0,2}( [^\n]*)?", "the host's pinned ed25519 key"),
                "port": Is(22),
                "perDialTimeout": Number(1, 300, "1..300 s"),
                "dialErrorLimit": Number(1, 100, "1..100"),
            },
            required=("host", "user", "hostKey"),
        ),
        "the host's pinned SSH: no password, no private key in state, no agent, no jump host",
    ),
    "addPreviousOutputInEnv": Row(Is(True), PROVIDER_DEFAULT),
}

# Why an input that has no row is refused (the message says so; any other unlisted input: "the program
# never sets it").
WHY_NOT: dict[str, str] = {
    "networkMode": "a network mode (host, container:<id>, bridge) bypasses the cage network",
    "pidMode": "host or container:<id> shares a PID namespace",
    "usernsMode": "host leaves the daemon's userns-remap",
    "cgroupnsMode": "host shares the host's cgroup namespace",
    "runtime": "another runtime is another isolation boundary, not the reviewed one (only a claw names one)",
    "dnsOpts": "resolver options change where names resolve",
    "dnsSearches": "search domains send short names elsewhere",
    "hosts": "extra hosts entries redirect names around the proxy",
    "groupAdds": "supplementary groups (root, docker, disk) grant host access",
    "devices": "host devices reach the host kernel",
    "deviceCgroupRules": "device rules open host device classes",
    "ports": "cages take no inbound traffic",
    "volumes": "use `mounts` (bind) only; named volumes and volumes-from share state",
    "uploads": "files put into the container are plaintext in state",
    "entrypoints": "the image's cage-init opens the sealed credentials; replacing it skips the cage runtime",
    "cpuQuota": "the limit is `cpus`",
    "cpuShares": "the limit is `cpus`",
    "ulimits": "limits live in the cage's cgroup",
    "storageOpts": "the rootfs is read-only; storage options are the daemon's",
    "shmSize": "IPC is private and small",
    "hostname": "the cage's hostname is Docker's",
    "update": "no update step: a change re-runs create, which converges",
    "environment": "key material arrives on stdin only",
    "triggers": "a cage piece re-runs when its script or input changes",
    "interpreter": "the script is run by /bin/bash -c",
}

# The tables, with what selects them (a container's or network's clawstaff.role label; a command's facts).
TABLES: dict[str, tuple[str, Mapping[str, Row]]] = {
    "claw container": ("docker:index/container:Container, clawstaff.role=claw", CLAW_CONTAINER),
    "proxy container": ("docker:index/container:Container, clawstaff.role=proxy", PROXY_CONTAINER),
    "broker container": ("docker:index/container:Container, clawstaff.role=broker", BROKER_CONTAINER),
    "cage network": ("docker:index/network:Network, clawstaff.role=cage-network", CAGE_NETWORK),
    "egress network": ("docker:index/network:Network, clawstaff.role=egress-network", EGRESS_NETWORK),
    "cage command": ("command:local|remote:Command whose facts line names a cage piece", CAGE_COMMAND),
}

MOUNT_PATHS = {
    "claw container": f"{HOST_KEY_ROOT}/<claw> -> {CAGE_KEY_DIR_MOUNT} (ro); {HOST_VOLUME_ROOT}/<claw>/… -> "
    f"{CAGE_VOLUME_MOUNT}",
    "proxy container": f"{HOST_PROXY_CONFIG_ROOT}/<claw> -> {PROXY_CONFIG_MOUNT} (ro)",
    "broker container": f"{HOST_BROKER_ROOT}/<claw>/key -> {CAGE_KEY_DIR_MOUNT} (ro); {HOST_BROKER_ROOT}/<claw>/ca "
    f"-> {BROKER_CA_MOUNT}",
}


def quote(table: str, name: str) -> str:
    """A table's row as a violation quotes it."""
    row = TABLES[table][1][name]
    return f"allowlist row `{table}` | `{name}` | {row.allowed.text()} | {row.why}"


def render(markdown: bool = False) -> str:
    lines: list[str] = []
    if markdown:
        lines += [
            "# The allowlist of a ClawCage",
            "",
            "Generated by `python policies/allowlist.py --markdown > docs/allowlist.md` (`make allowlist`) from",
            "policies/allowlist.py; tests/policies/test_allowlist.py fails when this file is stale. A resource of a",
            'cage sets only the inputs its table names, each to a value its row allows; "checked by <rule>" leaves',
            "the value to that rule. docs/controls.md maps the rules to their controls.",
            "",
        ]
    for title, (selects, table) in TABLES.items():
        if markdown:
            lines += [f"### {title}", "", f"Applies to {selects}.", "", "| input | allowed | why |", "|---|---|---|"]
            for name, row in table.items():
                allowed = row.allowed.text().replace("|", "\\|") + (" (required)" if row.required else "")
                lines.append(f"| `{name}` | {allowed} | {row.why} |")
            if title in MOUNT_PATHS:
                lines += ["", f"Mount paths: {MOUNT_PATHS[title]}."]
            lines.append("")
        else:
            lines.append(f"{title} ({selects})")
            for name, row in table.items():
                lines.append(f"  {name}{' (required)' if row.required else ''}: {row.allowed.text()}  -- {row.why}")
            lines.append("")
    lines.append("Any other input is refused" + (":" if WHY_NOT else "."))
    lines += [f"{'- `' if markdown else '  '}{name}{'`' if markdown else ''}: {why}" for name, why in WHY_NOT.items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render(markdown="--markdown" in sys.argv[1:]))
