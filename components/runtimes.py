"""Which runtime runs a claw, and which hosts can run it: the one source of the runtime rule.

- runc: Docker's default runtime. The claw's syscalls reach the host kernel, through the cage's
  seccomp profile (components.seccomp), its user namespace and its cgroup.
- gvisor: gVisor's runsc. The claw's syscalls are served by gVisor's own kernel (the Sentry, a user
  process), which reaches the host kernel through a small filtered set of its own; a kernel bug
  reachable from the cage's seccomp profile is then no longer a way out of the cage.

The engine knows gVisor under the name RUNSC (daemon.json "runtimes"). Its flags:
- `--platform=systrap`: the Sentry intercepts the claw's syscalls with seccomp traps, which needs no
  KVM (Hetzner Cloud servers have no nested virtualisation; the KVM platform would);
- `--network=host`: the Sentry uses the network namespace Docker made for the container, not a
  network stack of its own (runsc refuses to start its own stack under Docker's userns-remap: "cannot
  run with network enabled in root network namespace"). The cage's network isolation is therefore
  Docker's and the host firewall's, as for a runc claw;
- `--oci-seccomp`: the cage's seccomp profile is applied inside the sandbox too, to the container's own
  processes (cage-init and the claw; not to what `docker exec` starts); without it runsc ignores it;
- `--systemd-cgroup`: on a host whose engine uses the systemd cgroup driver, the container's cgroup
  path is a systemd `slice:prefix:name` (the cage's slice, components.cagehost), which runsc must read
  as such to put the sandbox in the cage's limits.

Hosts: gVisor runs on the provisioned Debian 13 hosts (Debian's runsc package, which the bootstrap
installs and registers on hosts that hold a gVisor claw). Not on Debian 12 hosts (bookworm's runsc is
from 2022 and was never proven here) and not on a local host (this machine's engine registers no
runsc).
"""

from __future__ import annotations

from collections.abc import Iterable

RUNC = "runc"
GVISOR = "gvisor"
RUNTIMES = (RUNC, GVISOR)  # what a claw's `runtime` key may say; the first is the default
DEFAULT_RUNTIME = RUNC

RUNSC = "runsc"  # the name the engine registers gVisor under: a container's `runtime` input
RUNSC_PATH = "/usr/bin/runsc"  # Debian's runsc package
RUNSC_PACKAGE = "runsc"
RUNSC_ARGS = ("--platform=systrap", "--network=host", "--oci-seccomp")
GVISOR_HOST_IMAGES = ("debian-13",)

RUNTIME_TEXT = (
    "runc (the kernel's own namespaces, the default) or gvisor (gVisor's runsc: the claw's syscalls are "
    "served by a user-space kernel; Debian 13 hosts only)"
)


def docker_runtime(runtime: str) -> str | None:
    """The container's `runtime` input for a claw's runtime: None (the engine's default, runc) or RUNSC."""
    if runtime == RUNC:
        return None
    if runtime == GVISOR:
        return RUNSC
    raise ValueError(f"unknown runtime {runtime!r}: allowed are {', '.join(RUNTIMES)}")


def host_runtimes(kind: str, image: str | None) -> tuple[str, ...]:
    """The runtimes a host can run: runc everywhere; gVisor on provisioned Debian 13 hosts."""
    if kind != "local" and image in GVISOR_HOST_IMAGES:
        return RUNTIMES
    return (RUNC,)


def why_not(kind: str, image: str | None, runtime: str) -> str:
    """Why a host cannot run `runtime`, in a sentence's tail ('' when it can)."""
    if runtime in host_runtimes(kind, image):
        return ""
    if kind == "local":
        return "a local host runs this machine's engine, which registers no gVisor"
    return f"gVisor runs on {' or '.join(GVISOR_HOST_IMAGES)} hosts only, not {image}"


def engine_runtimes(runtimes: Iterable[str], *, cgroup_driver: str) -> dict:
    """daemon.json's "runtimes": runsc when a claw of the host runs under gVisor, else nothing."""
    if GVISOR not in set(runtimes):
        return {}
    args = list(RUNSC_ARGS) + (["--systemd-cgroup"] if cgroup_driver == "systemd" else [])
    return {RUNSC: {"path": RUNSC_PATH, "runtimeArgs": args}}
