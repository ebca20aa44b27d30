"""Which host runs which cage: a pure, deterministic function of the stack config (components.model in,
nothing of Pulumi imported; the fit arithmetic, cage_demand and host_limit, lives in components.model).

What a cage takes: its claw's cpus and memory plus its egress proxy's (components.model), and on disk
its tmpfs and its volume (tmpfs lives in RAM and is charged to the memory cgroup too; it is also
counted on disk so that a host's disk bounds everything its cages can write, swap included). What a
host offers: its capacity less a reserve for the OS and dockerd, times the stack's overcommit ratio for
each resource (1 unless the stack says otherwise), and at most `max_cages` cages.

How cages are placed (same config, same placement, whatever the order of the lists):
1. Pinned claws (`host:`) go to their host, in name order.
2. Locked claws (`clawstaff:placementLock`, written from the preview's placement after each deployment)
   stay on their recorded host while it exists and they fit there, in the order of step 3.
3. Every other claw, largest first (its largest share of a pool host's cpus, memory or disk; ties by
   the SHA-256 of its name), takes the first host with room in its own preference order: the stack's listed hosts ranked by rendezvous hashing (HRW: a score that depends
   only on the claw's and the host's names), then each pool's hosts in index order. Listed hosts exist
   whatever we do, so cages spread over them; pool hosts cost money, so they fill in order and a pool
   makes a host only when the hosts before it are full.
4. Draining: steps 1-3 run as if no host were draining; then only the cages that landed on a draining
   host are placed again, in the same order, on the room that is left.

Why a lock: no pure function of the claws alone can pack hosts full and never move a running cage.
Two claws that each fit alone in a host's last room cannot both keep it, so whichever function places
them moves one of them when the other is added. So the decisions that must not change are written into
the config itself (the lock, like Kubernetes writes a pod's node into the pod), never kept as hidden
state; a new claw is placed around them.

What holds exactly (tests/unit/test_placement.py proves each with hypothesis):
- determinism and independence from list order; capacity, overcommit and the cage ceiling are never
  exceeded; pins are honoured; an impossible placement is a PlacementError naming every claw that
  does not fit and by how much;
- draining a host moves only that host's cages; changing anything but a claw's cpus, memory, tmpfs,
  volume, pin or runtime (egress, secrets, image, pids, org, command) moves nothing;
- a claw goes only to a host that runs its runtime (components.runtimes: gVisor on provisioned Debian
  13 hosts), and a locked claw whose host no longer can moves;
- a locked claw never moves because another claw was added, removed, changed or locked, nor because
  another host was drained or removed; a locked claw that grew, or whose host shrank, moves only if its
  host's locked cages no longer fit together, and then the ones that sort last move first;
- without a lock, a change moves only claws that sort after the changed one (step 3's order; a resized
  claw: after its old or its new place), and with room to spare on its first choice a claw never moves.
What does not hold without a lock: on full hosts, adding, removing or resizing a claw can move claws
that sort after it (benchmarks/ counts them). Claws not yet deployed are the only ones without a lock
entry, so in the intended workflow that only reshuffles cages that do not run yet.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Iterable, Mapping, Sequence

from components.model import (
    HOST_RESERVE,
    PROXY_CPUS,
    PROXY_MEMORY,
    Capacity,
    Claw,
    Demand,
    Host,
    HostPool,
    Limit,
    PlacementPolicy,
    StackConfig,
    cage_demand,
    host_limit,
    lacks,
)
from components.runtimes import why_not
from components.units import GiB, format_cpus, format_size

DEFAULT_POLICY = PlacementPolicy()
MAX_MISFITS_SHOWN = 10  # an error names this many claws that do not fit, then counts the rest


class PlacementError(ValueError):
    """The claws do not fit on the hosts; says which claws and by how much. Placement imports nothing of
    Pulumi: components.fleet raises it as a pulumi.RunError (FleetPlacementError), so that `pulumi up`
    prints it without a traceback."""


@dataclass
class _Bin:
    """One host's limit and what the cages placed so far take of it."""

    host: Host
    limit: Limit
    cpus: Decimal = Decimal(0)
    memory: int = 0
    disk: int = 0
    cages: list[str] = field(default_factory=list)

    def free(self) -> Capacity:
        lim = self.limit
        return Capacity(cpus=lim.cpus - self.cpus, memory=lim.memory - self.memory, disk=lim.disk - self.disk)

    def fits(self, need: Demand) -> bool:
        return self.fits_runtime(need) and len(self.cages) < self.limit.cages and not lacks(need, self.free())

    def add(self, claw: str, need: Demand) -> None:
        self.cpus += need.cpus
        self.memory += need.memory
        self.disk += need.disk
        self.cages.append(claw)

    def remove(self, claw: str, need: Demand) -> None:
        self.cpus -= need.cpus
        self.memory -= need.memory
        self.disk -= need.disk
        self.cages.remove(claw)

    def shortfall(self, need: Demand) -> list[str]:
        """What is missing for `need`, each as 'cpus short by 0.75 (needs 2.25, 1.5 free)'."""
        lim, room, out = self.limit, self.free(), []
        for what in lacks(need, room):
            fmt = format_cpus if what == "cpus" else format_size
            want, free = getattr(need, what), max(getattr(room, what), 0)
            out.append(f"{what} short by {fmt(want - free)} (needs {fmt(want)}, {fmt(free)} free)")
        if len(self.cages) >= lim.cages:
            out.append(f"at its ceiling of {lim.cages} cages")
        if why := why_not(self.host.kind, self.host.image, need.runtime):
            out.append(f"cannot run {need.runtime} ({why})")
        return out

    def short_ratio(self, need: Demand) -> float:
        """How far from fitting, as the largest missing share of a need: ranks the closest host."""
        lim, worst = self.limit, 0.0
        for want, free in ((need.cpus, lim.cpus - self.cpus), (need.memory, lim.memory - self.memory),
                           (need.disk, lim.disk - self.disk)):  # fmt: skip
            if want > free and want:
                worst = max(worst, float((want - max(free, 0)) / want))
        return worst + (1.0 if len(self.cages) >= lim.cages else 0.0) + (0.0 if self.fits_runtime(need) else 2.0)

    def fits_runtime(self, need: Demand) -> bool:
        return need.runtime in self.host.runtimes


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode()).digest()


