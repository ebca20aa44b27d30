"""The checks that span keys, run after each key passed on its own (components.config.schema): unique
names, pools, the audit sink, pins, capacity, secrets that match the claws, a lock that names existing
claws.

Each check raises one ConfigError through the Reporter, naming the key it is about.

Capacity: a claw whose own limits exceed every host it may run on can never be placed, and the check
says so with the user's numbers. It is a necessary condition only: placement (components.placement)
then adds the proxy's share and the host's reserve, and reports a claw that still does not fit. Both
compare a demand with a room through the one function components.model.lacks.
"""

from __future__ import annotations

from typing import Any, Collection, Mapping, Sequence

from components import runtimes
from components.catalog import LOCATIONS, SERVER_TYPES
from components.config.fields import NAMESPACE, SECRET_KEYS
from components.config.report import _MISSING, Loc, Reporter, key_path
from components.config.schema import (
    ALLOWED,
    AUDIT_SINK,
    MIN_SINK_MAX_USE,
    SINK_IMAGE,
    CloudHostModel,
    ClawModel,
    DedicatedHostModel,
    PoolModel,
    StackModel,
    audit_sinks,
    holds_cages,
)
from components.model import (
    HOST_RESERVE,
    POOL_INDEX_WIDTH,
    AuditSink,
    Demand,
    Host,
    lacks,
    pool_host_name,
    pool_index,
    sink_room,
)
from components.units import format_cpus, format_size


def check_unique_host_names_and_addresses(model: StackModel, report: Reporter) -> None:
    seen_names: dict[str, int] = {}
    seen_addresses: dict[str, int] = {}
    for i, host in enumerate(model.hosts):
        if isinstance(host, PoolModel):
            continue
        if host.name in seen_names:
            report.fail(("hosts", i, "name"), f"a duplicate: hosts[{seen_names[host.name]}] has the same name")
        seen_names[host.name] = i
        if isinstance(host, DedicatedHostModel):
            if host.address in seen_addresses:
                report.fail(("hosts", i, "address"), f"a duplicate: hosts[{seen_addresses[host.address]}] has it")
            seen_addresses[host.address] = i
    check_pools(model, seen_names, report)


def check_pools(model: StackModel, explicit_names: Mapping[str, int], report: Reporter) -> None:
    """A pool's name leaves room for its hosts' suffix; its hosts' names collide with no other host;
    each location once; drain names only its own hosts."""
    pools: dict[str, int] = {}
    for i, pool in enumerate(model.hosts):
        if not isinstance(pool, PoolModel):
            continue
        if len(pool.name) > 63 - 1 - POOL_INDEX_WIDTH:
            report.fail(("hosts", i, "name"), f"too long for a pool (its hosts are {pool_host_name(pool.name, 1)}, ...)",
                        ALLOWED["hosts[].name (pool)"])  # fmt: skip
        if pool.name in pools:
            report.fail(("hosts", i, "name"), f"a duplicate: hosts[{pools[pool.name]}] is a pool with the same name")
        pools[pool.name] = i
        for other, j in explicit_names.items():
            index = pool_index(pool.name, other)
            if index is not None:
                report.fail(("hosts", i, "name"),
                            f"its host {other} (up to {pool_host_name(pool.name, pool.max)}) would have the name of hosts[{j}]",
                            "a pool name that no other host's name starts with followed by -<number>")  # fmt: skip
        for j, location in enumerate(pool.locations):
            if location in pool.locations[:j]:
                report.fail(
                    ("hosts", i, "locations", j), f"listed twice (also locations[{pool.locations.index(location)}])"
                )
        for j, name in enumerate(pool.drain):
            index = pool_index(pool.name, name)
            if index is None or index > pool.max:
                report.fail(("hosts", i, "drain", j), "not a host of this pool",
                            f"{pool_host_name(pool.name, 1)} up to {pool_host_name(pool.name, pool.max)}")  # fmt: skip


# (python field name, key) of the keys that belong to one role only.
_SINK_KEYS = (("retention_days", "retentionDays"), ("max_use", "maxUse"))
_CAGE_KEYS = (("drain", "drain"), ("max_cages", "maxCages"))


