"""Resource rules for every `docker:index/container:Container`: the hardening a ClawCage promises.

Inputs are pulumi-docker 5.2.0's camelCase names and units (memory and memorySwap in MB, cpus a decimal
string, labels a list of {label, value}, tmpfs a map path -> mount options). Each check is a plain
function (props, config) -> messages; the policies at the bottom wrap them. Every container is judged:
a container on a cage host that is not a claw or its proxy has no business there.
"""

from __future__ import annotations

import base64
import binascii
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
    ROLE_CLAW,
    ROLE_PROXY,
    SEALED_ENV,
    SEALED_MIN_BYTES,
    SEALED_PREFIX,
)
from policy_support import as_number, env_of, field, labels_of, resource_policy

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


def _normalize(path: str) -> str:
    return posixpath.normpath(path) if path else path


def _is_within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def host_mounts(props: Props) -> list[dict[str, Any]]:
    """Every mount of a container from `mounts` and `volumes`: kind (bind/volume/tmpfs/from-container),
    source, target, readOnly. Shared with the stack rules."""
    found: list[dict[str, Any]] = []
    for mount in field(props, "mounts", []) or []:
        if not isinstance(mount, Mapping):
            continue
        found.append(
            {
                "kind": str(mount.get("type", "")),
                "source": str(mount.get("source") or ""),
                "target": str(mount.get("target") or ""),
                "readOnly": mount.get("readOnly") is True,
                "field": "mounts",
            }
        )
    for volume in field(props, "volumes", []) or []:
        if not isinstance(volume, Mapping):
            continue
        if volume.get("hostPath"):
            kind, source = "bind", str(volume["hostPath"])
        elif volume.get("fromContainer"):
            kind, source = "from-container", str(volume["fromContainer"])
        else:
            kind, source = "volume", str(volume.get("volumeName") or "")
        found.append(
            {
                "kind": kind,
                "source": source,
                "target": str(volume.get("containerPath") or ""),
                "readOnly": volume.get("readOnly") is True,
                "field": "volumes",
            }
        )
    return found


CLAW_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def _mount_target(target: str) -> str:
    return posixpath.normpath(target) if target.startswith("/") else target


def _confined_mount(
    where: str,
    mount: Mapping[str, Any],
    role: str,
    *,
    what: str,
    owner_role: str,
    directory: str,
    target: str,
    read_only: bool,
    exact: bool,
) -> Iterator[str]:
    """Problems of a bind mount whose source is inside one of the cage's own host directories."""
    source, actual_target = _normalize(mount["source"]), _mount_target(mount["target"])
    if role != owner_role:
        yield (
            f"{where}: only the {owner_role} container mounts the cage's {what}, not its "
            f"{role or 'unlabelled'} container."
        )
        return
    if exact and source != directory:
        yield f"{where}: mount the cage's {what} {directory} itself, not a path inside it."
    if actual_target != target:
        yield f"{where}: the cage's {what} is mounted at {target}."
    if read_only and not mount["readOnly"]:
        yield f"{where}: the cage's {what} must be mounted read-only."


def check_mounts(props: Props, config: Config) -> Iterator[str]:
    labels = labels_of(props)
    claw = labels.get(LABEL_CLAW, "")
    role = labels.get(LABEL_ROLE, "")
    key_dir = f"{HOST_KEY_ROOT}/{claw}"
    config_dir = f"{HOST_PROXY_CONFIG_ROOT}/{claw}"
    volume_dir = f"{HOST_VOLUME_ROOT}/{claw}"
    for mount in host_mounts(props):
        kind, source, target = mount["kind"], _normalize(mount["source"]), mount["target"]
        where = f"`{mount['field']}` {source or '(anonymous)'} -> {target}"
        if kind == "tmpfs":
            continue
        if kind == "from-container":
            yield f"{where}: mounts another container's volumes; cages share no state."
        elif kind == "volume":
            yield (
                f"{where}: a Docker named volume is neither encrypted nor bound to one cage; use the cage's "
                f"encrypted volume under {HOST_VOLUME_ROOT}/<claw>."
            )
        elif kind != "bind":
            yield f"{where}: mount type {kind!r} is not allowed."
        elif not CLAW_NAME.match(claw):
            yield (
                f"{where}: a container without a valid `{LABEL_CLAW}` label (got {claw!r}) may bind-mount no host path."
            )
        elif _is_within(source, key_dir):
            yield from _confined_mount(
                where,
                mount,
                role,
                what="key directory",
                owner_role=ROLE_CLAW,
                directory=key_dir,
                target=CAGE_KEY_DIR_MOUNT,
                read_only=True,
                exact=True,
            )
        elif _is_within(source, config_dir):
            yield from _confined_mount(
                where,
                mount,
                role,
                what="proxy configuration",
                owner_role=ROLE_PROXY,
                directory=config_dir,
                target=PROXY_CONFIG_MOUNT,
                read_only=True,
                exact=True,
            )
        elif _is_within(source, volume_dir):
            yield from _confined_mount(
                where,
                mount,
                role,
                what="volume",
                owner_role=ROLE_CLAW,
                directory=volume_dir,
                target=CAGE_VOLUME_MOUNT,
                read_only=False,
                exact=False,
            )
        else:
            yield (
                f"{where}: a bind mount of a host path outside the cage's own key directory {key_dir} "
                f"(claw, read-only, at {CAGE_KEY_DIR_MOUNT}), proxy configuration {config_dir} (proxy, "
                f"read-only, at {PROXY_CONFIG_MOUNT}) and volume {volume_dir} (claw, at {CAGE_VOLUME_MOUNT})."
            )


