"""How a host's journal reaches the stack's audit sink, and how the sink keeps it: the transport's
configuration, the sink's retention by size and by age, and every file of the trail on the sink
(issue 15, docs/audit.md, "Shipping off the host").

Debian builds systemd without GnuTLS, and systemd-journal-remote verifies a client's certificate only
through GnuTLS: Debian's journal-remote serves HTTPS but refuses `--trust=` ("Option --trust= is not
available", systemd 252 in Debian 12 and 257 in Debian 13). On its own it cannot authenticate the
hosts that upload to it. So the sink ends the mutual TLS in stunnel (Debian's stunnel4, OpenSSL):

    cage host: systemd-journal-upload --(TLS 1.3, client cert)--> sink: stunnel --(loopback HTTP)--> systemd-journal-remote

- stunnel requires a client certificate whose chain ends at the stack's trail CA and no other (its
  CAfile holds that CA alone; `verifyChain`), and accepts TLS 1.3 only;
- journal-upload presents the host's certificate and checks the sink's against the same CA alone
  (its TrustedCertificateFile), so a host uploads to the sink and to nothing that poses as it;
- journal-remote listens on loopback only, where nothing but stunnel reaches it.

The certificates are components.trailpki's.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from components.hostscripts import host_file
from components.units import GiB, MiB

UPLOAD_PORT = 19532  # journal-upload's default port: the sink's TLS endpoint (stunnel)
REMOTE_PORT = 19531  # journal-remote's HTTP endpoint, on the sink's loopback only
TUNNEL_SERVICE = "clawstaff-trail"


def _no_newline(**values: str) -> None:
    for key, value in values.items():
        if not value or any(c in value for c in "\r\n"):
            raise ValueError(f"trail transport: {key} {value!r} must be one non-empty line")


def upload_config(url: str, *, key: str, certificate: str, trust: str) -> str:
    """journal-upload.conf (a drop-in): where the host's journal goes and with which credentials."""
    _no_newline(url=url, key=key, certificate=certificate, trust=trust)
    if not url.startswith("https://"):
        raise ValueError(f"trail transport: the sink's URL {url!r} must be https:// (mutual TLS)")
    return (
        "# Rendered by components/trailship.py: the host's journal goes to the stack's audit sink.\n"
        "[Upload]\n"
        f"URL={url}\n"
        f"ServerKeyFile={key}\n"
        f"ServerCertificateFile={certificate}\n"
        f"TrustedCertificateFile={trust}\n"
    )


def tunnel_config(listen: str, *, key: str, certificate: str, trust: str, forward: int = REMOTE_PORT) -> str:
    """The sink's stunnel configuration: mutual TLS on `listen`, the stream to journal-remote on
    loopback. It runs in the foreground, for its own service unit (no pid file, no fork)."""
    _no_newline(listen=listen, key=key, certificate=certificate, trust=trust)
    return (
        "; Rendered by components/trailship.py: the audit sink's mutual TLS in front of journal-remote.\n"
        "foreground = yes\n"
        "pid =\n"
        f"[{TUNNEL_SERVICE}]\n"
        f"accept = {listen}\n"
        f"connect = 127.0.0.1:{forward}\n"
        f"cert = {certificate}\n"
        f"key = {key}\n"
        f"CAfile = {trust}\n"
        "verifyChain = yes\n"
        "requireCert = yes\n"
        "sslVersionMin = TLSv1.3\n"
    )


# --- the sink's retention: by size in journal-remote, by age in a timer ---------------------------------

REMOTE_DIRECTORY = "/var/log/journal/remote"  # journal-remote's output directory (Debian's unit's default)
VACUUM_UNIT = "clawstaff-trail-vacuum"
# A trail file's size: a 64th of maxUse, between 8 MiB and 1 GiB. The age retention removes archived
# files only, each once its newest entry is past retentionDays (VACUUM_SCRIPT), so an entry may outlive
# the retention by its file's span: the smaller the files, the closer the kept trail is to retentionDays.
FILES_PER_MAX_USE = 64
MIN_FILE_SIZE, MAX_FILE_SIZE = 8 * MiB, 1 * GiB


