"""The typed objects of a stack, and what a cage takes from its host: the bottom layer of the program.

Everything above reads these: the config validator (components.config) builds them from the stack file,
placement (components.placement) places claws on hosts with the fit arithmetic below, and the Pulumi
components (components.cage, components.host, components.fleet) turn them into resources. Nothing here
imports Pulumi or the validator; the objects are frozen and hold values already checked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, Mapping

from components.broker import Binding
from components.catalog import SERVER_TYPES
from components.runtimes import RUNC, host_runtimes
from components.units import GB, GiB, MiB

# A pool's hosts are named <pool>-001 ... <pool>-999: a fixed width, so that growing the pool never
# renames a host (and the names sort in the order the pool fills them).
POOL_INDEX_WIDTH = 3
# Cages per host unless the stack or the host says otherwise: each cage is a bridge network, veth
# pairs, iptables rules and a uid pair on its host; Docker's per-network work grows with the count.
DEFAULT_MAX_CAGES_PER_HOST = 100

# What a cage adds to its claw's own limits: its egress proxy's share (components.cage gives the proxy
# these limits; placement counts them in every cage's demand).
PROXY_CPUS = Decimal("0.25")
PROXY_MEMORY = 64 * MiB
PROXY_PIDS = 64
PROXY_TMPFS = 16 * MiB  # the proxy's /tmp, charged to its memory
# The credential broker's share, in a cage with brokered secrets only (mitmproxy's core in Python:
# benchmarks/README.md has its measured memory).
BROKER_CPUS = Decimal("0.25")
BROKER_MEMORY = 160 * MiB
BROKER_PIDS = 64
BROKER_TMPFS = 4 * MiB


@dataclass(frozen=True)
class Endpoint:
    """An egress entry or the control plane: a DNS name (never an IP literal) and a port."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Capacity:
    cpus: Decimal
    memory: int  # bytes
    disk: int  # bytes


# Kept back on every host for the OS, dockerd and logs.
HOST_RESERVE = Capacity(cpus=Decimal("0.5"), memory=1 * GiB, disk=10 * GB)


@dataclass(frozen=True)
class Host:
    name: str
    kind: Literal["cloud", "dedicated", "local"]
    capacity: Capacity
    server_type: str | None = None  # cloud
    location: str | None = None  # cloud
    image: str | None = None  # cloud and dedicated: the Debian release (debian-13, debian-12)
    address: str | None = None  # dedicated: public IP
    host_key: str | None = None  # dedicated: the server's current SSH host key (no trust on first use)
    drain: bool = False  # an explicit decision in the config: move this host's cages elsewhere
    max_cages: int | None = None  # None: the stack's placement.maxCagesPerHost
    pool: str | None = None  # the pool that made this host, if any
    pool_index: int | None = None  # its 1-based index in that pool

    @property
    def runtimes(self) -> tuple[str, ...]:
        """The claw runtimes this host can run (components.runtimes)."""
        return host_runtimes(self.kind, self.image)


def pool_host_name(pool: str, index: int) -> str:
    """The stable name of a pool's index-th host: the index alone decides it, never the pool's size."""
    return f"{pool}-{index:0{POOL_INDEX_WIDTH}d}"


def pool_index(pool: str, host: str) -> int | None:
    """The index of `host` in `pool` if the name is one the pool makes (<pool>-NNN), else None."""
    prefix, _, digits = host.rpartition("-")
    if prefix != pool or len(digits) != POOL_INDEX_WIDTH or not digits.isdigit() or int(digits) == 0:
        return None
    return int(digits)


def server_capacity(server_type: str) -> Capacity:
    """A Hetzner Cloud server type's whole capacity (components.catalog)."""
    st = SERVER_TYPES[server_type]
    return Capacity(cpus=Decimal(st.cpus), memory=st.memory, disk=st.disk)


@dataclass(frozen=True)
class HostPool:
    """Identical cloud hosts made only as the cages need them, up to `max`, spread over `locations`.

    Host i (from 1) is named pool_host_name(name, i) and stands in locations[(i - 1) % len(locations)]:
    both depend on i alone, so raising `max` adds names and never renames or moves an existing host.
    """

    name: str
    server_type: str
    locations: tuple[str, ...]
    max: int
    image: str
    drain: tuple[str, ...] = ()  # names of this pool's hosts whose cages must move
    max_cages: int | None = None

    def host(self, index: int) -> Host:
        name = pool_host_name(self.name, index)
        return Host(
            name=name,
            kind="cloud",
            capacity=server_capacity(self.server_type),
            server_type=self.server_type,
            location=self.locations[(index - 1) % len(self.locations)],
            image=self.image,
            drain=name in self.drain,
            max_cages=self.max_cages,
            pool=self.name,
            pool_index=index,
        )

    def hosts(self) -> tuple[Host, ...]:
        """Every host the pool may make, in the order it fills them."""
        return tuple(self.host(i) for i in range(1, self.max + 1))


