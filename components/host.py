"""ClawHost: one machine that runs cages, with its hardened Docker engine and a Docker provider for it.

Three kinds (components.model.Host.kind):
- cloud: a Hetzner Cloud server, booted with the rendered cloud-init (derived SSH host key, the
  bootstrap script) and re-bootstrapped over SSH whenever the script changes, so that a change to the
  hardening reaches running hosts without replacing them (user-data changes would replace the server);
- dedicated: an existing Hetzner dedicated server, adopted by address: the derived host key is installed
  over a connection that trusts only the key the operator recorded, then the same bootstrap runs;
- local: the Docker engine on the machine that runs Pulumi; nothing to bootstrap.

Every SSH connection pins the expected host key; nothing trusts on first use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_command as command
import pulumi_docker as docker
import pulumi_hcloud as hcloud

from components.conventions import (
    EGRESS_GATEWAY,
    EGRESS_SUBNET,
    LABEL_HOST,
    LABEL_ROLE,
    ROLE_EGRESS_NETWORK,
    egress_bridge_name,
)
from components.hostconfig import (
    BOOTSTRAP_PATH,
    DEFAULT_HOST_IMAGE,
    cgroup_driver,
    render_bootstrap_script,
    render_cloud_init,
    render_host_key_install,
)
from components.hostkeys import SshHostKey, derive_first_contact_key, derive_ssh_host_key
from components.model import Admin, Host
from components.runtimes import RUNC

LOCAL_DOCKER_SOCKET = "unix:///var/run/docker.sock"


@dataclass
class HetznerShared:
    """Stack-wide Hetzner objects a cloud host attaches to (created once by the Fleet)."""

    ssh_key_ids: Sequence[pulumi.Input[str]]
    placement_group_id: pulumi.Input[str]
    network_id: pulumi.Input[str]
    subnets: Sequence[pulumi.Resource] = field(default_factory=list)


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


def firewall_rules(admin: Admin) -> list[hcloud.FirewallRuleArgs]:
    """Inbound: SSH from the admin networks only. No Docker port, nothing else (outbound is open:
    cages reach the world only through their proxies, which the host's own rules constrain)."""
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port="22",
            source_ips=list(admin.ssh_allowed_cidrs),
            description="ssh from admin networks",
        )
    ]


