"""AuditSink: the stack's audit sink, a host of its own that holds no cages and keeps the cage hosts'
audit trail (issue 15, docs/audit.md "Shipping off the host").

Its machine is components.server's, as a cage host's is: a cloud server (behind a Hetzner firewall that
admits SSH from the admin networks only, on the stack's private network at a fixed address, labelled
clawstaff-role=audit-sink) or a dedicated server adopted by address; the derived host key installed
over the first, pinned connection; the sink's bootstrap (components.sinkconfig) run and run again
whenever it changes. Then its trail certificates (the stack's trail CA, the sink's certificate and
key) are installed over the connection pinned to the derived key, the key on stdin as a secret, and
the trail's units started; that command runs again whenever a certificate changes.

The cage hosts do not upload to it yet (the next step of issue 15): until then each keeps its own trail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_command as command

from components.conventions import SERVER_ROLE_AUDIT_SINK
from components.hostconfig import DEFAULT_HOST_IMAGE
from components.model import Admin, AuditSink as AuditSinkConfig
from components.server import HetznerShared, provision_machine
from components.sinkconfig import (
    render_sink_bootstrap,
    render_sink_certs_install,
    sink_certificates,
    sink_certificates_stdin,
)
from components.trailpki import Validity
from components.trailship import sink_url


@dataclass
class AuditSinkArgs:
    sink: AuditSinkConfig
    stack: str
    admin: Admin
    sealing_key: str
    address: str  # where the cage hosts reach it: a cloud sink's private address, a dedicated sink's own
    validity: Validity  # of its trail certificates (trailpki.yearly_validity)
    # What its firewall admits to the trail's port: the stack's private network (a cloud sink), or the
    # cage hosts' addresses (a dedicated sink; a cloud host's are known once the server exists).
    upload_sources: Sequence[pulumi.Input[str]] = ()
    hetzner: Optional[HetznerShared] = None  # a cloud sink: the stack's Hetzner objects


class AuditSink(pulumi.ComponentResource):
    """The audit sink's server, its trail files and its certificates."""

    address: str  # where the cage hosts reach it (its certificate names it)
    url: str  # what journal-upload will be given
    ready: list[pulumi.Resource]  # the trail's units run once these have

    def __init__(self, name: str, args: AuditSinkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("clawstaff:fleet:AuditSink", name, {}, opts)
        sink, host = args.sink, args.sink.host
        self.address, self.url = args.address, sink_url(args.address)

        def bootstrap_for(sources: Sequence[str]) -> str:
            return render_sink_bootstrap(
                host_name=host.name,
                ssh_authorized_keys=list(args.admin.ssh_public_keys),
                ssh_allowed_cidrs=list(args.admin.ssh_allowed_cidrs),
                address=args.address,
                upload_sources=list(sources),
                retention_days=sink.retention_days,
                max_use=sink.max_use,
                debian=host.image or DEFAULT_HOST_IMAGE,
            )

        bootstrap: pulumi.Input[str]
        if host.kind == "cloud":
            # It admits the private network, known now: its user-data carries the same bootstrap.
            if not all(isinstance(source, str) for source in args.upload_sources):
                raise ValueError(f"audit sink {host.name}: a cloud sink's upload sources must be known now")
            bootstrap = bootstrap_for([str(source) for source in args.upload_sources])
        else:
            # It admits the cage hosts, whose cloud addresses exist once their servers do.
            bootstrap = pulumi.Output.all(*args.upload_sources).apply(bootstrap_for)
        machine = provision_machine(
            self,
            name,
            host=host,
            admin=args.admin,
            sealing_key=args.sealing_key,
            role=SERVER_ROLE_AUDIT_SINK,
            bootstrap=bootstrap,
            private_ip=args.address if host.kind == "cloud" else None,
            hetzner=args.hetzner,
        )
        ca, certificate = sink_certificates(args.sealing_key, args.stack, host.name, args.address, args.validity)
        install = command.remote.Command(
            f"{name}-trail-certificates",
            connection=machine.connection,
            create=render_sink_certs_install(args.address),
            # The key travels only here, as a secret on stdin; a new certificate (its fingerprint) runs
            # the install again. The key is never a trigger.
            stdin=pulumi.Output.secret(sink_certificates_stdin(ca, certificate)),
            triggers=[ca.fingerprint, certificate.fingerprint],
            opts=pulumi.ResourceOptions(parent=self, depends_on=[machine.bootstrap]),
        )
        self.ready = [machine.bootstrap, install]
        self.register_outputs({"address": self.address, "url": self.url, "kind": host.kind})
