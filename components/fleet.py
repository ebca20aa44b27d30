"""Fleet: the whole stack. Placement decides where each cage runs and which pool hosts exist; the Fleet
creates one ClawHost per host (with the stack-wide Hetzner objects they share), one ClawCage per claw
on its host's provider, and the audit sink when the stack has one (components.sink).

Nothing a host gets depends on which other hosts exist: a pool growing or shrinking never changes the
private address or the spread group of a host that stays, so it never updates or replaces one."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_hcloud as hcloud

from components.cage import ClawCage, ClawCageArgs
from components.host import ClawHost, ClawHostArgs
from components.model import AuditSink as AuditSinkConfig, Host, StackConfig
from components.outputs import audit_sink_notice
from components.placement import Placement, PlacementError, cage_uids, claws_by_host, place_fleet
from components.runtimes import RUNC
from components.server import HetznerShared
from components.sink import AuditSink, AuditSinkArgs
from components.trailpki import yearly_validity

# Hetzner network zones of the locations (a subnet serves one zone).
NETWORK_ZONES = {
    "fsn1": "eu-central",
    "nbg1": "eu-central",
    "hel1": "eu-central",
    "ash": "us-east",
    "hil": "us-west",
    "sin": "ap-southeast",
}
PRIVATE_NETWORK = "10.0.0.0/16"
# Each zone's subnet is fixed by the zone alone (a /18 of the network), never by which zones the stack
# uses, so adding a host in a new zone renumbers nothing.
ZONE_SUBNET_BASE = {"eu-central": 0, "us-east": 64, "us-west": 128, "ap-southeast": 192}  # third octet
SPREAD_GROUP_MAX = 10  # Hetzner's limit of servers in one spread placement group


class FleetPlacementError(PlacementError, pulumi.RunError):
    """A PlacementError as Pulumi reports a user's mistake: one paragraph, no traceback (placement
    itself imports nothing of Pulumi)."""


def _placed(config: StackConfig) -> Placement:
    try:
        return place_fleet(config)
    except PlacementError as error:
        raise FleetPlacementError(str(error)) from None


def _uids(claw_names: Sequence[str]) -> dict[str, tuple[int, int]]:
    try:
        return cage_uids(claw_names)
    except PlacementError as error:
        raise FleetPlacementError(str(error)) from None


def zone_subnet(zone: str) -> str:
    return f"10.0.{ZONE_SUBNET_BASE[zone]}.0/18"


def private_addresses(hosts: Sequence[Host]) -> dict[str, str]:
    """A private address per listed cloud host: 10.0.<zone base + 1>.<10 + n>, n its rank by name among
    the zone's listed cloud hosts. Pool hosts get none here: Hetzner assigns theirs from the zone's
    subnet when it creates the server, so a pool host's address depends on no other host."""
    out: dict[str, str] = {}
    per_zone: dict[str, int] = {}
    for host in sorted((h for h in hosts if h.kind == "cloud" and h.pool is None), key=lambda h: h.name):
        zone = NETWORK_ZONES[host.location]
        index = per_zone.get(zone, 0)
        per_zone[zone] = index + 1
        out[host.name] = f"10.0.{ZONE_SUBNET_BASE[zone] + 1}.{10 + index}"
    return out


def sink_private_address(location: str) -> str:
    """A cloud audit sink's address on the private network: 10.0.<zone base + 2>.10, by its zone alone.
    Listed cage hosts are in 10.0.<zone base + 1>.x (private_addresses), so no cage host is renumbered
    and the sink keeps its address (and its certificate) whatever hosts come and go."""
    return f"10.0.{ZONE_SUBNET_BASE[NETWORK_ZONES[location]] + 2}.10"


def sink_address(sink: AuditSinkConfig) -> str:
    """Where the cage hosts reach the audit sink: a cloud sink's private address, a dedicated sink's own."""
    host = sink.host
    if host.kind == "cloud":
        return sink_private_address(str(host.location))
    if host.kind == "dedicated" and host.address:
        return host.address
    raise ValueError(f"audit sink {host.name}: a {host.kind} host cannot be the audit sink")


