"""ClawHost: one machine that runs cages, with its hardened Docker engine and a Docker provider for it.

Three kinds (components.model.Host.kind):
- cloud: a Hetzner Cloud server, booted with the rendered cloud-init (a first-contact SSH host key, the
  bootstrap script) and re-bootstrapped over SSH whenever the script changes, so that a change to the
  hardening reaches running hosts without replacing them (user-data changes would replace the server);
- dedicated: an existing Hetzner dedicated server, adopted by address: the derived host key is installed
  over a connection that trusts only the key the operator recorded, then the same bootstrap runs;
- local: the Docker engine on the machine that runs Pulumi; nothing to bootstrap.

The server, its host key and its bootstrap are components.server's (shared with the audit sink). Every
SSH connection pins the expected host key; nothing trusts on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components.conventions import (
    EGRESS_GATEWAY,
    EGRESS_SUBNET,
    LABEL_HOST,
    LABEL_ROLE,
    ROLE_EGRESS_NETWORK,
    SERVER_ROLE_CAGE_HOST,
    egress_bridge_name,
)
from components.hostconfig import DEFAULT_HOST_IMAGE, cgroup_driver, render_bootstrap_script
from components.hostkeys import SshHostKey
from components.model import Admin, Host
from components.runtimes import RUNC
from components.server import HetznerShared, provision_machine

LOCAL_DOCKER_SOCKET = "unix:///var/run/docker.sock"


@dataclass
class ClawHostArgs:
    host: Host
    admin: Admin
    sealing_key: str
    private_ip: Optional[str] = None  # cloud hosts: address on the stack's private network
    hetzner: Optional[HetznerShared] = None
    runtimes: Sequence[str] = (RUNC,)  # of the claws placed on it: gVisor is installed where one needs it


def docker_ssh_opts(host_key: SshHostKey) -> list[str]:
    """ssh(1) options for the Docker provider: accept exactly the derived host key, nothing else.

    `%H` is ssh's own token for the host it connects to, so the options are known before the server
    exists (a preview can check them) and no known_hosts file is trusted or written."""
    return [
        "-o",
        "StrictHostKeyChecking=yes",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        f"KnownHostsCommand=/bin/echo %H {host_key.public_openssh}",
        "-o",
        "BatchMode=yes",
    ]


class ClawHost(pulumi.ComponentResource):
    """A host and the Docker provider through which its cages are created."""

    provider: docker.Provider
    address: pulumi.Output[str]
    connection: Optional[command.remote.ConnectionArgs]  # None: the local host, commands run here
    egress_network: docker.Network
    ready: list[pulumi.Resource]  # what must exist before anything runs on the host (its bootstrap)
    public_addresses: list[pulumi.Output[str]]  # what the host sends from (cloud: its IPv4 and IPv6 /64)
    cgroup_driver: str  # its engine's: the form of each cage's limits (components.cagehost)

    def __init__(self, name: str, args: ClawHostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("clawstaff:fleet:ClawHost", name, {}, opts)
        host = args.host
        self.kind = host.kind
        self.cgroup_driver = cgroup_driver(host.kind)  # what its engine's daemon.json names
        self.connection = None
        self.ready = []
        self.public_addresses = []
        if host.kind == "local":
            self.address = pulumi.Output.from_input("localhost")
            self.provider = docker.Provider(
                f"{name}-docker", host=LOCAL_DOCKER_SOCKET, opts=pulumi.ResourceOptions(parent=self)
            )
        else:
            bootstrap = render_bootstrap_script(
                host_name=host.name,
                ssh_authorized_keys=list(args.admin.ssh_public_keys),
                ssh_allowed_cidrs=list(args.admin.ssh_allowed_cidrs),
                debian=host.image or DEFAULT_HOST_IMAGE,
                runtimes=args.runtimes,
            )
            machine = provision_machine(
                self,
                name,
                host=host,
                admin=args.admin,
                sealing_key=args.sealing_key,
                role=SERVER_ROLE_CAGE_HOST,
                bootstrap=bootstrap,
                private_ip=args.private_ip,
                hetzner=args.hetzner,
            )
            self.address = machine.address
            self.connection = machine.connection
            self.ready = [machine.bootstrap]
            if machine.server is not None:
                self.public_addresses = [machine.server.ipv4_address, machine.server.ipv6_network]
            else:
                self.public_addresses = [machine.address]
            self.provider = docker.Provider(
                f"{name}-docker",
                host=self.address.apply(lambda a: f"ssh://root@{a}:22"),
                ssh_opts=docker_ssh_opts(machine.host_key),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[machine.bootstrap]),
            )
        # The one network the host's proxies share to reach out. ICC off: a proxy cannot talk to
        # another cage's proxy on it. No cage network is ever this one.
        self.egress_network = docker.Network(
            f"{name}-egress",
            name=f"egress-{host.name}",  # unique in the stack: policies match networks by name
            driver="bridge",
            internal=False,
            ipv6=False,
            # Explicit: Docker's default pool hands out /29s (room for 5 proxies).
            ipam_configs=[docker.NetworkIpamConfigArgs(subnet=EGRESS_SUBNET, gateway=EGRESS_GATEWAY)],
            options={
                "com.docker.network.bridge.enable_icc": "false",
                "com.docker.network.bridge.name": egress_bridge_name(host.name),
            },
            labels=[
                docker.NetworkLabelArgs(label=LABEL_ROLE, value=ROLE_EGRESS_NETWORK),
                docker.NetworkLabelArgs(label=LABEL_HOST, value=host.name),
            ],
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )
        self.register_outputs({"address": self.address, "kind": host.kind})
