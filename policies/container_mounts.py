"""Container rules about what a container sees of the host: bind mounts confined to the cage's own key
directory, proxy configuration and volume; no engine socket; tmpfs only noexec and sized (the policies
are in container_rules.py)."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import (
    CAGE_KEY_DIR_MOUNT,
    CAGE_VOLUME_MOUNT,
    BROKER_CA_MOUNT,
    HOST_BROKER_ROOT,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    HOST_VOLUME_ROOT,
    LABEL_CLAW,
    LABEL_ROLE,
    PROXY_CONFIG_MOUNT,
    ROLE_BROKER,
    ROLE_CLAW,
    ROLE_PROXY,
)
from policy_support import field, labels_of

Props = Mapping[str, Any]
Config = Mapping[str, Any]


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
    broker_dir = f"{HOST_BROKER_ROOT}/{claw}"
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
        elif _is_within(source, f"{broker_dir}/key"):
            # The broker key opens the brokered secrets: the broker alone holds it.
            yield from _confined_mount(
                where,
                mount,
                role,
                what="broker key directory",
                owner_role=ROLE_BROKER,
                directory=f"{broker_dir}/key",
                target=CAGE_KEY_DIR_MOUNT,
                read_only=True,
                exact=True,
            )
        elif _is_within(source, f"{broker_dir}/ca"):
            # The cage CA's certificate: the broker writes it, the claw reads it; nothing else mounts it.
            yield from _confined_mount(
                where,
                mount,
                role if role != ROLE_CLAW else ROLE_BROKER,
                what="broker CA directory",
                owner_role=ROLE_BROKER,
                directory=f"{broker_dir}/ca",
                target=BROKER_CA_MOUNT,
                read_only=role == ROLE_CLAW,
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
                f"read-only, at {PROXY_CONFIG_MOUNT}), volume {volume_dir} (claw, at {CAGE_VOLUME_MOUNT}), "
                f"broker key {broker_dir}/key (broker, read-only, at {CAGE_KEY_DIR_MOUNT}) and broker CA "
                f"directory {broker_dir}/ca (broker, and claw read-only, at {BROKER_CA_MOUNT})."
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