def hrw_score(claw: str, host: str) -> bytes:
    """Rendezvous score of a host for a claw: depends on the two names only, so adding or removing
    other hosts never changes how a claw ranks the hosts it had."""
    return _digest(f"{claw}\0{host}")


def placement_key(claw: Claw, reference: Limit | None = None) -> tuple:
    """The order claws are placed in: pinned first (by name), then the largest first (first-fit
    decreasing packs far tighter than any other order), ties by the SHA-256 of the name. A claw's size
    is its largest share of a reference host's limit (cpus, memory or disk: whichever it fills most),
    so a claw that is heavy in the resource the hosts lack goes first. Nothing but the claw's own
    limits, its name and the reference host decides its place in this order."""
    if claw.host:
        return (0, Decimal(0), claw.name.encode(), claw.name)
    need = cage_demand(claw)
    if reference is None:
        size = max(need.cpus, Decimal(need.memory) / GiB, Decimal(need.disk) / (100 * GiB))
    else:
        size = max(need.cpus / max(reference.cpus, Decimal("0.01")), Decimal(need.memory) / max(reference.memory, 1),
                   Decimal(need.disk) / max(reference.disk, 1))  # fmt: skip
    return (1, -size, _digest(claw.name), claw.name)


def reference_limit(hosts: Sequence[Host], pools: Sequence[HostPool], policy: PlacementPolicy) -> Limit | None:
    """The host that sizes claws for placement_key: the first pool's host type (what fills up), else the
    largest listed host."""
    if pools:
        return host_limit(sorted(pools, key=lambda p: p.name)[0].host(1), policy)
    if hosts:
        return max((host_limit(h, policy) for h in hosts), key=lambda l: (l.cpus, l.memory, l.disk, l.cages))
    return None


def candidate_hosts(hosts: Sequence[Host], pools: Sequence[HostPool] = ()) -> list[Host]:
    """Every host placement may use: the listed ones by name, then each pool's (by pool name) in index order."""
    out = sorted(hosts, key=lambda h: h.name)
    for pool in sorted(pools, key=lambda p: p.name):
        out.extend(pool.hosts())
    return out


@dataclass(frozen=True)
class Placement:
    claws: Mapping[str, str]  # claw name -> host name, in claw-name order
    hosts: tuple[Host, ...]  # the hosts that exist: every listed host, then each pool host that holds a cage

    def by_host(self) -> dict[str, list[str]]:
        return claws_by_host(self.claws)