DOCKER_SOCKETS = (
    "/var/run/docker.sock",
    "/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/var/run/containerd/containerd.sock",
    "/run/docker/containerd/containerd.sock",
)


def check_no_docker_socket(props: Props, config: Config) -> Iterator[str]:
    for mount in host_mounts(props):
        if mount["kind"] != "bind" or not mount["source"]:
            continue
        source = _normalize(mount["source"])
        for socket in DOCKER_SOCKETS:
            if _is_within(socket, source) or "docker.sock" in source:
                yield (
                    f"`{mount['field']}` binds {source}, which exposes the container engine's socket "
                    f"({socket}): root on the host."
                )
                break


_SIZE_OPTION = re.compile(r"^size=\d+[kmgKMG%]?$")


def check_tmpfs(props: Props, config: Config) -> Iterator[str]:
    tmpfs = field(props, "tmpfs", {}) or {}
    for path, options in tmpfs.items() if isinstance(tmpfs, Mapping) else []:
        opts = [o.strip() for o in str(options or "").split(",") if o.strip()]
        missing = [o for o in ("noexec", "nosuid") if o not in opts]
        if missing:
            yield f"`tmpfs` {path} ({options!r}) lacks {', '.join(missing)}: written files could be executed."
        if not any(_SIZE_OPTION.match(o) for o in opts):
            yield f"`tmpfs` {path} ({options!r}) has no size=: it could fill the host's memory."
    for mount in field(props, "mounts", []) or []:
        if isinstance(mount, Mapping) and mount.get("type") == "tmpfs":
            yield (
                f"`mounts` tmpfs at {mount.get('target')}: a tmpfs mount cannot be made noexec through the "
                f'mount API of Docker 20.10; use the `tmpfs` map with "rw,noexec,nosuid,nodev,size=...".'
            )


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


_CREDENTIAL_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD|PASSWD|_CREDENTIALS?)$|PASSWORD|SECRET", re.IGNORECASE)


def is_credential_name(name: str) -> bool:
    """Heuristic: an env name that usually carries a credential (`*_KEY`, `*_TOKEN`, `*SECRET*`, `*PASSWORD*`)."""
    return name != SEALED_ENV and bool(_CREDENTIAL_NAME.search(name))


_STANDARD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def sealed_format_problem(value: str) -> str | None:
    """Why `value` is not sealed credentials in the components' wire format, None if it is.

    The format (components/sealing.py): "clawcage-v1:" + standard, padded base64 of the AES-SIV output,
    which is a 16-byte tag followed by the ciphertext of a non-empty JSON object, so at least 17 bytes.
    """
    if not value.startswith(SEALED_PREFIX):
        return f"it does not start with {SEALED_PREFIX!r}"
    body = value[len(SEALED_PREFIX) :]
    if not _STANDARD_BASE64.fullmatch(body):
        return f"what follows {SEALED_PREFIX!r} is not standard, padded base64"
    try:
        sealed = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return f"what follows {SEALED_PREFIX!r} is not standard, padded base64"
    if len(sealed) < SEALED_MIN_BYTES:
        return f"it decodes to {len(sealed)} bytes, fewer than an AES-SIV tag (16 bytes) and data"
    return None


def check_env_sealed(props: Props, config: Config) -> Iterator[str]:
    env = env_of(props)
    for name in sorted(env):
        if is_credential_name(name):
            yield (
                f"env {name} looks like a plaintext credential: credentials reach a cage only sealed, in {SEALED_ENV}."
            )
    sealed = env.get(SEALED_ENV)
    if sealed is not None and (problem := sealed_format_problem(sealed)) is not None:
        yield (
            f"env {SEALED_ENV} is not sealed credentials: {problem}. Expected {SEALED_PREFIX!r} followed by "
            f"the standard base64 of AES-SIV output (tag and ciphertext)."
        )


def check_cgroup_parent(props: Props, config: Config) -> Iterator[str]:
    parent = field(props, "cgroupParent")
    if parent is None or parent == "":
        return
    parent = str(parent)
    root = f"/{CGROUP_ROOT}/"
    if not parent.startswith(root) or posixpath.normpath(parent) != parent:
        yield (
            f"`cgroupParent` is {parent!r}, not a cgroup below {root}: in a cgroup the cage's limits "
            f"command did not create the container escapes its cage's pids, memory and cpu limits."
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
        f"Leave `cgroupParent` unset or put it below /{CGROUP_ROOT}/ (a cage's own parent cgroup "
        f"/{CGROUP_ROOT}/<claw>, which holds the whole cage's limits).",
        CONTAINER_TYPES,
        check_cgroup_parent,
    ),
]
