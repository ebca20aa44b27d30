"""How a host's journal reaches the stack's audit sink: the transport's configuration (issue 15,
docs/audit.md, "Shipping off the host").

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