class ClawHost(pulumi.ComponentResource):
    """A host and the Docker provider through which its cages are created."""

    provider: docker.Provider
    address: pulumi.Output[str]
    connection: Optional[command.remote.ConnectionArgs]  # None: the local host, commands run here
    egress_network: docker.Network
    ready: list[pulumi.Resource]  # what must exist before anything runs on the host (its bootstrap)
    cgroup_driver: str  # its engine's: the form of each cage's limits (components.cagehost)

    def __init__(self, name: str, args: ClawHostArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("clawstaff:fleet:ClawHost", name, {}, opts)
        host = args.host
        self.kind = host.kind
        self.cgroup_driver = cgroup_driver(host.kind)  # what its engine's daemon.json names
        self.connection = None
        self.ready = []
        if host.kind == "local":
            self.address = pulumi.Output.from_input("localhost")
            self.provider = docker.Provider(
                f"{name}-docker", host=LOCAL_DOCKER_SOCKET, opts=pulumi.ResourceOptions(parent=self)
            )
        else:
            host_key = derive_ssh_host_key(args.sealing_key, host.name)
            bootstrap = render_bootstrap_script(
                host_name=host.name,
                ssh_authorized_keys=list(args.admin.ssh_public_keys),
                ssh_allowed_cidrs=list(args.admin.ssh_allowed_cidrs),
                debian=host.image or DEFAULT_HOST_IMAGE,
                runtimes=args.runtimes,
            )
            if host.kind == "cloud":
                first_contact = self._cloud_server(name, args, host_key)
            else:
                first_contact = self._adopt_dedicated(name, args, host_key)
            connection = command.remote.ConnectionArgs(host=self.address, user="root", host_key=host_key.public_openssh)
            # Re-run whenever the rendered hardening changes; the script is idempotent.
            apply_bootstrap = command.remote.Command(
                f"{name}-bootstrap",
                connection=connection,
                create=f"cat > {BOOTSTRAP_PATH}.new && chmod 0700 {BOOTSTRAP_PATH}.new && "
                f"mv {BOOTSTRAP_PATH}.new {BOOTSTRAP_PATH} && {BOOTSTRAP_PATH}",
                stdin=bootstrap,
                triggers=[hashlib.sha256(bootstrap.encode()).hexdigest()],
                opts=pulumi.ResourceOptions(parent=self, depends_on=first_contact),
            )
            self.connection = connection
            self.ready = [apply_bootstrap]
            self.provider = docker.Provider(
                f"{name}-docker",
                host=self.address.apply(lambda a: f"ssh://root@{a}:22"),
                ssh_opts=docker_ssh_opts(host_key),
                opts=pulumi.ResourceOptions(parent=self, depends_on=[apply_bootstrap]),
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

    def _cloud_server(self, name: str, args: ClawHostArgs, host_key: SshHostKey) -> list[pulumi.Resource]:
        host, admin, shared = args.host, args.admin, args.hetzner
        assert shared is not None, "cloud hosts need the stack's Hetzner objects"
        child = pulumi.ResourceOptions(parent=self)
        firewall = hcloud.Firewall(
            f"{name}-firewall",
            name=f"{host.name}-firewall",
            rules=firewall_rules(admin),
            labels={"clawstaff-host": host.name},
            opts=child,
        )
        # The user-data holds a first-contact key, never the host key: the metadata service serves
        # user-data to anything on the server for its whole life (components.hostkeys).
        first_contact_key = derive_first_contact_key(args.sealing_key, host.name)
        user_data = render_cloud_init(
            host_name=host.name,
            ssh_authorized_keys=list(admin.ssh_public_keys),
            ssh_allowed_cidrs=list(admin.ssh_allowed_cidrs),
            first_contact_key=first_contact_key,
            debian=host.image or DEFAULT_HOST_IMAGE,
            runtimes=args.runtimes,
        )
        server = hcloud.Server(
            f"{name}-server",
            name=host.name,
            server_type=host.server_type,
            location=host.location,
            image=host.image,
            ssh_keys=list(shared.ssh_key_ids),
            placement_group_id=shared.placement_group_id,
            firewall_ids=[firewall.id.apply(int)],
            public_nets=[hcloud.ServerPublicNetArgs(ipv4_enabled=True, ipv6_enabled=True)],
            networks=[hcloud.ServerNetworkArgs(network_id=shared.network_id.apply(int), ip=args.private_ip)],
            # Holds the first-contact key (useless after the first contact; secret until then).
            user_data=pulumi.Output.secret(user_data),
            labels={"clawstaff-host": host.name, "clawstaff-role": "cage-host"},
            backups=False,
            delete_protection=False,
            opts=pulumi.ResourceOptions(
                parent=self,
                depends_on=list(shared.subnets),
                # cloud-init runs once, at first boot; later changes arrive through the bootstrap command
                # instead of replacing a server that runs cages.
                ignore_changes=["userData"],
                additional_secret_outputs=["userData"],
            ),
        )
        self.address = server.ipv4_address
        # First contact: trust only the key the user-data gave the server; install the derived host
        # key over that connection (after cloud-init's own bootstrap run), which retires the first one.
        install_key = command.remote.Command(
            f"{name}-host-key",
            connection=command.remote.ConnectionArgs(
                host=server.ipv4_address, user="root", host_key=first_contact_key.public_openssh
            ),
            create=render_host_key_install(host_key, after_cloud_init=True),
            stdin=pulumi.Output.secret(host_key.private_openssh),
            triggers=[host_key.fingerprint],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[server]),
        )
        return [install_key]

    def _adopt_dedicated(self, name: str, args: ClawHostArgs, host_key: SshHostKey) -> list[pulumi.Resource]:
        host = args.host
        self.address = pulumi.Output.from_input(host.address)
        install_key = command.remote.Command(
            f"{name}-host-key",
            # The first connection trusts only the key the operator recorded for the server.
            connection=command.remote.ConnectionArgs(host=host.address, user="root", host_key=host.host_key),
            create=render_host_key_install(host_key),
            stdin=pulumi.Output.secret(host_key.private_openssh),
            triggers=[host_key.fingerprint],
            opts=pulumi.ResourceOptions(parent=self),
        )
        return [install_key]