@dataclass(frozen=True)
class PlacementPolicy:
    """How full a host may be: usable capacity times an overcommit ratio per resource, and a ceiling of
    cages. Ratios are 1 (no overcommit) unless the stack says otherwise; memory overcommit is allowed
    only when asked for, because an overcommitted host can OOM-kill a neighbour's cage."""

    overcommit_cpus: Decimal = Decimal(1)
    overcommit_memory: Decimal = Decimal(1)
    overcommit_disk: Decimal = Decimal(1)
    max_cages_per_host: int = DEFAULT_MAX_CAGES_PER_HOST


@dataclass(frozen=True)
class Claw:
    name: str
    org: str
    image: str
    cpus: Decimal
    memory: int
    pids: int
    tmpfs: int
    volume: int | None
    egress: tuple[Endpoint, ...]
    secrets: tuple[str, ...]
    host: str | None
    command: tuple[str, ...] | None = None  # what cage-init execs; None: the image's CMD
    broker: tuple[Binding, ...] = ()  # the secrets the cage's broker attaches (components.broker)
    runtime: str = RUNC  # what runs the claw container (components.runtimes)


@dataclass(frozen=True)
class Admin:
    ssh_allowed_cidrs: tuple[str, ...]
    ssh_public_keys: tuple[str, ...]


@dataclass(frozen=True)
class AuditSink:
    """The stack's audit sink: a cloud or dedicated host of its own that holds no cages and keeps the
    cage hosts' audit trail (docs/audit.md) for `retention_days`, in at most `max_use` bytes of its disk
    (whichever limit comes first drops the oldest entries)."""

    host: Host
    retention_days: int
    max_use: int  # bytes; at most sink_room(host)


@dataclass(frozen=True)
class StackConfig:
    stack: str
    stack_file: str
    control_plane: Endpoint
    admin: Admin
    hosts: tuple[Host, ...]
    claws: tuple[Claw, ...]
    proxy_image: str
    # repr=False: a config printed in a log or a traceback must not carry the secrets.
    sealing_key: str = field(repr=False)
    claw_secrets: Mapping[str, Mapping[str, str]] = field(repr=False)
    pools: tuple[HostPool, ...] = ()
    placement: PlacementPolicy = PlacementPolicy()
    # claw -> the host it was placed on when last deployed: kept there while it fits (components.placement)
    placement_lock: Mapping[str, str] = field(default_factory=dict)
    broker_image: str | None = None  # the credential broker's image, for cages with brokered secrets
    # The one place to ask which host is the audit sink, and its retention; None without one. The sink
    # is never in `hosts` (those hold cages): placement, capacity and the cage counts never see it.
    audit_sink: AuditSink | None = None

    def host(self, name: str) -> Host:
        return next(h for h in self.hosts if h.name == name)

    def claw(self, name: str) -> Claw:
        return next(c for c in self.claws if c.name == name)


# --- fit: what a cage takes, what a host offers -------------------------------------------------------

RESOURCES = ("cpus", "memory", "disk")


@dataclass(frozen=True)
class Demand:
    cpus: Decimal
    memory: int
    disk: int
    runtime: str = RUNC  # the host must run it (components.runtimes); not a resource, never summed


def cage_demand(claw: Claw) -> Demand:
    """What one cage takes from its host: the claw, its proxy and (with brokered secrets) its broker;
    on disk, its tmpfs and its volume."""
    broker = bool(claw.broker)
    return Demand(
        cpus=claw.cpus + PROXY_CPUS + (BROKER_CPUS if broker else 0),
        memory=claw.memory + PROXY_MEMORY + (BROKER_MEMORY if broker else 0),
        disk=claw.tmpfs + (claw.volume or 0),
        runtime=claw.runtime,
    )


def cage_pids(claw: Claw) -> int:
    """The pids limit of the whole cage: the claw's, its proxy's and its broker's."""
    return claw.pids + PROXY_PIDS + (BROKER_PIDS if claw.broker else 0)


def lacks(need: Demand, room: Capacity | Demand) -> tuple[str, ...]:
    """The resources of RESOURCES of which `need` takes more than `room` holds; empty when it fits.
    The one comparison of a demand with a room: the config check and placement both ask it."""
    return tuple(r for r in RESOURCES if getattr(need, r) > getattr(room, r))


def usable_capacity(host: Host) -> Capacity:
    c = host.capacity
    return Capacity(
        cpus=max(c.cpus - HOST_RESERVE.cpus, Decimal(0)),
        memory=max(c.memory - HOST_RESERVE.memory, 0),
        disk=max(c.disk - HOST_RESERVE.disk, 0),
    )


def sink_room(host: Host) -> int:
    """The most an audit sink's trail may take: its disk less the host's reserve (the default maxUse)."""
    return usable_capacity(host).disk


@dataclass(frozen=True)
class Limit:
    """What placement may put on one host: usable capacity times the overcommit ratios, and a cage count."""

    cpus: Decimal
    memory: int
    disk: int
    cages: int


def host_limit(host: Host, policy: PlacementPolicy = PlacementPolicy()) -> Limit:
    u = usable_capacity(host)
    return Limit(
        cpus=u.cpus * policy.overcommit_cpus,
        memory=int(u.memory * policy.overcommit_memory),
        disk=int(u.disk * policy.overcommit_disk),
        cages=host.max_cages or policy.max_cages_per_host,
    )