def check_audit_sink(model: StackModel, report: Reporter) -> None:
    """At most one audit sink, on Debian 13; its keys (retentionDays, maxUse) on it alone, and no cage
    keys (drain, maxCages) on it; some host beside it holds cages. (Only a cloud or dedicated host can be the sink:
    schema.role_of, per kind.)"""
    sinks = list(audit_sinks(model.hosts).items())
    if len(sinks) > 1:
        (first, i), (second, j) = sinks[:2]
        report.fail(("hosts", j, "role"), f"a second audit sink: {second} (hosts[{j}]) and {first} (hosts[{i}])",
                    f"at most one host with role {AUDIT_SINK} per stack")  # fmt: skip
    for i, host in enumerate(model.hosts):
        sink = not holds_cages(host)
        for field_name, key in _CAGE_KEYS if sink else _SINK_KEYS:
            if field_name not in host.model_fields_set:
                continue
            if sink:
                report.fail(("hosts", i, key), f"a key of a host that holds cages, and {host.name} is the audit sink",
                            f"no {key} on the audit sink (it holds no cages)")  # fmt: skip
            else:
                report.fail(("hosts", i, key), f"a key of the audit sink, and {host.name} holds cages (role {host.role})",
                            f"{key} only on the host with role: {AUDIT_SINK}")  # fmt: skip
    for _, i in sinks:
        image = model.hosts[i].image
        if image != SINK_IMAGE:
            report.fail(("hosts", i, "image"), f"{image} cannot be the audit sink: its journal-remote (systemd 252) "
                        "has no MaxUse= to hold the trail to maxUse (systemd 253 and later)",
                        f"{SINK_IMAGE} for the host with role {AUDIT_SINK}")  # fmt: skip
    if sinks and all(not holds_cages(h) for h in model.hosts):
        report.fail(("hosts",), f"only the audit sink ({sinks[0][0]}): no host holds cages",
                    "at least one host with role cages (the default) or a pool, beside the audit sink")  # fmt: skip


def check_audit_sink_room(model: StackModel, sink: AuditSink | None, report: Reporter) -> None:
    """The sink's maxUse fits its disk less the host's reserve (the default is that room, which must
    be at least the smallest maxUse)."""
    if sink is None:
        return
    i, host, room = audit_sinks(model.hosts)[sink.host.name], sink.host, sink_room(sink.host)
    why = f"{format_size(host.capacity.disk)} of disk less {format_size(HOST_RESERVE.disk)} kept for the system"
    if sink.max_use > room:
        report.fail(("hosts", i, "maxUse"), f"more than the audit sink {host.name} can hold ({why})",
                    f"at most {format_size(room)} on this host")  # fmt: skip
    if room < MIN_SINK_MAX_USE:
        report.fail(("hosts", i, "disk" if host.kind == "dedicated" else "serverType"),
                    f"too small for the audit sink: {why} leaves {format_size(room)} for the trail",
                    f"a disk at least {format_size(MIN_SINK_MAX_USE)} larger than the {format_size(HOST_RESERVE.disk)} kept")  # fmt: skip


def check_local_host_stands_alone(model: StackModel, report: Reporter) -> None:
    """A local host is a development machine: one per stack, never beside real servers."""
    local = [i for i, h in enumerate(model.hosts) if h.kind == "local"]
    remote = [i for i, h in enumerate(model.hosts) if h.kind != "local"]
    if len(local) > 1:
        report.fail(("hosts", local[1], "kind"), f"a second local host (hosts[{local[0]}] is local too)",
                    "at most one local host per stack")  # fmt: skip
    if local and remote:
        report.fail(("hosts", local[0], "kind"),
                    f"a local host in a stack with a {model.hosts[remote[0]].kind} host (hosts[{remote[0]}])",
                    "a local host alone, or only cloud and dedicated hosts")  # fmt: skip


def check_server_type_offered_in_location(model: StackModel, report: Reporter) -> None:
    for i, host in enumerate(model.hosts):
        if isinstance(host, PoolModel):
            offered = SERVER_TYPES[host.server_type].locations
            for j, location in enumerate(host.locations):
                if location not in offered:
                    report.fail(("hosts", i, "locations", j), f"Hetzner does not offer {host.server_type} there",
                                f"for {host.server_type}: " + ", ".join(l for l in LOCATIONS if l in offered))  # fmt: skip
        if isinstance(host, CloudHostModel):
            offered = SERVER_TYPES[host.server_type].locations
            if host.location not in offered:
                report.fail(("hosts", i, "location"), f"Hetzner does not offer {host.server_type} there",
                            f"for {host.server_type}: " + ", ".join(l for l in LOCATIONS if l in offered))  # fmt: skip


