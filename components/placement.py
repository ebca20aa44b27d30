"""Which host runs which cage: a pure, deterministic function of the stack config.

Each cage needs its claw's limits plus the fixed overhead of its egress proxy. A host offers its
capacity less a reserve for the operating system and the Docker engine. Pinned claws go where they are
pinned; the others go, in name order, to the eligible host that would be least loaded afterwards (the
largest share of cpus, memory or disk in use, compared across hosts), spreading load so that one busy
host does not starve while another idles. Same config, same placement.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

import pulumi

from components.config import Capacity, Claw, Host
from components.units import format_size

MiB = 1024**2
GiB = 1024**3

# What a cage costs beyond its claw's own limits: the egress proxy's limits (see components.cage).
PROXY_CPUS = Decimal("0.25")
PROXY_MEMORY = 64 * MiB
# Kept back on every host for the OS, dockerd and logs.
HOST_RESERVE = Capacity(cpus=Decimal("0.5"), memory=1 * GiB, disk=10 * 1000**3)


class PlacementError(pulumi.RunError):
    """The claws do not fit on the hosts; says which claws and by how much."""


@dataclass(frozen=True)
class Demand:
    cpus: Decimal
    memory: int
    disk: int


def cage_demand(claw: Claw) -> Demand:
    """What one cage takes from its host: the claw, its proxy, and its volume on disk.

    tmpfs is charged to the container's memory cgroup, so it is inside `memory`, not on disk.
    """
    return Demand(cpus=claw.cpus + PROXY_CPUS, memory=claw.memory + PROXY_MEMORY, disk=claw.volume or 0)


def usable_capacity(host: Host) -> Capacity:
    c = host.capacity
    return Capacity(
        cpus=max(c.cpus - HOST_RESERVE.cpus, Decimal(0)),
        memory=max(c.memory - HOST_RESERVE.memory, 0),
        disk=max(c.disk - HOST_RESERVE.disk, 0),
    )


def _shortfall(free: Capacity, need: Demand) -> list[str]:
    short = []
    if need.cpus > free.cpus:
        short.append(f"cpus {need.cpus} > {free.cpus} free")
    if need.memory > free.memory:
        short.append(f"memory {format_size(need.memory)} > {format_size(free.memory)} free")
    if need.disk > free.disk:
        short.append(f"disk {format_size(need.disk)} > {format_size(free.disk)} free")
    return short


def _load_after(total: Capacity, free: Capacity, need: Demand) -> float:
    """The host's most loaded resource, as a share of its capacity, if this cage were added."""
    shares = []
    for have, left, want in ((total.cpus, free.cpus, need.cpus), (total.memory, free.memory, need.memory),
                             (total.disk, free.disk, need.disk)):
        shares.append(float((have - left + want) / have) if have else float("inf"))
    return max(shares)


def place_claws(hosts: Sequence[Host], claws: Iterable[Claw], *, stack_file: str = "the stack") -> dict[str, str]:
    """Map every claw name to a host name, or raise PlacementError naming each claw that does not fit."""
    usable = {h.name: usable_capacity(h) for h in hosts}
    free = dict(usable)
    placement: dict[str, str] = {}
    misfits: list[str] = []
    ordered = sorted(claws, key=lambda c: (c.host is None, c.name))  # pins first: they have no choice
    for claw in ordered:
        need = cage_demand(claw)
        candidates = [claw.host] if claw.host else sorted(free, key=lambda n: (_load_after(usable[n], free[n], need), n))
        chosen = next((n for n in candidates if not _shortfall(free[n], need)), None)
        if chosen is None:
            best = min(candidates, key=lambda n: (len(_shortfall(free[n], need)), n))
            misfits.append(f"{claw.name} (on {best}: {', '.join(_shortfall(free[best], need))})")
            continue
        f = free[chosen]
        free[chosen] = Capacity(cpus=f.cpus - need.cpus, memory=f.memory - need.memory, disk=f.disk - need.disk)
        placement[claw.name] = chosen
    if misfits:
        raise PlacementError(
            f"{stack_file}: clawstaff:claws: {len(misfits)} claw(s) do not fit on the hosts: "
            + "; ".join(misfits)
            + ". Each cage needs its claw's limits plus its proxy "
            f"({PROXY_CPUS} cpus, {format_size(PROXY_MEMORY)}) and each host keeps {HOST_RESERVE.cpus} cpus, "
            f"{format_size(HOST_RESERVE.memory)} and {format_size(HOST_RESERVE.disk)} for itself: "
            "add a host, unpin, or lower the limits."
        )
    return dict(sorted(placement.items()))


def claws_by_host(placement: Mapping[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for claw, host in sorted(placement.items()):
        out.setdefault(host, []).append(claw)
    return out


# Numeric users of a cage's two containers. Under userns-remap container uid U is host uid base+U, so
# distinct uids per cage on one host keep one cage's files (its key, its volume) unreadable to another.
UID_BASE = 10000
UID_SLOTS = 27000  # claw uid = UID_BASE + 2*slot, proxy uid = claw uid + 1; all below 65536


def cage_uids(claws_on_host: Iterable[str]) -> dict[str, tuple[int, int]]:
    """(claw uid, proxy uid) per claw of one host: a slot from the claw's name hash, probing on collision.

    Hash-based rather than by position, so adding or removing a claw does not renumber the others
    (a uid change would re-own a volume); only a claw that collides with an earlier name moves on.
    """
    names = sorted(claws_on_host)
    if len(names) > UID_SLOTS:
        raise PlacementError(f"a host can hold at most {UID_SLOTS} cages, not {len(names)}")
    taken: set[int] = set()
    out: dict[str, tuple[int, int]] = {}
    for name in names:
        slot = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % UID_SLOTS
        while slot in taken:
            slot = (slot + 1) % UID_SLOTS
        taken.add(slot)
        uid = UID_BASE + 2 * slot
        out[name] = (uid, uid + 1)
    return out
