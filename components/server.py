"""The machine under a host of the stack, the part a cage host (components.host.ClawHost) and the audit
sink (components.sink.AuditSink) share: a Hetzner Cloud server the program creates, or a dedicated
server it adopts by address; the derived SSH host key installed over a connection that trusts only the
key the server has now; and the host's bootstrap, run over a connection pinned to the derived key and
run again whenever the rendered script changes.

- cloud: an hcloud Firewall (SSH from the admin networks only), then the Server behind it, on the
  stack's private network, booted with user-data that holds a first-contact SSH host key and the
  bootstrap (never the derived host key: the metadata service serves user-data for the server's whole
  life). Its first contact pins the first-contact key and installs the derived one. cloud-init runs
  once; later changes arrive through the bootstrap command, never by replacing the server.
- dedicated: the first contact pins the host key the operator recorded, and installs the derived one.

Every SSH connection pins the expected host key; nothing trusts on first use.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_command as command
import pulumi_hcloud as hcloud

from components.conventions import SERVER_LABEL_HOST, SERVER_LABEL_ROLE
from components.hostconfig import BOOTSTRAP_PATH, cloud_init_with_bootstrap, render_host_key_install
from components.hostkeys import SshHostKey, derive_first_contact_key, derive_ssh_host_key
from components.model import Admin, Host


@dataclass
class HetznerShared:
    """Stack-wide Hetzner objects a cloud server attaches to (created once by the Fleet)."""

    ssh_key_ids: Sequence[pulumi.Input[str]]
    placement_group_id: Optional[pulumi.Input[str]]  # a cage host's spread group; None: in none
    network_id: pulumi.Input[str]
    subnets: Sequence[pulumi.Resource] = field(default_factory=list)


def firewall_rules(admin: Admin) -> list[hcloud.FirewallRuleArgs]:
    """Inbound: SSH from the admin networks only. Nothing else: no Docker port on a cage host, no trail
    port on the sink (the cage hosts reach it over the private network, which Hetzner's firewalls do
    not filter, and its host firewall does). Outbound is open."""
    return [
        hcloud.FirewallRuleArgs(
            direction="in",
            protocol="tcp",
            port="22",
            source_ips=list(admin.ssh_allowed_cidrs),
            description="ssh from admin networks",
        )
    ]


@dataclass
class Machine:
    address: pulumi.Output[str]  # where SSH reaches it: the public IPv4 of a cloud server, a dedicated's address
    host_key: SshHostKey  # the derived host key every connection after the first pins
    connection: command.remote.ConnectionArgs
    bootstrap: command.remote.Command  # what must have run before anything else runs on the machine
    server: Optional[hcloud.Server] = None  # a cloud machine's server


def _trigger(script: pulumi.Input[str]) -> pulumi.Output[str]:
    return pulumi.Output.from_input(script).apply(lambda text: hashlib.sha256(text.encode()).hexdigest())


def provision_machine(
    parent: pulumi.Resource,
    name: str,
    *,
    host: Host,
    admin: Admin,
    sealing_key: str,
    role: str,
    bootstrap: pulumi.Input[str],
    private_ip: Optional[str] = None,
    hetzner: Optional[HetznerShared] = None,
) -> Machine:
    """The machine of `host` (cloud or dedicated), its host key installed and `bootstrap` run on it.

    A cloud server's user-data carries the same bootstrap (so it must be known now, a plain string);
    `role` is its clawstaff-role label. The resources are `name`-firewall, -server (cloud), -host-key
    and -bootstrap, children of `parent`."""
    host_key = derive_ssh_host_key(sealing_key, host.name)
    if host.kind == "cloud":
        assert hetzner is not None, "a cloud server needs the stack's Hetzner objects"
        if not isinstance(bootstrap, str):
            raise ValueError(
                f"host {host.name}: a cloud server's bootstrap goes into its user-data, so it is known now"
            )
        server, address, first_contact = _cloud_server(
            parent, name, host, admin, sealing_key, role, bootstrap, private_ip, hetzner, host_key
        )
    elif host.kind == "dedicated":
        server, address = None, pulumi.Output.from_input(host.address)
        first_contact = command.remote.Command(
            f"{name}-host-key",
            # The first connection trusts only the key the operator recorded for the server.
            connection=command.remote.ConnectionArgs(host=host.address, user="root", host_key=host.host_key),
            create=render_host_key_install(host_key),
            stdin=pulumi.Output.secret(host_key.private_openssh),
            triggers=[host_key.fingerprint],
            opts=pulumi.ResourceOptions(parent=parent),
        )
    else:
        raise ValueError(f"host {host.name}: a {host.kind} host has no machine to provision")
    connection = command.remote.ConnectionArgs(host=address, user="root", host_key=host_key.public_openssh)
    # Re-run whenever the rendered hardening changes; the script is idempotent.
    apply_bootstrap = command.remote.Command(
        f"{name}-bootstrap",
        connection=connection,
        create=f"cat > {BOOTSTRAP_PATH}.new && chmod 0700 {BOOTSTRAP_PATH}.new && "
        f"mv {BOOTSTRAP_PATH}.new {BOOTSTRAP_PATH} && {BOOTSTRAP_PATH}",
        stdin=bootstrap,
        triggers=[_trigger(bootstrap)],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[first_contact]),
    )
    return Machine(address=address, host_key=host_key, connection=connection, bootstrap=apply_bootstrap, server=server)


def _cloud_server(
    parent: pulumi.Resource,
    name: str,
    host: Host,
    admin: Admin,
    sealing_key: str,
    role: str,
    bootstrap: str,
    private_ip: Optional[str],
    shared: HetznerShared,
    host_key: SshHostKey,
) -> tuple[hcloud.Server, pulumi.Output[str], command.remote.Command]:
    firewall = hcloud.Firewall(
        f"{name}-firewall",
        name=f"{host.name}-firewall",
        rules=firewall_rules(admin),
        labels={SERVER_LABEL_HOST: host.name},
        opts=pulumi.ResourceOptions(parent=parent),
    )
    # The user-data holds a first-contact key, never the host key: the metadata service serves
    # user-data to anything on the server for its whole life (components.hostkeys).
    first_contact_key = derive_first_contact_key(sealing_key, host.name)
    user_data = cloud_init_with_bootstrap(
        host_name=host.name,
        ssh_authorized_keys=list(admin.ssh_public_keys),
        first_contact_key=first_contact_key,
        script=bootstrap,
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
        networks=[
            hcloud.ServerNetworkArgs(network_id=pulumi.Output.from_input(shared.network_id).apply(int), ip=private_ip)
        ],
        # Holds the first-contact key (useless after the first contact; secret until then).
        user_data=pulumi.Output.secret(user_data),
        labels={SERVER_LABEL_HOST: host.name, SERVER_LABEL_ROLE: role},
        backups=False,
        delete_protection=False,
        opts=pulumi.ResourceOptions(
            parent=parent,
            depends_on=list(shared.subnets),
            # cloud-init runs once, at first boot; later changes arrive through the bootstrap command
            # instead of replacing a server that holds cages or the trail.
            ignore_changes=["userData"],
            additional_secret_outputs=["userData"],
        ),
    )
    # First contact: trust only the key the user-data gave the server; install the derived host key
    # over that connection (after cloud-init's own bootstrap run), which retires the first one.
    install_key = command.remote.Command(
        f"{name}-host-key",
        connection=command.remote.ConnectionArgs(
            host=server.ipv4_address, user="root", host_key=first_contact_key.public_openssh
        ),
        create=render_host_key_install(host_key, after_cloud_init=True),
        stdin=pulumi.Output.secret(host_key.private_openssh),
        triggers=[host_key.fingerprint],
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[server]),
    )
    return server, server.ipv4_address, install_key