def spread_groups(hosts: Sequence[Host]) -> dict[str, str]:
    """Host name -> the key of its spread placement group (at most SPREAD_GROUP_MAX servers each).

    Listed cloud hosts fill groups "0", "1", ... in name order; a pool's host i goes to group
    "<pool>-<(i - 1) // 10>", which depends on i alone, so a pool that grows never regroups a host."""
    out: dict[str, str] = {}
    listed = sorted((h for h in hosts if h.kind == "cloud" and h.pool is None), key=lambda h: h.name)
    for rank, host in enumerate(listed):
        out[host.name] = str(rank // SPREAD_GROUP_MAX)
    for host in hosts:
        if host.pool is not None:
            out[host.name] = f"{host.pool}-{(host.pool_index - 1) // SPREAD_GROUP_MAX}"
    return out


class Fleet(pulumi.ComponentResource):
    """Every host and every cage of one stack."""

    def __init__(
        self,
        name: str,
        config: StackConfig,
        opts: Optional[pulumi.ResourceOptions] = None,
        *,
        now: Optional[datetime] = None,  # what dates the trail certificates (trailpki.yearly_validity)
    ):
        super().__init__("clawstaff:fleet:Fleet", name, {}, opts)
        self.config = config
        placement = _placed(config)
        self.placement = dict(placement.claws)
        # Every listed host, and each pool host that holds a cage (a pool makes no empty host).
        self.host_configs: tuple[Host, ...] = placement.hosts
        groups = spread_groups(placement.hosts)
        sink = config.audit_sink
        servers = [h for h in placement.hosts if h.kind == "cloud"]
        servers += [sink.host] if sink is not None and sink.host.kind == "cloud" else []
        hetzner = self._hetzner_shared(name, config, servers) if servers else None
        shared_groups = self._spread_groups(name, config, groups, hetzner) if hetzner else {}
        addresses = private_addresses(placement.hosts)
        claws = {c.name: c for c in config.claws}
        by_host = claws_by_host(self.placement)

        self.hosts: dict[str, ClawHost] = {}
        for host in placement.hosts:
            shared = shared_groups[groups[host.name]] if host.kind == "cloud" else None
            self.hosts[host.name] = ClawHost(
                host.name,
                ClawHostArgs(
                    host=host,
                    admin=config.admin,
                    sealing_key=config.sealing_key,
                    private_ip=addresses.get(host.name),
                    hetzner=shared,
                    runtimes=tuple(sorted({claws[c].runtime for c in by_host.get(host.name, [])} | {RUNC})),
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.cages: dict[str, ClawCage] = {}
        for host_name, claw_names in by_host.items():
            uids = _uids(claw_names)
            for claw_name in claw_names:
                claw = claws[claw_name]
                claw_uid, proxy_uid = uids[claw_name]
                self.cages[claw_name] = ClawCage(
                    claw_name,
                    ClawCageArgs(
                        claw=claw,
                        host=self.hosts[host_name],
                        host_name=host_name,
                        control_plane=config.control_plane,
                        sealing_key=config.sealing_key,
                        secrets=config.claw_secrets.get(claw_name, {}),
                        claw_uid=claw_uid,
                        proxy_uid=proxy_uid,
                        proxy_image=config.proxy_image,
                        broker_image=config.broker_image,
                    ),
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.audit_sink: Optional[AuditSink] = None
        if sink is not None:
            cloud = sink.host.kind == "cloud"
            # Hetzner's firewalls do not filter the private network and only the stack's servers are on
            # it: a cloud sink admits the network; a dedicated one, each cage host's own addresses.
            sources = [PRIVATE_NETWORK] if cloud else [a for h in self.hosts.values() for a in h.public_addresses]
            self.audit_sink = AuditSink(
                sink.host.name,
                AuditSinkArgs(
                    sink=sink,
                    stack=config.stack,
                    admin=config.admin,
                    sealing_key=config.sealing_key,
                    address=sink_address(sink),
                    validity=yearly_validity(now or datetime.now(timezone.utc)),
                    upload_sources=sources,
                    hetzner=hetzner if cloud else None,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )
            pulumi.log.warn(audit_sink_notice(sink, self.audit_sink.url), resource=self)
        self.register_outputs({"placement": self.placement})

    def _hetzner_shared(self, name: str, config: StackConfig, servers: Sequence[Host]) -> HetznerShared:
        """The SSH keys and the private network (a subnet per zone of `servers`) every cloud server of
        the stack attaches to; in no spread group (`_spread_groups` puts the cage hosts in theirs)."""
        child = pulumi.ResourceOptions(parent=self)
        ssh_keys = [
            hcloud.SshKey(f"{name}-ssh-key-{i}", name=f"clawstaff-{config.stack}-admin-{i}", public_key=key, opts=child)
            for i, key in enumerate(config.admin.ssh_public_keys)
        ]
        network = hcloud.Network(
            f"{name}-network", name=f"clawstaff-{config.stack}", ip_range=PRIVATE_NETWORK, opts=child
        )
        zones = sorted({NETWORK_ZONES[h.location] for h in servers})
        subnets = [
            hcloud.NetworkSubnet(
                f"{name}-subnet-{zone}",
                network_id=network.id.apply(int),
                type="cloud",
                network_zone=zone,
                ip_range=zone_subnet(zone),
                opts=child,
            )
            for zone in zones
        ]
        return HetznerShared(
            ssh_key_ids=[k.id for k in ssh_keys], placement_group_id=None, network_id=network.id, subnets=subnets
        )

    def _spread_groups(
        self, name: str, config: StackConfig, groups: Mapping[str, str], hetzner: HetznerShared
    ) -> dict[str, HetznerShared]:
        child = pulumi.ResourceOptions(parent=self)
        shared: dict[str, HetznerShared] = {}
        for g in sorted(set(groups.values())):
            group = hcloud.PlacementGroup(
                f"{name}-spread-{g}", name=f"clawstaff-{config.stack}-spread-{g}", type="spread", opts=child
            )
            shared[g] = dataclasses.replace(hetzner, placement_group_id=group.id.apply(int))
        return shared