def check_admin_can_reach_servers(model: StackModel, report: Reporter) -> None:
    """Cloud and dedicated hosts are set up over SSH: they need operators' keys and their networks."""
    remote = next((h for h in model.hosts if h.kind != "local"), None)
    if remote is None:
        return
    if model.admin is None:
        report.fail(("admin",), "missing", f"for {remote.kind} hosts: " + ALLOWED["admin"])
    if not model.admin.ssh_allowed_cidrs:
        report.fail(
            ("admin", "sshAllowedCidrs"),
            "missing or empty",
            f"for {remote.kind} hosts: at least one network, such as [203.0.113.0/24]",
        )
    if not model.admin.ssh_public_keys:
        report.fail(
            ("admin", "sshPublicKeys"), "missing or empty", f"for {remote.kind} hosts: at least one OpenSSH public key"
        )


def check_unique_claw_names(model: StackModel, report: Reporter) -> None:
    seen: dict[str, int] = {}
    for i, claw in enumerate(model.claws):
        if claw.name in seen:
            report.fail(("claws", i, "name"), f"a duplicate: claws[{seen[claw.name]}] has the same name")
        seen[claw.name] = i


def check_no_repeats_in_lists(model: StackModel, report: Reporter) -> None:
    for i, claw in enumerate(model.claws):
        for field_name, items in (("egress", [str(e) for e in claw.egress]), ("secrets", claw.secrets)):
            for j, item in enumerate(items):
                if item in items[:j]:
                    report.fail(("claws", i, field_name, j), f"listed twice (also {field_name}[{items.index(item)}])")


def check_tmpfs_within_memory(model: StackModel, report: Reporter) -> None:
    """tmpfs pages are charged to the container's memory cgroup: a larger tmpfs could never be filled."""
    for i, claw in enumerate(model.claws):
        if claw.tmpfs > claw.memory:
            report.fail(("claws", i, "tmpfs"), f"more than the claw's memory ({format_size(claw.memory)})",
                        f"at most {format_size(claw.memory)} (tmpfs counts against memory)")  # fmt: skip


def check_pins(model: StackModel, report: Reporter) -> None:
    """A claw's host is one that holds cages: a listed host or a pool's, never the audit sink."""
    sinks = audit_sinks(model.hosts)
    names = [h.name for h in model.hosts if not isinstance(h, PoolModel) and h.name not in sinks]
    pools = [h for h in model.hosts if isinstance(h, PoolModel)]
    choices = names + [f"{pool_host_name(p.name, 1)} ... {pool_host_name(p.name, p.max)}" for p in pools]
    for i, claw in enumerate(model.claws):
        if claw.host is None or claw.host in names:
            continue
        if claw.host in sinks:
            report.fail(("claws", i, "host"), f"the audit sink (hosts[{sinks[claw.host]}]), which holds no cages",
                        "a host that holds cages: one of " + ", ".join(choices))  # fmt: skip
        if any((index := pool_index(p.name, claw.host)) is not None and index <= p.max for p in pools):
            continue
        report.fail(("claws", i, "host"), "not a host of this stack", "one of " + ", ".join(choices))


