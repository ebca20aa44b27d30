"""The audit sink's host, rendered as text: its bootstrap (which a cloud sink's user-data carries, as
hostconfig.cloud_init_with_bootstrap writes it), its certificates and the script that installs them (issue 15, docs/audit.md "Shipping off the host").

The sink runs no cages and no Docker. Its bootstrap (components/hostscripts/sink-bootstrap.sh) shares
the generic hardening of a cage host's (lib/host-common.sh, its header from
hostconfig.common_bootstrap_header: hostname, admin keys, sysctls, sshd, automatic security updates, a
host firewall whose input policy is drop), then installs Debian's stunnel4 and systemd-journal-remote
with every file trailship.sink_files renders. Its firewall (firewall.render_sink_nftables) admits SSH
from the admin networks and the trail's port from the cage hosts alone. The certificates
(trailpki) arrive apart, over the pinned SSH connection (sink-certs-install.sh, the key on stdin). Pure
functions of their arguments, like components.hostconfig.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from components.conventions import SERVER_ROLE_AUDIT_SINK
from components.firewall import render_sink_nftables
from components.hostconfig import (
    DEFAULT_HOST_IMAGE,
    HOST_RELEASES,
    check_host_name,
    common_bootstrap_header,
    firewall_unit,
    pack_files,
)
from components.hostscripts import render_script
from components.sysctls import HARDENING_SYSCTLS, Sysctls
from components.trailpki import Issued, Validity, certificate_authority, sink_certificate
from components.trailship import (
    JOURNAL_REMOTE,
    REMOTE_PORT,
    SINK_UNITS,
    TRAIL_DIR,
    UPLOAD_PORT,
    sink_files,
    tunnel_listen,
)

# journal-remote's MaxUse= is systemd 253's: Debian 13 (the config refuses any other image for the sink).
SINK_IMAGES = ("debian-13",)
SINK_SYSCTLS: Sysctls = (("net.ipv4.ip_forward", "0", "the sink routes nothing"), *HARDENING_SYSCTLS)
SINK_PACKAGES = ("ca-certificates", "nftables", "unattended-upgrades", "stunnel4", "systemd-journal-remote")
SINK_FIREWALL_UNIT = firewall_unit("audit sink: admin SSH, the cage hosts' trail uploads")


def _check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ValueError(f"the sink's address {address!r} is not an IP address") from None


def render_sink_bootstrap(
    *,
    host_name: str,
    ssh_authorized_keys: Sequence[str],
    ssh_allowed_cidrs: Sequence[str],
    address: str,
    upload_sources: Sequence[str],
    retention_days: int,
    max_use: int,
    debian: str = DEFAULT_HOST_IMAGE,
) -> str:
    """Idempotent bash that brings a Debian 13 host to the audit sink's state; re-running it repairs drift.

    `address` is where the cage hosts reach the sink (stunnel listens there, on UPLOAD_PORT);
    `upload_sources` the addresses or networks its firewall admits to that port. Every file arrives in
    a (readonly, shell-quoted) header variable, the trail's files all in SINK_FILES (hostconfig.pack_files).
    """
    host_name = check_host_name(host_name)
    if debian not in SINK_IMAGES:
        raise ValueError(f"the audit sink's image {debian!r} is not one of {', '.join(SINK_IMAGES)}")
    files = sink_files(listen=tunnel_listen(_check_address(address)), retention_days=retention_days, max_use=max_use)
    firewall = render_sink_nftables(
        ssh_allowed_cidrs=ssh_allowed_cidrs, upload_sources=upload_sources, upload_port=UPLOAD_PORT
    )
    # Our unit files (not the drop-ins, which systemd-analyze reads with the units they extend).
    units = sorted(p for p in files if p.startswith("/etc/systemd/system/") and p.count("/") == 4)
    return render_script(
        "sink-bootstrap.sh",
        title=f"bootstrap for audit sink {host_name}",
        facts={"host": host_name, "role": SERVER_ROLE_AUDIT_SINK},
        readonly=True,
        **common_bootstrap_header(
            host_name=host_name,
            ssh_authorized_keys=ssh_authorized_keys,
            codename=HOST_RELEASES[debian].codename,
            sysctls=SINK_SYSCTLS,
            firewall=firewall,
            firewall_unit=SINK_FIREWALL_UNIT,
        ),
        PACKAGES=" ".join(SINK_PACKAGES),
        JOURNAL_REMOTE=JOURNAL_REMOTE,
        TRAIL_DIR=TRAIL_DIR,
        SINK_UNITS=" ".join(SINK_UNITS),
        UPLOAD_PORT=UPLOAD_PORT,
        REMOTE_PORT=REMOTE_PORT,
        VERIFY_UNITS=" ".join(units),
        SINK_FILES=pack_files(files),
    )


def sink_certificates(secret: str, stack: str, sink: str, address: str, validity: Validity) -> tuple[Issued, Issued]:
    """The stack's trail CA and the sink's server certificate, naming the one address the cage hosts
    reach the sink at."""
    ca = certificate_authority(secret, stack, validity)
    return ca, sink_certificate(secret, ca, sink, [_check_address(address)], validity)


def sink_certificates_stdin(ca: Issued, sink: Issued) -> str:
    """What the certificate install reads on stdin: the CA, the sink's certificate, its key (a secret)."""
    return ca.certificate_pem + sink.certificate_pem + sink.key_pem


def render_sink_certs_install(address: str) -> str:
    """Bash that installs the CA, the sink's certificate and key read from STDIN (never inlined) into
    TRAIL_DIR and (re)starts the trail's units; it refuses a certificate the CA did not sign for a TLS
    server at `address`, and a key that is not the certificate's
    (components/hostscripts/sink-certs-install.sh)."""
    return render_script(
        "sink-certs-install.sh",
        title=f"trail certificates of the audit sink at {_check_address(address)}",
        facts={"role": SERVER_ROLE_AUDIT_SINK},
        TRAIL_DIR=TRAIL_DIR,
        ADDRESS=_check_address(address),
        SINK_UNITS=" ".join(SINK_UNITS),
        UPLOAD_PORT=UPLOAD_PORT,
        REMOTE_PORT=REMOTE_PORT,
    )