def trail_file_size(max_use: int) -> int:
    return max(MIN_FILE_SIZE, min(MAX_FILE_SIZE, max_use // FILES_PER_MAX_USE))


def remote_config(max_use: int) -> str:
    """journal-remote.conf (a drop-in) on the sink: the trail held to `max_use` bytes, the oldest
    archived files dropped first (systemd 253 and later: Debian 13's journal-remote)."""
    if max_use < MIN_FILE_SIZE * 2:
        raise ValueError(f"trail retention: maxUse {max_use} B is less than two trail files of {MIN_FILE_SIZE} B")
    size = trail_file_size(max_use)
    return (
        "# Rendered by components/trailship.py: the audit sink keeps the trail to maxUse.\n"
        "[Remote]\n"
        f"MaxUse={max_use}\n"
        f"MaxFileSize={size}\n"
        # Every file maxUse holds, and the one being written: MaxUse decides, not journald's default of 100.
        f"MaxFiles={-(-max_use // size) + 1}\n"
    )


VACUUM_SCRIPT = "/usr/local/sbin/clawstaff-trail-vacuum"  # components/hostscripts/files/clawstaff-trail-vacuum


def vacuum_units(retention_days: int, directory: str = REMOTE_DIRECTORY) -> dict[str, str]:
    """The sink's retention by age: a daily timer and the service it starts, which removes each
    archived trail file whose newest entry is older than `retention_days` (unit file name -> text).
    Not `journalctl --vacuum-time`, which judges a file by its oldest entry and so would drop entries
    younger than the retention (the script's header; tests/host/test_trail_transport.py)."""
    if not isinstance(retention_days, int) or isinstance(retention_days, bool) or not 1 <= retention_days <= 99999:
        raise ValueError(
            f"trail retention: retentionDays {retention_days!r} must be a whole number of days, 1 to 99999"
        )
    _no_newline(directory=directory)
    if not directory.startswith("/") or any(c.isspace() for c in directory):
        raise ValueError(f"trail retention: the directory {directory!r} must be an absolute path without spaces")
    service = (
        "# Rendered by components/trailship.py: the audit sink's retention by age.\n"
        "[Unit]\n"
        f"Description=ClawStaff audit sink: remove trail files whose newest entry is over {retention_days} days old\n"
        "[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={VACUUM_SCRIPT} {directory} {retention_days}\n"
    )
    timer = (
        "# Rendered by components/trailship.py: the audit sink's retention by age, once a day.\n"
        "[Unit]\n"
        f"Description=ClawStaff audit sink: the daily retention of {retention_days} days\n"
        "[Timer]\n"
        "OnCalendar=daily\n"
        "Persistent=true\n"
        "[Install]\n"
        "WantedBy=timers.target\n"
    )
    return {f"{VACUUM_UNIT}.service": service, f"{VACUUM_UNIT}.timer": timer}


# --- the sink's files: everything a sink host holds for the trail, by path --------------------------------

JOURNAL_REMOTE = "/usr/lib/systemd/systemd-journal-remote"
TRAIL_DIR = "/etc/clawstaff/trail"  # the CA, the sink's certificate and key (delivered over SSH)


@dataclass(frozen=True)
class HostFile:
    mode: int
    text: str


def remote_units(directory: str = REMOTE_DIRECTORY, port: int = REMOTE_PORT) -> dict[str, str]:
    """Drop-ins for Debian's journal-remote units: its socket on the sink's loopback only (stunnel is
    the one way in), plain HTTP there (the TLS is stunnel's), its files in `directory`. Debian's unit
    keeps its own hardening, PrivateNetwork= included: the socket arrives from systemd."""
    _no_newline(directory=directory)
    return {
        "/etc/systemd/system/systemd-journal-remote.socket.d/clawstaff.conf": (
            "# Rendered by components/trailship.py: journal-remote on loopback, behind stunnel.\n"
            f"[Socket]\nListenStream=\nListenStream=127.0.0.1:{port}\n"
        ),
        "/etc/systemd/system/systemd-journal-remote.service.d/clawstaff.conf": (
            "# Rendered by components/trailship.py: plain HTTP on the socket systemd passes; the TLS is stunnel's.\n"
            f"[Service]\nExecStart=\nExecStart={JOURNAL_REMOTE} --listen-http=-3 --output={directory}/\n"
        ),
    }


TUNNEL_UNIT = f"stunnel@{TUNNEL_SERVICE}.service"  # Debian's stunnel@.service, for our configuration


def tunnel_unit_dropin() -> str:
    """A drop-in for the sink's stunnel unit: it starts once the network is up (it listens on the one
    address the hosts reach, which must exist by then) and comes back if it stops, after a pause."""
    return (
        "# Rendered by components/trailship.py: the sink's TLS endpoint waits for the network and comes back.\n"
        "[Unit]\nWants=network-online.target\nAfter=network-online.target\n"
        "[Service]\nRestart=on-failure\nRestartSec=5s\n"
    )


def tunnel_listen(address: str, port: int = UPLOAD_PORT) -> str:
    """stunnel's `accept` for one IP address: ADDRESS:PORT (stunnel splits at the last colon, so an
    IPv6 address is written bare)."""
    return f"{ipaddress.ip_address(address)}:{port}"


def sink_url(address: str, port: int = UPLOAD_PORT) -> str:
    """The URL journal-upload is given for the sink at `address` (an IPv6 address in brackets)."""
    ip = ipaddress.ip_address(address)
    return f"https://{f'[{ip}]' if ip.version == 6 else ip}:{port}"


def sink_files(*, listen: str, retention_days: int, max_use: int) -> dict[str, HostFile]:
    """Every file of the trail on the audit sink (path -> mode and text), but the certificates and the
    key, which arrive over SSH into TRAIL_DIR: the mutual TLS (Debian's stunnel@.service runs
    /etc/stunnel/<name>.conf; a drop-in of ours orders it after the network and restarts it),
    journal-remote on loopback with the size retention, the age retention's timer, service and script
    (components/hostscripts/files/clawstaff-trail-vacuum)."""
    tunnel = tunnel_config(listen, key=f"{TRAIL_DIR}/sink.key", certificate=f"{TRAIL_DIR}/sink.pem",
                           trust=f"{TRAIL_DIR}/ca.pem")  # fmt: skip
    files = {
        f"/etc/stunnel/{TUNNEL_SERVICE}.conf": HostFile(0o644, tunnel),
        f"/etc/systemd/system/{TUNNEL_UNIT}.d/clawstaff.conf": HostFile(0o644, tunnel_unit_dropin()),
        "/etc/systemd/journal-remote.conf.d/clawstaff.conf": HostFile(0o644, remote_config(max_use)),
        VACUUM_SCRIPT: HostFile(0o755, host_file("clawstaff-trail-vacuum")),
    }
    for path, text in remote_units().items():
        files[path] = HostFile(0o644, text)
    for name, text in vacuum_units(retention_days).items():
        files[f"/etc/systemd/system/{name}"] = HostFile(0o644, text)
    return files


# What the sink enables once its files and certificates are in place.
SINK_UNITS = ("systemd-journal-remote.socket", TUNNEL_UNIT, f"{VACUUM_UNIT}.timer")