def check_runtimes_have_hosts(model: StackModel, report: Reporter) -> None:
    """A claw's runtime (its own or the stack's) must run on a host it may be placed on: its pinned host,
    else some host of the stack (placement then keeps it to the hosts that can run it)."""

    def host_of(index: int):
        h = model.hosts[index]
        return ("cloud" if h.kind == "pool" else h.kind), getattr(h, "image", None)

    cage_hosts = [j for j, h in enumerate(model.hosts) if holds_cages(h)]  # the sink runs no claw

    for i, claw in enumerate(model.claws):
        runtime = claw.runtime or model.runtime
        key = ("claws", i, "runtime") if claw.runtime else ("runtime",)
        if claw.host is not None:
            j = next((j for j, h in enumerate(model.hosts)
                      if h.name == claw.host or (isinstance(h, PoolModel) and pool_index(h.name, claw.host))), None)  # fmt: skip
            if j is not None and (why := runtimes.why_not(*host_of(j), runtime)):
                report.fail(key, f'claw "{claw.name}" is pinned to {claw.host} (hosts[{j}]), which cannot run it: {why}',
                            f"a runtime its host runs: {', '.join(runtimes.host_runtimes(*host_of(j)))}")  # fmt: skip
            continue
        if not any(runtime in runtimes.host_runtimes(*host_of(j)) for j in cage_hosts):
            why = "; ".join(f"hosts[{j}]: {runtimes.why_not(*host_of(j), runtime)}" for j in cage_hosts)
            report.fail(key, f'claw "{claw.name}" runs under {runtime}, which no host of this stack runs ({why})',
                        "runc, or a Debian 13 cloud, pool or dedicated host for gvisor")  # fmt: skip


def check_claws_fit_a_host(hosts: Sequence[Host], model: StackModel, report: Reporter) -> None:
    """A claw larger than every host it may run on can never be placed; say so before creating anything."""
    for i, claw in enumerate(model.claws):
        eligible = [h for h in hosts if h.name == claw.host or (h.pool and pool_index(h.pool, claw.host or "") is not None)] \
            if claw.host else list(hosts)  # fmt: skip
        which = "its pinned host" if claw.host else "the largest host"
        need = _own_demand(claw)
        for resource, field_name, fmt in (("cpus", "cpus", format_cpus), ("memory", "memory", format_size),
                                          ("disk", "volume", format_size)):  # fmt: skip
            largest = max(eligible, key=lambda h: getattr(h.capacity, resource))
            if resource in lacks(need, largest.capacity):
                want, have = getattr(need, resource), getattr(largest.capacity, resource)
                report.fail(("claws", i, field_name),
                            f'claw "{claw.name}" needs {resource} {fmt(want)} but {which}, {largest.name}, has {fmt(have)}',
                            f"at most {fmt(have)}")  # fmt: skip
        if not any(not _shortfall(claw, h) for h in eligible):
            limits = f"cpus {format_cpus(claw.cpus)}, memory {format_size(claw.memory)}, volume {format_size(claw.volume or 0)}"
            missing = "; ".join(f"{h.name} lacks {_shortfall(claw, h)}" for h in eligible)
            report.fail(("claws", i), f'claw "{claw.name}" fits no single host ({missing})',
                        "limits that one host can hold at once", shown=limits)  # fmt: skip


def _own_demand(claw: ClawModel) -> Demand:
    """The claw's own limits as the user wrote them; on disk, its volume."""
    return Demand(cpus=claw.cpus, memory=claw.memory, disk=claw.volume or 0)


def _shortfall(claw: ClawModel, host: Host) -> str:
    """What the host lacks for the claw, e.g. "cpus (has 8)"; empty when the claw fits."""
    c = host.capacity
    shown = {"cpus": format_cpus(c.cpus), "memory": format_size(c.memory), "disk": format_size(c.disk)}
    return ", ".join(f"{r} (has {shown[r]})" for r in lacks(_own_demand(claw), c))


def check_placement_lock_names_claws(model: StackModel, report: Reporter) -> None:
    """A lock entry for a claw that no longer exists is stale: say so rather than keep it silently. An
    entry whose host is gone is not an error: removing a host is how its cages are moved. An entry on the
    audit sink is: the sink holds no cages, so a host turned into the sink keeps no claw by its lock."""
    claws = {c.name for c in model.claws}
    for claw_name in model.placement_lock:
        if claw_name not in claws:
            report.fail(("placementLock", claw_name), "a stale entry: no claw has this name",
                        "entries for claws in clawstaff:claws only; remove it (the lock is rewritten after each deployment)")  # fmt: skip
    sinks = audit_sinks(model.hosts)
    for claw_name, host in model.placement_lock.items():
        if host in sinks:
            report.fail(("placementLock", claw_name), f"the audit sink (hosts[{sinks[host]}]), which holds no cages",
                        f"a host that holds cages; remove the entry with `pulumi config rm --path 'placementLock.{claw_name}'` "
                        "and placement moves the claw")  # fmt: skip


