"""The hardening of one host, rendered as text: daemon.json, nftables rules, sysctls, sshd drop-in,
the bootstrap script that applies all of it, and the cloud-init user-data that runs that script.

Cloud and dedicated hosts run the very same bootstrap script: a cloud server gets it through
cloud-init (`render_cloud_init`), a dedicated server over SSH. Everything here is a pure function of
its arguments, so a preview shows exactly what a host will get and tests check it with the real
tools (tests/host: `cloud-init schema`, `nft -c`, a real dockerd, `sshd -t`).

The text itself lives in files: the bootstrap and the host-key install are bash scripts in
components/hostscripts/ (rendered by `hostscripts.render_script`, their inputs in shell-quoted header
variables), and the files they install (the nftables ruleset, units, apt and sshd drop-ins) are in
components/hostscripts/files/ (`hostscripts.host_file`). This module computes what varies.

What every host's bootstrap shares, a cage host's and the audit sink's (components/sinkconfig.py), is
here too: the generic hardening's header (`common_bootstrap_header`, read by
hostscripts/lib/host-common.sh), the kernel hardening (`HARDENING_SYSCTLS`), the firewall's unit, the
user-data that carries a bootstrap (`cloud_init_with_bootstrap`) and files packed into one header
variable (`pack_files`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import yaml

from components.conventions import (
    is_dns_label,
)

# The firewall lives in components/firewall.py; its names stay importable from here.
from components.firewall import (  # noqa: F401
    FORBIDDEN_V4,
    HETZNER_RESOLVERS,
    NFT_TABLE,
    PROXY_MAX_FLOWS,
    render_nftables,
)

# The kernel settings live in components/sysctls.py; their names stay importable from here.
from components.sysctls import HARDENING_SYSCTLS, SYSCTLS, Sysctls, render_sysctls  # noqa: F401

# The daemon's config lives in components/daemon.py; its names stay importable from here.
from components.daemon import (  # noqa: F401
    CAGE_ADDRESS_POOL,
    CAGE_SUBNET_PREFIX,
    DEFAULT_BRIDGE_IP,
    LOCAL_CGROUP_DRIVER,
    LOG_MAX_FILE,
    LOG_MAX_SIZE,
    NOFILE_HARD,
    NOFILE_SOFT,
    PROVISIONED_CGROUP_DRIVER,
    cgroup_driver,
    daemon_config,
    render_daemon_json,
)
from components.hostkeys import SshHostKey
from components.trailship import HostFile
from components.runtimes import GVISOR, GVISOR_HOST_IMAGES, RUNC, RUNSC, RUNSC_PACKAGE, RUNSC_PATH
from components.hostscripts import host_file, render_script

# docker-ce from Docker's Debian repository, pinned for production hosts. 28.5.1 (2025-10-08, checked
# against Docker's release notes) contains the fixes for CVE-2024-29018 (embedded DNS on internal
# networks forwarding through the host, fixed in 26.0.0), CVE-2024-41110 (AuthZ plugin bypass, 27.1.1)
# and CVE-2025-54388 (published ports exposed after a firewalld reload, 28.3.3). 29.x is not used yet:
# it raises the minimum API version to 1.44 and changes the default image store, which the
# provider versions pinned in requirements.txt have not been checked against.
DOCKER_ENGINE_VERSION = "5:28.5.1-1~debian.12~bookworm"
# Docker's release signing key (https://download.docker.com/linux/debian/gpg). The bootstrap refuses
# the download unless it holds exactly this one primary key.
DOCKER_REPO_KEY_FINGERPRINT = "9DC858229FC7DD38854AE2D88D81803C0EBFCD88"
DOCKER_REPO_URL = "https://download.docker.com/linux/debian"
DEBIAN_CODENAME = "bookworm"  # where docker-ce is pinned (DOCKER_ENGINE_VERSION is a bookworm build)


@dataclass(frozen=True)
class HostRelease:
    """What the bootstrap does on one Debian release: its codename and where its engine comes from."""

    codename: str
    engine: str  # "docker.io": Debian's own package; "docker-ce": Docker's repository, pinned
    engine_version: str  # docker.io: the lowest version accepted; docker-ce: the exact pin


# Debian 13's own docker.io (26.1.5 on trixie) has the CVE-2024-29018 fix (26.0.0) and gets Debian's
# security updates with the rest of the system; it is what the VM tier (tools/vm.py) proves. Debian
# 12's docker.io is 20.10, without that fix, so bookworm hosts take the pinned docker-ce instead.
HOST_RELEASES = {
    "debian-13": HostRelease("trixie", "docker.io", "26.1.5"),
    "debian-12": HostRelease(DEBIAN_CODENAME, "docker-ce", DOCKER_ENGINE_VERSION),
}
DEFAULT_HOST_IMAGE = "debian-13"

FIREWALL_PATH = "/etc/clawstaff/firewall.nft"
BOOTSTRAP_PATH = "/usr/local/sbin/clawstaff-bootstrap"
# "00-" so that it is included first: sshd keeps the FIRST value it reads for a keyword, and
# cloud-init writes 50-cloud-init.conf (possibly "PasswordAuthentication yes") into the same directory.
SSHD_DROPIN_PATH = "/etc/ssh/sshd_config.d/00-clawstaff.conf"
SYSCTL_PATH = "/etc/sysctl.d/90-clawstaff.conf"
HOST_KEY_PATH = "/etc/ssh/ssh_host_ed25519_key"

_SSH_PUBLIC_KEY = re.compile(
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com"
    r"|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$"
)


# --------------------------------------------------------------------------------------------------
# sshd (the kernel settings: components/sysctls.py; the host firewall: components/firewall.py)


def render_sshd_config() -> str:
    """sshd_config.d drop-in: public keys only, root only with a key, only the derived host key."""
    return host_file("sshd-00-clawstaff.conf", HOST_KEY_PATH=HOST_KEY_PATH)


# --------------------------------------------------------------------------------------------------
# Bootstrap


def check_host_name(host_name: str) -> str:
    if not isinstance(host_name, str) or not is_dns_label(host_name):
        raise ValueError(f"host name {host_name!r} is not a DNS label (a-z, 0-9, '-', at most 63)")
    return host_name


def check_authorized_keys(keys: Sequence[str]) -> list[str]:
    if not keys:
        raise ValueError("ssh_authorized_keys is empty: nobody could administer the host")
    cleaned = [k.strip() for k in keys]
    for key in cleaned:
        if not _SSH_PUBLIC_KEY.match(key):
            raise ValueError(f"not an OpenSSH public key line: {key[:40]!r}...")
    return cleaned


def file_text(content: str) -> str:
    """A file the bootstrap installs, as its header carries it: always ending with a newline."""
    return content if content.endswith("\n") else content + "\n"


def pack_files(files: Mapping[str, HostFile]) -> str:
    """Files a bootstrap installs, as one header variable that lib/host-common.sh's put_files reads:
    for each file (by path), a line `file MODE LINES PATH`, then its text (ending with a newline
    unless it is empty)."""
    out: list[str] = []
    for path, file in sorted(files.items()):
        if not path.startswith("/") or any(c.isspace() for c in path):
            raise ValueError(f"a host file's path {path!r} must be absolute, without spaces")
        if not 0 <= file.mode <= 0o777:
            raise ValueError(f"{path}: mode {file.mode:o} is not a permission mode (0 to 777, octal)")
        text = file_text(file.text) if file.text else ""
        out.append(f"file {file.mode:04o} {text.count(chr(10))} {path}\n{text}")
    return "".join(out)


def firewall_unit(purpose: str, *, before: Sequence[str] = ()) -> str:
    """The unit that loads the host firewall at boot, before the network (and before the units `before`)."""
    return host_file(
        "clawstaff-firewall.service",
        FIREWALL_PATH=FIREWALL_PATH,
        PURPOSE=purpose,
        BEFORE="".join(f" {unit}" for unit in before),
    )


FIREWALL_UNIT = firewall_unit("cage isolation, admin SSH allowlist", before=["docker.service"])
# Docker refuses to start without the firewall: no window in which cages run unfiltered.
DOCKER_UNIT_DROPIN = host_file("docker-10-clawstaff.conf")
AUTO_UPGRADES = host_file("20auto-upgrades")
# The audit subsystem's settings, without Debian's -D (a reload must keep the cages' rules): the
# bootstrap installs it as /etc/audit/rules.d/audit.rules, tools.engine applies it on this machine.
AUDIT_BASE_RULES = host_file("audit-base.rules")
AUDITD_CONF = host_file("auditd.conf")
# Debian's 50unattended-upgrades already selects Debian-Security. Docker's repository is added so
# that containerd.io (which ships runc) gets its security fixes; docker-ce and docker-ce-cli are held
# at DOCKER_ENGINE_VERSION, and unattended-upgrades never touches held packages.
UNATTENDED_UPGRADES = host_file("52clawstaff-unattended-upgrades")


def render_bootstrap_script(
    *,
    host_name: str,
    ssh_authorized_keys: Sequence[str],
    ssh_allowed_cidrs: Sequence[str],
    debian: str = DEFAULT_HOST_IMAGE,
    runtimes: Sequence[str] = (RUNC,),
) -> str:
    """Idempotent bash that brings a Debian 13 (or 12) host to the hardened state; re-running it repairs drift.

    Runs the same on a fresh cloud server (from cloud-init) and on an adopted dedicated server (over
    SSH). Files are only rewritten, and services only restarted, when their content changes. It
    expects the derived host key in place: cloud-init's `ssh_keys` writes it on a cloud server, and
    `render_host_key_install` on a dedicated one, which must therefore run first. The steps are
    components/hostscripts/bootstrap.sh; every file it installs is rendered here and arrives in a
    (readonly, shell-quoted) header variable.
    """
    host_name = check_host_name(host_name)
    if debian not in HOST_RELEASES:
        raise ValueError(f"host image {debian!r} is not one of {', '.join(HOST_RELEASES)}")
    release = HOST_RELEASES[debian]
    gvisor = GVISOR in runtimes
    if gvisor and debian not in GVISOR_HOST_IMAGES:
        raise ValueError(f"gVisor runs on {', '.join(GVISOR_HOST_IMAGES)} hosts only, not {debian}")
    firewall = render_nftables(ssh_allowed_cidrs=ssh_allowed_cidrs, dns_resolvers=HETZNER_RESOLVERS)
    return render_script(
        "bootstrap.sh",
        title=f"bootstrap for host {host_name}",
        facts={"host": host_name},
        readonly=True,
        **common_bootstrap_header(
            host_name=host_name,
            ssh_authorized_keys=ssh_authorized_keys,
            codename=release.codename,
            sysctls=SYSCTLS,
            firewall=firewall,
            firewall_unit=FIREWALL_UNIT,
        ),
        ENGINE=release.engine,
        DOCKER_VERSION=release.engine_version,
        DOCKER_KEY_FINGERPRINT=DOCKER_REPO_KEY_FINGERPRINT,
        DOCKER_REPO_URL=DOCKER_REPO_URL,
        AUDIT_RULES=file_text(AUDIT_BASE_RULES),
        AUDITD_CONF=file_text(AUDITD_CONF),
        DOCKER_UNIT_DROPIN=file_text(DOCKER_UNIT_DROPIN),
        RUNSC_PACKAGE=RUNSC_PACKAGE if gvisor else "",
        RUNSC_PATH=RUNSC_PATH,
        RUNSC_RUNTIME=RUNSC,
        DAEMON_JSON=file_text(render_daemon_json(runtimes=runtimes)),
    )


def common_bootstrap_header(
    *,
    host_name: str,
    ssh_authorized_keys: Sequence[str],
    codename: str,
    sysctls: Sysctls,
    firewall: str,
    firewall_unit: str,
) -> dict[str, str]:
    """The header variables components/hostscripts/lib/host-common.sh reads, which every bootstrap
    (a cage host's, the audit sink's) carries: the host's name and release, the admin keys, its
    sysctls, the sshd drop-in, the automatic security updates, its firewall and the unit that loads it."""
    return {
        "HOST_NAME": check_host_name(host_name),
        "DEBIAN_CODENAME": codename,
        "NFT_TABLE": NFT_TABLE,
        "FIREWALL_PATH": FIREWALL_PATH,
        "SYSCTL_PATH": SYSCTL_PATH,
        "SSHD_DROPIN_PATH": SSHD_DROPIN_PATH,
        "HOST_KEY_PATH": HOST_KEY_PATH,
        "AUTHORIZED_KEYS": file_text("\n".join(check_authorized_keys(ssh_authorized_keys))),
        "SYSCTL_CONF": file_text(render_sysctls(sysctls)),
        "SSHD_CONFIG": file_text(render_sshd_config()),
        "AUTO_UPGRADES": file_text(AUTO_UPGRADES),
        "UNATTENDED_UPGRADES": file_text(UNATTENDED_UPGRADES),
        "FIREWALL_RULES": file_text(firewall),
        "FIREWALL_UNIT": file_text(firewall_unit),
    }


def render_host_key_install(key: SshHostKey, *, after_cloud_init: bool = False) -> str:
    """Bash that installs the derived host key read from STDIN (never inlined) and reloads sshd.

    Run over the first SSH connection, which pins the server's current key: the operator-recorded
    key of a dedicated server, the first-contact key of a cloud server (`after_cloud_init`: first
    wait for cloud-init, whose bootstrap run must not race the one that follows). The script
    (components/hostscripts/host-key-install.sh) refuses a private key whose public half is not the
    one Pulumi pins.
    """
    return render_script(
        "host-key-install.sh",
        title=f"host key install ({key.fingerprint})",
        AFTER_CLOUD_INIT=1 if after_cloud_init else 0,
        HOST_KEY_PATH=HOST_KEY_PATH,
        PUBLIC_KEY=" ".join(key.public_openssh.split()[:2]),
        PUBLIC_KEY_LINE=key.public_openssh,
        FINGERPRINT=key.fingerprint,
    )


class _LiteralDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so the user-data stays readable in a diff."""


