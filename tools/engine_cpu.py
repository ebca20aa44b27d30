"""The engine's own CPU share on this machine: dockerd, its containerd and every container's shim in
one cgroup whose weight is below a cage's.

Whatever a claw writes to its stdout and stderr is copied by its shim and by dockerd, on the host's
CPU and outside the cage's quota: a claw flooding its own stdout made them burn most of two cores
and its neighbour's latency rose sevenfold (attack-findings finding 3). No log driver or log option
of Docker 20.10 or 26 bounds that copy (`mode=non-blocking` drops lines only after dockerd has read
them). What bounds it here: the engine's processes compete for the CPU at a weight below a cage's
(ENGINE_CPU_SHARES against the default 1024 of a cage's parent), so a neighbour's work comes first
when the CPU is contended, and the flooding claw, whose writes block until dockerd has read them
(the log's default blocking mode), is slowed down with it. When the CPU is idle the copy still runs.

Processes started later inherit the cgroup (containerd forks every shim), so this runs once after
the engine starts, and again before the isolation bench deploys (tests/integration/bench.py).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
ENGINE_CGROUP = "clawstaff-engine"
# cgroup v1 `cpu.shares`; a cage's parent cgroup (/clawstaff/<claw>) and every process left in the
# root cgroup weigh the default 1024. One eighth: under contention the engine gets 1/9 of a core
# against one busy cage, all of an idle one.
ENGINE_CPU_SHARES = 128
# The same ratio in cgroup v2's `cpu.weight` (default 100).
ENGINE_CPU_WEIGHT = 12
ENGINE_PROCESSES = ("dockerd", "containerd", "containerd-shim")  # comm names (15 characters at most)


@dataclass(frozen=True)
class Placement:
    directory: Path  # the engine's cgroup in the cpu controller's hierarchy
    weight_file: str
    weight: int


def placement(root: Path = CGROUP_ROOT) -> Placement:
    """Where the engine's cgroup lives on this machine's layout: the unified hierarchy (cgroup v2,
    `cgroup.controllers` at the root) or the v1 `cpu` hierarchy."""
    if (root / "cgroup.controllers").exists():
        return Placement(root / ENGINE_CGROUP, "cpu.weight", ENGINE_CPU_WEIGHT)
    return Placement(root / "cpu" / ENGINE_CGROUP, "cpu.shares", ENGINE_CPU_SHARES)


def cpu_cgroup_of(pid: int, proc: Path = Path("/proc")) -> str | None:
    """The cgroup path of `pid` in the cpu controller's hierarchy (v2: the unified one)."""
    unified = None
    for line in (proc / str(pid) / "cgroup").read_text().splitlines():
        number, controllers, path = line.split(":", 2)
        if "cpu" in controllers.split(","):
            return path
        if number == "0" and controllers == "":
            unified = path
    return unified


def engine_pids() -> list[int]:
    """The engine's processes now running: dockerd, containerd, the shims."""
    pids: list[int] = []
    for name in ENGINE_PROCESSES:
        done = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        pids += [int(p) for p in done.stdout.split()]
    return sorted(set(pids))


def place_engine(root: Path = CGROUP_ROOT, pids: list[int] | None = None, systemd: bool | None = None) -> str:
    """Put the engine's processes in their cgroup at their weight; idempotent. Returns a summary for
    the engine's status line and the scorecard's notes. Under systemd the units own their cgroups:
    nothing is moved (a provisioned host's weights are not set yet: docs/attack-findings.md, 3)."""
    if systemd if systemd is not None else Path("/run/systemd/system").is_dir():
        return "engine cpu: systemd owns the engine's cgroups, not moved"
    where = placement(root)
    where.directory.mkdir(exist_ok=True)
    weight = where.directory / where.weight_file
    if weight.read_text().strip() != str(where.weight):
        weight.write_text(f"{where.weight}\n")
    moved = engine_pids() if pids is None else pids
    for pid in moved:
        try:
            (where.directory / "cgroup.procs").write_text(f"{pid}\n")
        except ProcessLookupError:  # it exited meanwhile
            continue
    return f"engine cpu: {len(moved)} processes in {where.directory} ({where.weight_file}={where.weight})"