def check_secrets_are_secret(raw: Mapping[str, Any], secret_keys: Collection[str], report: Reporter) -> None:
    """sealingKey and clawSecrets must be encrypted in the stack file. The runtime only says which
    top-level keys hold secrets; a stack file read by load_stack_file also lists each secure leaf, so
    a plaintext value beside secure ones is caught too."""
    for key in SECRET_KEYS:
        value = raw.get(key, _MISSING)
        if value is _MISSING or value in ({}, ""):
            continue
        full_key = f"{NAMESPACE}:{key}"
        if full_key not in secret_keys:
            report.fail((key,), "stored in plain text; it must be set with `pulumi config set --secret`")
        leaf_keys = {k for k in secret_keys if k.startswith(full_key + ".")}
        if leaf_keys and isinstance(value, Mapping):
            for loc in _leaf_locs(value, (key,)):
                if key_path(loc) not in leaf_keys:
                    report.fail(loc, "stored in plain text; it must be set with `pulumi config set --secret`")


def _leaf_locs(node: Mapping[str, Any], prefix: Loc) -> list[Loc]:
    locs: list[Loc] = []
    for k, v in node.items():
        locs.extend(_leaf_locs(v, (*prefix, k)) if isinstance(v, Mapping) else [(*prefix, k)])
    return locs


def check_claw_secrets_match_claws(model: StackModel, report: Reporter) -> None:
    """Every listed secret has a value; no value lingers for a claw or a name no longer listed."""
    listed = {claw.name: claw.secrets for claw in model.claws}
    for claw in model.claws:
        values = model.claw_secrets.get(claw.name, {})
        for name in claw.secrets:
            if name not in values:
                report.fail(("clawSecrets", claw.name, name), "missing",
                            f"a value set with `pulumi config set --secret --path 'clawSecrets.{claw.name}.{name}' <value>`")  # fmt: skip
    for claw_name, values in model.claw_secrets.items():
        if claw_name not in listed:
            report.fail(("clawSecrets", claw_name), "a stale credential: no claw has this name",
                        f"only claws in clawstaff:claws; remove it with `pulumi config rm --path 'clawSecrets.{claw_name}'`")  # fmt: skip
        for name in values:
            if name not in listed[claw_name]:
                report.fail(("clawSecrets", claw_name, name),
                            f'a stale credential: claw "{claw_name}" does not list {name} in its secrets',
                            "the names in its secrets: " + (", ".join(listed[claw_name]) or "none")
                            + f"; remove it with `pulumi config rm --path 'clawSecrets.{claw_name}.{name}'`")  # fmt: skip


def check_broker_bindings(model: StackModel, report: Reporter) -> None:
    """A brokered secret is one of the claw's secrets, presented one way, to endpoints of its egress,
    each endpoint and header taken by one secret only; and the stack names a broker image."""
    for i, claw in enumerate(model.claws):
        egress = [str(e) for e in claw.egress]
        taken: dict[tuple[str, str], str] = {}
        for name, b in claw.broker.items():
            loc = ("claws", i, "broker", name)
            if name not in claw.secrets:
                report.fail(loc, "not one of this claw's secrets",
                            "a name in its secrets: " + (", ".join(claw.secrets) or "none"))  # fmt: skip
            if (b.header is None) == (b.basic is None):
                report.fail(loc, "both header and basic" if b.header else "neither header nor basic",
                            "exactly one presentation form: header or basic")  # fmt: skip
            header = b.header.partition(":")[0].strip().lower() if b.header else "authorization"
            points = [str(e) for e in b.endpoints]
            for j, point in enumerate(points):
                if point not in egress:
                    report.fail((*loc, "endpoints", j), "not in this claw's egress",
                                "one of its egress entries: " + (", ".join(egress) or "none"))  # fmt: skip
                if point in points[:j]:
                    report.fail((*loc, "endpoints", j), f"listed twice (also endpoints[{points.index(point)}])")
                if (point, header) in taken:
                    report.fail((*loc, "endpoints", j),
                                f"bound twice: {taken[(point, header)]} is presented in the same header on {point}",
                                "one secret per header and endpoint")  # fmt: skip
                taken[(point, header)] = name
    if model.broker_image is None and any(c.broker for c in model.claws):
        report.fail(("brokerImage",), "missing")