def place(
    hosts: Sequence[Host],
    claws: Iterable[Claw],
    *,
    pools: Sequence[HostPool] = (),
    policy: PlacementPolicy = DEFAULT_POLICY,
    lock: Mapping[str, str] | None = None,
    stack_file: str = "the stack",
) -> Placement:
    """Place every claw (see the module docstring), or raise PlacementError naming each claw that does not fit."""
    bins = {h.name: _Bin(h, host_limit(h, policy)) for h in candidate_hosts(hosts, pools)}
    listed = sorted(h.name for h in hosts)
    listed_set = set(listed)
    pool_hosts = [name for name in bins if name not in listed_set]
    reference = reference_limit(hosts, pools, policy)
    ordered = sorted(claws, key=lambda c: placement_key(c, reference))
    demands = {c.name: cage_demand(c) for c in ordered}
    misfits: list[str] = []
    lock = lock or {}

    chosen: dict[str, str] = {}

    def place_on_first_choice(claw: Claw) -> None:
        host = _choose(claw, demands[claw.name], bins, listed, pool_hosts, draining=False)
        if host is None:
            misfits.append(_misfit(claw, demands[claw.name], bins, pools))
        else:
            bins[host].add(claw.name, demands[claw.name])
            chosen[claw.name] = host

    # Pass 1: as if nothing were draining. Pins, then locked claws that still fit where they are, then the rest.
    free: list[Claw] = []
    for claw in ordered:
        locked = lock.get(claw.name)
        if claw.host is None and locked in bins and bins[locked].fits(demands[claw.name]):
            bins[locked].add(claw.name, demands[claw.name])
            chosen[claw.name] = locked
        elif claw.host is None:
            free.append(claw)
        else:
            place_on_first_choice(claw)
    for claw in free:
        place_on_first_choice(claw)

    # Pass 2: the cages of draining hosts leave them and are placed again on what is left.
    draining = {name for name, b in bins.items() if b.host.drain}
    moving = [c for c in ordered if chosen.get(c.name) in draining]
    for claw in moving:
        if claw.host:
            misfits.append(
                f"{claw.name} (pinned to {claw.host}, which is draining: unpin it or pin it to another host)"
            )
        bins[chosen.pop(claw.name)].remove(claw.name, demands[claw.name])
    for claw in moving:
        if claw.host:
            continue
        host = _choose(claw, demands[claw.name], bins, listed, pool_hosts, draining=True)
        if host is None:
            misfits.append(_misfit(claw, demands[claw.name], bins, pools, draining=True))
        else:
            bins[host].add(claw.name, demands[claw.name])
            chosen[claw.name] = host

    if misfits:
        shown = misfits[:MAX_MISFITS_SHOWN] + ([f"and {len(misfits) - MAX_MISFITS_SHOWN} more"]
                                               if len(misfits) > MAX_MISFITS_SHOWN else [])  # fmt: skip
        raise PlacementError(
            f"{stack_file}: clawstaff:claws: {len(misfits)} claw(s) do not fit on the hosts: "
            + "; ".join(shown)
            + f". Each cage needs its claw's limits plus its proxy ({PROXY_CPUS} cpus, {format_size(PROXY_MEMORY)}) "
            f"and its tmpfs and volume on disk; each host keeps {HOST_RESERVE.cpus} cpus, "
            f"{format_size(HOST_RESERVE.memory)} and {format_size(HOST_RESERVE.disk)} for itself: "
            "add a host, raise a pool's max, unpin, or lower the limits."
        )
    used = {h for h in chosen.values()}
    existing = tuple(bins[name].host for name in listed) + tuple(bins[n].host for n in pool_hosts if n in used)
    return Placement(claws=dict(sorted(chosen.items())), hosts=existing)


def _choose(
    claw: Claw,
    need: Demand,
    bins: Mapping[str, _Bin],
    listed: Sequence[str],
    pool_hosts: Sequence[str],
    *,
    draining: bool,
) -> str | None:
    if claw.host:
        return claw.host if bins[claw.host].fits(need) else None
    preference = sorted(listed, key=lambda h: hrw_score(claw.name, h), reverse=True)
    for name in (*preference, *pool_hosts):
        b = bins[name]
        if not (draining and b.host.drain) and b.fits(need):
            return name
    return None


def _misfit(
    claw: Claw, need: Demand, bins: Mapping[str, _Bin], pools: Sequence[HostPool], *, draining: bool = False
) -> str:
    """'<claw> (needs cpus 2.25, memory 1GiB, disk 256MiB; closest: <host>, cpus short by ...)'."""
    needs = f"needs cpus {format_cpus(need.cpus)}, memory {format_size(need.memory)}, disk {format_size(need.disk)}"
    if claw.host:
        return f"{claw.name} ({needs}; its pinned host {claw.host}: {', '.join(bins[claw.host].shortfall(need))})"
    open_bins = [b for b in bins.values() if not (draining and b.host.drain)]
    if not open_bins:
        return f"{claw.name} ({needs}; every host is draining)"
    closest = min(open_bins, key=lambda b: (b.short_ratio(need), b.host.name))
    full_pools = [p.name for p in pools if all(bins[h.name].cages for h in p.hosts())]
    pools_note = f"; pool(s) {', '.join(full_pools)} at their max" if full_pools else ""
    return f"{claw.name} ({needs}; closest: {closest.host.name}, {', '.join(closest.shortfall(need))}{pools_note})"


def place_fleet(config: StackConfig) -> Placement:
    return place(config.hosts, config.claws, pools=config.pools, policy=config.placement,
                 lock=config.placement_lock, stack_file=config.stack_file)  # fmt: skip


def lower_bound_hosts(claws: Iterable[Claw], host: Host, policy: PlacementPolicy = DEFAULT_POLICY) -> tuple[int, str]:
    """The fewest hosts like `host` that could hold these cages, and the resource that binds: the
    largest of ceil(total demand / host limit) over cpus, memory, disk and the cage count."""
    limit, demands = host_limit(host, policy), [cage_demand(c) for c in claws]
    bounds = {
        "cpus": math.ceil(sum((d.cpus for d in demands), Decimal(0)) / limit.cpus),
        "memory": math.ceil(sum(d.memory for d in demands) / limit.memory),
        "disk": math.ceil(sum(d.disk for d in demands) / limit.disk),
        "cages": math.ceil(len(demands) / limit.cages),
    }
    binding = max(bounds, key=lambda k: (bounds[k], k))
    return bounds[binding], binding


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