def _str_representer(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_LiteralDumper.add_representer(str, _str_representer)


def render_cloud_init(
    *,
    host_name: str,
    ssh_authorized_keys: Sequence[str],
    ssh_allowed_cidrs: Sequence[str],
    first_contact_key: SshHostKey,
    debian: str = DEFAULT_HOST_IMAGE,
    runtimes: Sequence[str] = (RUNC,),
) -> str:
    """#cloud-config user-data of a cage host: a first-contact host key, then the same bootstrap a
    dedicated host runs (`cloud_init_with_bootstrap`)."""
    script = render_bootstrap_script(
        host_name=host_name,
        ssh_authorized_keys=ssh_authorized_keys,
        ssh_allowed_cidrs=ssh_allowed_cidrs,
        debian=debian,
        runtimes=runtimes,
    )
    return cloud_init_with_bootstrap(
        host_name=host_name, ssh_authorized_keys=ssh_authorized_keys, first_contact_key=first_contact_key, script=script
    )


def cloud_init_with_bootstrap(
    *, host_name: str, ssh_authorized_keys: Sequence[str], first_contact_key: SshHostKey, script: str
) -> str:
    """#cloud-config user-data: a first-contact host key, then `script` (a rendered bootstrap, the
    one the host's bootstrap command runs again over SSH).

    No long-lived secret: Hetzner's metadata service serves this document to any process on the
    server, for the server's whole life. The key in it is the first-contact key
    (hostkeys.derive_first_contact_key), which the first SSH connection pins and replaces with the
    derived host key (render_host_key_install); after that no client trusts it. The host firewall
    keeps everything but root's own processes away from the metadata address.
    """
    document = {
        "hostname": check_host_name(host_name),
        "preserve_hostname": False,
        "disable_root": False,
        "ssh_pwauth": False,
        "ssh_authorized_keys": check_authorized_keys(ssh_authorized_keys),
        # Delete the image's keys; with ssh_keys given, cloud-init generates none, so the first-contact
        # key is the only one and no client ever has to trust a key on first use.
        "ssh_deletekeys": True,
        "ssh_keys": {
            "ed25519_private": first_contact_key.private_openssh,
            "ed25519_public": first_contact_key.public_openssh,
        },
        "write_files": [{"path": BOOTSTRAP_PATH, "owner": "root:root", "permissions": "0700", "content": script}],
        "runcmd": [[BOOTSTRAP_PATH]],
    }
    body = yaml.dump(document, Dumper=_LiteralDumper, sort_keys=False, width=1000, allow_unicode=False)
    return "#cloud-config\n" + body
