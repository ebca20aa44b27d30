"""Resource rules for every `docker:index/container:Container`: the hardening a ClawCage promises.

Inputs are pulumi-docker 5.2.0's camelCase names and units (memory and memorySwap in MB, cpus a decimal
string, labels a list of {label, value}, tmpfs a map path -> mount options). Each check is a plain
function (props, config) -> messages; the policies at the bottom wrap them. Every container is judged:
a container on a cage host that is not a claw or its proxy has no business there. The checks of mounts
(container_mounts.py) and of the environment (container_env.py) live beside this file; every container
policy is listed here.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import (
    CAGE_KEY_DIR_MOUNT,
    CAGE_VOLUME_MOUNT,
    CGROUP_ROOT,
    CONTAINER,
    CONTAINER_ROLES,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    HOST_VOLUME_ROOT,
    LABEL_CLAW,
    LABEL_ORG,
    LABEL_ROLE,
    PROXY_CONFIG_MOUNT,
    SEALED_ENV,
    SEALED_PREFIX,
)
from container_env import check_env_sealed, is_credential_name as is_credential_name
from container_env import sealed_format_problem as sealed_format_problem
from container_mounts import CLAW_NAME as CLAW_NAME
from container_mounts import check_mounts, check_no_docker_socket, check_tmpfs
from container_mounts import host_mounts as host_mounts
from policy_support import as_number, field, labels_of, resource_policy

Props = Mapping[str, Any]
Config = Mapping[str, Any]


def check_not_privileged(props: Props, config: Config) -> Iterator[str]:
    if field(props, "privileged", False) is True:
        yield "`privileged` is true: the container gets every device and capability of the host."


def check_capabilities(props: Props, config: Config) -> Iterator[str]:
    drops = [str(c).upper() for c in field(props, "capabilities.drops", []) or []]
    adds = [str(c).upper() for c in field(props, "capabilities.adds", []) or []]
    if "ALL" not in drops:
        yield f'`capabilities.drops` is {drops}, not ["ALL"]: Docker\'s default capabilities stay granted.'
    allowed = {str(c).upper().removeprefix("CAP_") for c in config.get("allowedCapabilities", [])}
    extra = sorted(c for c in adds if c.removeprefix("CAP_") not in allowed)
    if extra:
        yield f"`capabilities.adds` grants {extra}, outside the allowed capabilities {sorted(allowed)}."


def _security_opts(props: Props) -> list[str]:
    return [str(o).strip() for o in field(props, "securityOpts", []) or []]


def _opt_value(opt: str, name: str) -> str | None:
    """The value of a `name=value` or `name:value` security option, None if `opt` is another option."""
    for sep in ("=", ":"):
        if opt.startswith(name + sep):
            return opt[len(name) + 1 :]
    return "true" if opt == name else None


def check_no_new_privileges(props: Props, config: Config) -> Iterator[str]:
    values = [v for o in _security_opts(props) if (v := _opt_value(o, "no-new-privileges")) is not None]
    if not values or values[-1].lower() != "true":
        yield '`securityOpts` lacks "no-new-privileges:true": setuid binaries could raise privileges.'


def check_seccomp(props: Props, config: Config) -> Iterator[str]:
    for opt in _security_opts(props):
        value = _opt_value(opt, "seccomp")
        if value is not None and value.lower() == "unconfined":
            yield f'`securityOpts` has "{opt}": the container may call every syscall.'


def check_apparmor(props: Props, config: Config) -> Iterator[str]:
    for opt in _security_opts(props):
        value = _opt_value(opt, "apparmor")
        if value is not None and value.lower() == "unconfined":
            yield f'`securityOpts` has "{opt}": the container runs without an AppArmor profile.'


def check_read_only_rootfs(props: Props, config: Config) -> Iterator[str]:
    if field(props, "readOnly", False) is not True:
        yield "`readOnly` is not true: the runtime's root filesystem could be modified from inside."


_NUMERIC_USER = re.compile(r"^(\d+)(?::(\d+))?$")


def check_non_root_user(props: Props, config: Config) -> Iterator[str]:
    user = field(props, "user")
    match = _NUMERIC_USER.match(str(user)) if user is not None else None
    if match is None:
        yield (
            f"`user` is {user!r}: set a numeric uid:gid (names are resolved inside the image, "
            f"which may map them to root)."
        )
    elif int(match.group(1)) == 0 or (match.group(2) is not None and int(match.group(2)) == 0):
        yield f"`user` is {user!r}: uid and gid must not be 0 (root)."


def check_memory(props: Props, config: Config) -> Iterator[str]:
    ceiling = float(config["maxMemoryMb"])
    memory = as_number(field(props, "memory"))
    swap = as_number(field(props, "memorySwap"))
    if memory is None or memory <= 0:
        yield "`memory` is not set: the container may take all of the host's memory."
        return
    if swap != memory:
        yield (
            f"`memorySwap` is {swap:g} MB, not equal to `memory` ({memory:g} MB): the container could swap "
            f"beyond its limit."
            if swap is not None
            else f"`memorySwap` is not set: Docker then allows as much swap again as `memory` ({memory:g} MB)."
        )
    for name, value in (("memory", memory), ("memorySwap", swap)):
        if value is not None and value > ceiling:
            yield f"`{name}` is {value:g} MB, above the ceiling of {ceiling:g} MB."


def check_cpu(props: Props, config: Config) -> Iterator[str]:
    ceiling = float(config["maxCpus"])
    cpus = as_number(field(props, "cpus"))
    if cpus is None:
        quota = as_number(field(props, "cpuQuota"))
        period = as_number(field(props, "cpuPeriod")) or 100_000.0  # Docker's default CFS period
        if quota is not None and quota > 0:
            cpus = quota / period
    if cpus is None or cpus <= 0:
        yield "neither `cpus` nor `cpuQuota` is set: the container may use every CPU of the host."
    elif cpus > ceiling:
        yield f"the container may use {cpus:g} CPUs, above the ceiling of {ceiling:g}."


_NAMESPACE_MODES = (
    ("networkMode", "network"),
    ("pidMode", "PID"),
    ("ipcMode", "IPC"),
    ("usernsMode", "user"),
    ("cgroupnsMode", "cgroup"),
)


def check_no_host_namespaces(props: Props, config: Config) -> Iterator[str]:
    # pulumi-docker has no UTS mode field, so a container always gets its own UTS namespace.
    for key, kind in _NAMESPACE_MODES:
        mode = field(props, key)
        if mode is None:
            continue
        mode = str(mode).strip()
        if mode == "host":
            yield f'`{key}` is "host": the container shares the host\'s {kind} namespace.'
        elif mode.startswith("container:"):
            yield f'`{key}` is "{mode}": the container joins another container\'s {kind} namespace.'
        elif key == "ipcMode" and mode == "shareable":
            yield '`ipcMode` is "shareable": other containers could join this container\'s IPC namespace.'


def check_no_published_ports(props: Props, config: Config) -> Iterator[str]:
    ports = field(props, "ports", []) or []
    if ports:
        published = [f"{p.get('external', '?')}->{p.get('internal', '?')}" for p in ports if isinstance(p, Mapping)]
        yield f"`ports` publishes {published} on the host: cages take no inbound traffic."
    if field(props, "publishAllPorts", False) is True:
        yield "`publishAllPorts` is true: every exposed port would be published on the host."


def check_no_devices(props: Props, config: Config) -> Iterator[str]:
    devices = field(props, "devices", []) or []
    if devices:
        paths = [d.get("hostPath", "?") for d in devices if isinstance(d, Mapping)]
        yield f"`devices` passes host devices {paths} into the container."
    rules = field(props, "deviceCgroupRules", []) or []
    if rules:
        yield f"`deviceCgroupRules` {list(rules)} opens host device classes to the container."
    if config.get("allowGpus") is True:
        return
    if field(props, "gpus"):
        yield f"`gpus` is {field(props, 'gpus')!r}: GPUs are not allowed unless the `allowGpus` config is set."
    if field(props, "deviceRequests", []) or []:
        yield "`deviceRequests` asks for devices (GPUs, CDI): not allowed unless the `allowGpus` config is set."


_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}$")


def check_image(props: Props, config: Config) -> Iterator[str]:
    image = field(props, "image")
    if not isinstance(image, str) or not image:
        yield "`image` is not set."
        return
    if _IMAGE_ID.match(image):
        if config.get("allowLocalImageIds") is not True:
            yield (
                f"`image` is the local image id {image}: use a registry reference pinned by digest "
                f"(or set the `allowLocalImageIds` config for a local stack)."
            )
        return
    if not _DIGEST.search(image):
        yield f"`image` {image!r} is not pinned by digest (<registry>/<name>@sha256:<64 hex>)."
    registries = [str(r) for r in config.get("allowedRegistries", [])]
    # A prefix ends at a path boundary: "ghcr.io/clawstaff" must not admit "ghcr.io/clawstaff-evil/...".
    if not any(image.startswith(prefix.rstrip("/") + "/") for prefix in registries):
        yield f"`image` {image!r} does not come from an allowed registry {registries}."


def check_sysctls(props: Props, config: Config) -> Iterator[str]:
    safe = set(config.get("safeSysctls", []))
    sysctls = field(props, "sysctls", {}) or {}
    unsafe = sorted(k for k in sysctls if k not in safe)
    if unsafe:
        yield f"`sysctls` sets {unsafe}, outside the safe list {sorted(safe)}."


def check_restart(props: Props, config: Config) -> Iterator[str]:
    limit = int(config["maxRestarts"])
    restart = str(field(props, "restart", "no") or "no")
    if restart == "no":
        return
    if restart != "on-failure":
        yield f'`restart` is {restart!r}: a crashing cage would restart forever; use "on-failure" with a bound.'
        return
    retries = as_number(field(props, "maxRetryCount"))
    if retries is None or retries < 1 or retries > limit:
        yield f'`maxRetryCount` is {retries if retries is None else int(retries)}: set 1..{limit} with "on-failure".'


_ROTATING_DRIVERS = ("json-file", "local")


def check_log_rotation(props: Props, config: Config) -> Iterator[str]:
    driver = field(props, "logDriver")
    shipping = [str(d) for d in config.get("shippingLogDrivers", [])]
    if not driver:
        yield "`logDriver` is not set: the daemon default may neither rotate nor ship the cage's logs."
        return
    if driver in shipping:
        return
    if driver not in _ROTATING_DRIVERS:
        yield (
            f"`logDriver` is {driver!r}: use json-file or local with max-size and max-file, or a shipping "
            f"driver {shipping}."
        )
        return
    opts = field(props, "logOpts", {}) or {}
    missing = [o for o in ("max-size", "max-file") if not opts.get(o)]
    if missing:
        yield f"`logOpts` lacks {missing}: {driver} logs would grow without bound."


def check_labels(props: Props, config: Config) -> Iterator[str]:
    labels = labels_of(props)
    for label in (LABEL_CLAW, LABEL_ORG):
        if not labels.get(label):
            yield f"label {label} is missing: every container must name its claw and org."
    if labels.get(LABEL_ROLE) not in CONTAINER_ROLES:
        yield f"label {LABEL_ROLE} is {labels.get(LABEL_ROLE)!r}, not one of {list(CONTAINER_ROLES)}."


# A child of clawstaff.slice: systemd reads `-` as a level, so the name after the prefix has none.
_SLICE_BELOW_ROOT = re.compile(rf"{re.escape(CGROUP_ROOT)}-[a-z0-9\\]+\.slice")


def check_cgroup_parent(props: Props, config: Config) -> Iterator[str]:
    parent = field(props, "cgroupParent")
    if parent is None or parent == "":
        return
    parent = str(parent)
    root = f"/{CGROUP_ROOT}/"
    below_root = parent.startswith(root) and posixpath.normpath(parent) == parent
    if not below_root and not _SLICE_BELOW_ROOT.fullmatch(parent):
        yield (
            f"`cgroupParent` is {parent!r}, neither a cgroup below {root} nor a slice below "
            f"{CGROUP_ROOT}.slice ({CGROUP_ROOT}-<name>.slice): in a cgroup the cage's limits command did not "
            f"create, the container escapes its cage's pids, memory and cpu limits."
        )


CONTAINER_TYPES = (CONTAINER,)

SAFE_SYSCTLS = [
    # Namespaced sysctls Kubernetes classes as safe, plus switching IPv6 off inside the cage.
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
    "net.ipv6.conf.all.disable_ipv6",
    "net.ipv6.conf.default.disable_ipv6",
]

POLICIES = [
    resource_policy(
        "container-not-privileged",
        "Containers are never privileged: leave `privileged` unset or false.",
        CONTAINER_TYPES,
        check_not_privileged,
    ),
    resource_policy(
        "container-drops-all-capabilities",
        'Drop every capability (`capabilities.drops: ["ALL"]`) and add none outside the '
        "`allowedCapabilities` config (empty by default).",
        CONTAINER_TYPES,
        check_capabilities,
        {"allowedCapabilities": {"type": "array", "items": {"type": "string"}, "default": []}},
    ),
    resource_policy(
        "container-no-new-privileges",
        'Set `securityOpts: ["no-new-privileges:true"]` so no process gains privileges.',
        CONTAINER_TYPES,
        check_no_new_privileges,
    ),
    resource_policy(
        "container-seccomp-confined",
        "Keep a seccomp profile: never `seccomp=unconfined` in `securityOpts`.",
        CONTAINER_TYPES,
        check_seccomp,
    ),
    resource_policy(
        "container-apparmor-confined",
        "Keep an AppArmor profile: never `apparmor=unconfined` in `securityOpts`.",
        CONTAINER_TYPES,
        check_apparmor,
    ),
    resource_policy(
        "container-read-only-rootfs",
        "Set `readOnly: true`; give writable scratch space as a noexec, sized `tmpfs`.",
        CONTAINER_TYPES,
        check_read_only_rootfs,
    ),
    resource_policy(
        "container-non-root-user",
        'Run as a numeric, non-root `user` such as "10001:10001".',
        CONTAINER_TYPES,
        check_non_root_user,
    ),
    resource_policy(
        "container-memory-limited",
        "Set `memory` (MB) and `memorySwap` equal to it, both at most the `maxMemoryMb` config.",
        CONTAINER_TYPES,
        check_memory,
        {"maxMemoryMb": {"type": "integer", "minimum": 1, "default": 16384}},
    ),
    resource_policy(
        "container-cpu-limited",
        "Set `cpus` (or `cpuQuota`/`cpuPeriod`) to at most the `maxCpus` config.",
        CONTAINER_TYPES,
        check_cpu,
        {"maxCpus": {"type": "number", "exclusiveMinimum": 0, "default": 8}},
    ),
    resource_policy(
        "container-no-host-namespaces",
        "Leave network, PID, IPC, user and cgroup namespaces private: no `host` or `container:` "
        "modes, no shareable IPC.",
        CONTAINER_TYPES,
        check_no_host_namespaces,
    ),
    resource_policy(
        "container-no-published-ports",
        "Publish no ports (`ports`, `publishAllPorts`): a cage's only way out is its egress proxy.",
        CONTAINER_TYPES,
        check_no_published_ports,
    ),
    resource_policy(
        "container-no-devices",
        "Pass no `devices` or `deviceCgroupRules`; no `gpus`/`deviceRequests` unless the `allowGpus` config is true.",
        CONTAINER_TYPES,
        check_no_devices,
        {"allowGpus": {"type": "boolean", "default": False}},
    ),
    resource_policy(
        "container-mounts-confined",
        f"Bind-mount only the cage's own key directory ({HOST_KEY_ROOT}/<claw>, claw only, "
        f"read-only, at {CAGE_KEY_DIR_MOUNT}), proxy configuration ({HOST_PROXY_CONFIG_ROOT}/<claw>, "
        f"proxy only, read-only, at {PROXY_CONFIG_MOUNT}) and volume ({HOST_VOLUME_ROOT}/<claw>, "
        f"claw only, at {CAGE_VOLUME_MOUNT}); no named volumes, no volumes from other containers.",
        CONTAINER_TYPES,
        check_mounts,
    ),
    resource_policy(
        "container-no-docker-socket",
        "Never mount the Docker or containerd socket, nor a directory that holds it.",
        CONTAINER_TYPES,
        check_no_docker_socket,
    ),
    resource_policy(
        "container-tmpfs-noexec-sized",
        'Give every tmpfs through the `tmpfs` map with "noexec,nosuid" and a size=.',
        CONTAINER_TYPES,
        check_tmpfs,
    ),
    resource_policy(
        "container-image-pinned",
        "Use an image pinned by digest (<registry>/<name>@sha256:...) from the `allowedRegistries` config.",
        CONTAINER_TYPES,
        check_image,
        {
            "allowedRegistries": {"type": "array", "items": {"type": "string"}, "default": ["ghcr.io/clawstaff/"]},
            "allowLocalImageIds": {"type": "boolean", "default": False},
        },
    ),
    resource_policy(
        "container-sysctls-safe",
        "Set only namespaced, safe `sysctls` (the `safeSysctls` config).",
        CONTAINER_TYPES,
        check_sysctls,
        {"safeSysctls": {"type": "array", "items": {"type": "string"}, "default": SAFE_SYSCTLS}},
    ),
    resource_policy(
        "container-restart-bounded",
        'Use `restart: "on-failure"` with `maxRetryCount` 1..`maxRestarts` (or "no").',
        CONTAINER_TYPES,
        check_restart,
        {"maxRestarts": {"type": "integer", "minimum": 1, "default": 5}},
    ),
    resource_policy(
        "container-log-rotation",
        "Set `logDriver` json-file or local with `logOpts` max-size and max-file, or a driver "
        "from the `shippingLogDrivers` config.",
        CONTAINER_TYPES,
        check_log_rotation,
        {
            "shippingLogDrivers": {
                "type": "array",
                "items": {"type": "string"},
                "default": ["journald", "syslog", "fluentd", "gelf"],
            }
        },
    ),
    resource_policy(
        "container-labels-claw-org",
        f"Label every container with {LABEL_CLAW}, {LABEL_ORG} and {LABEL_ROLE} (claw or proxy).",
        CONTAINER_TYPES,
        check_labels,
    ),
    resource_policy(
        "container-env-no-plaintext-credentials",
        f"Pass credentials only sealed in {SEALED_ENV} ({SEALED_PREFIX} + base64 of AES-SIV "
        f"output); no env named like a key, token, secret or password.",
        CONTAINER_TYPES,
        check_env_sealed,
    ),
    resource_policy(
        "container-cgroup-parent-confined",
        f"Leave `cgroupParent` unset or put it in a cage's own parent cgroup, which holds the whole cage's "
        f"limits: below /{CGROUP_ROOT}/ (cgroupfs driver) or a slice {CGROUP_ROOT}-<claw>.slice (systemd).",
        CONTAINER_TYPES,
        check_cgroup_parent,
    ),
]
