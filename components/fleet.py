"""Fleet: the whole stack. Placement decides where each cage runs; the Fleet creates one ClawHost per
host (with the stack-wide Hetzner objects they share) and one ClawCage per claw on its host's provider."""

from __future__ import annotations

from typing import Optional

import pulumi
import pulumi_hcloud as hcloud

from components.config import StackConfig
from components.cage import ClawCage, ClawCageArgs
from components.host import ClawHost, ClawHostArgs, HetznerShared
from components.placement import cage_uids, claws_by_host, place_claws

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
SPREAD_GROUP_MAX = 10  # Hetzner's limit of servers in one spread placement group


def private_addresses(config: StackConfig) -> dict[str, str]:
    """A stable private address per cloud host: zone subnet 10.0.<zone>.0/24, hosts from .10 in name order."""
    zones = sorted({NETWORK_ZONES[h.location] for h in config.hosts if h.kind == "cloud"})
    out: dict[str, str] = {}
    per_zone: dict[str, int] = {}
    for host in sorted((h for h in config.hosts if h.kind == "cloud"), key=lambda h: h.name):
        zone = NETWORK_ZONES[host.location]
        index = per_zone.get(zone, 0)
        per_zone[zone] = index + 1
        out[host.name] = f"10.0.{zones.index(zone) + 1}.{10 + index}"
    return out


class Fleet(pulumi.ComponentResource):
    """Every host and every cage of one stack."""

    def __init__(self, name: str, config: StackConfig, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("clawstaff:fleet:Fleet", name, {}, opts)
        self.config = config
        self.placement = place_claws(config.hosts, config.claws, stack_file=config.stack_file)
        cloud_hosts = sorted((h for h in config.hosts if h.kind == "cloud"), key=lambda h: h.name)
        shared_groups = self._hetzner_shared(name, config, len(cloud_hosts)) if cloud_hosts else []
        addresses = private_addresses(config)

        self.hosts: dict[str, ClawHost] = {}
        for host in config.hosts:
            shared = None
            if host.kind == "cloud":
                shared = shared_groups[cloud_hosts.index(host) // SPREAD_GROUP_MAX]
            self.hosts[host.name] = ClawHost(
                host.name,
                ClawHostArgs(
                    host=host,
                    admin=config.admin,
                    sealing_key=config.sealing_key,
                    private_ip=addresses.get(host.name),
                    hetzner=shared,
                ),
                opts=pulumi.ResourceOptions(parent=self),
            )

        self.cages: dict[str, ClawCage] = {}
        for host_name, claw_names in claws_by_host(self.placement).items():
            uids = cage_uids(claw_names)
            for claw_name in claw_names:
                claw = config.claw(claw_name)
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
                    ),
                    opts=pulumi.ResourceOptions(parent=self),
                )
        self.register_outputs({"placement": self.placement})

    def _hetzner_shared(self, name: str, config: StackConfig, cloud_count: int) -> list[HetznerShared]:
        child = pulumi.ResourceOptions(parent=self)
        ssh_keys = [
            hcloud.SshKey(f"{name}-ssh-key-{i}", name=f"clawstaff-{config.stack}-admin-{i}", public_key=key, opts=child)
            for i, key in enumerate(config.admin.ssh_public_keys)
        ]
        network = hcloud.Network(
            f"{name}-network", name=f"clawstaff-{config.stack}", ip_range=PRIVATE_NETWORK, opts=child
        )
        zones = sorted({NETWORK_ZONES[h.location] for h in config.hosts if h.kind == "cloud"})
        subnets = [
            hcloud.NetworkSubnet(
                f"{name}-subnet-{zone}",
                network_id=network.id.apply(int),
                type="cloud",
                network_zone=zone,
                ip_range=f"10.0.{i + 1}.0/24",
                opts=child,
            )
            for i, zone in enumerate(zones)
        ]
        groups = []
        for g in range((cloud_count + SPREAD_GROUP_MAX - 1) // SPREAD_GROUP_MAX):
            group = hcloud.PlacementGroup(
                f"{name}-spread-{g}", name=f"clawstaff-{config.stack}-spread-{g}", type="spread", opts=child
            )
            groups.append(
                HetznerShared(
                    ssh_key_ids=[k.id for k in ssh_keys],
                    placement_group_id=group.id.apply(int),
                    network_id=network.id,
                    subnets=subnets,
                )
            )
        return groups
