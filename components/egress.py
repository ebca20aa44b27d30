"""The egress proxy's allowlist and its Squid configuration.

Each cage's only way out is its own Squid (Debian's `squid`, in the `egress-proxy` image). The
configuration rendered here lets through HTTPS CONNECT to the claw's `egress` entries and the control
plane, by host name *and* port, and nothing else:

1. only CONNECT (no plain HTTP: it would let a claw send credentials in clear text and hand Squid
   URLs to parse; every allowed endpoint is TLS);
2. IP literals are refused (the allowlist is names only, and a literal bypasses DNS-based checks);
3. a name not on the allowlist is refused *before* anything resolves it (`dstdomain -n`: no reverse
   or forward lookup), so a cage cannot use the proxy's resolver as an oracle or a tunnel;
4. an allowlisted name is resolved by Squid and refused if any of its addresses is private,
   loopback, link-local (169.254.169.254 holds Hetzner user-data), CGNAT, multicast or reserved:
   DNS rebinding cannot turn an allowed name into a way to the host or its neighbours;
5. the name must be allowed *on that port*.

Every request, allowed or refused, is logged to stdout (Docker's log driver takes it) on one line
with the claw's name and org and the reason. The proxy sees only `CONNECT host:port`, never a secret.

Inputs are distrusted: a name, port, claw or org that is not plain DNS syntax raises ValueError, so
no entry can smuggle Squid directives, ACL flags or regex metacharacters into the file.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any

from components.addresses import BLOCKED_DESTINATIONS  # destinations no cage may reach through its proxy
from components.conventions import DNS_LABEL_PATTERN as _LABEL
from components.conventions import is_dns_label

PROXY_PORT = 3128

# At least two labels; the last one not all digits (so 10.0.0.1 and 2130706433 are not names).
_HOST_NAME = re.compile(rf"(?:{_LABEL}\.)+(?=[a-z0-9-]*[a-z])(?:{_LABEL})\Z")


def _check_host(host: Any) -> str:
    if not isinstance(host, str):
        raise ValueError(f"egress host {host!r} is not a string")
    name = host.lower()
    if len(name) > 253 or not _HOST_NAME.match(name):
        raise ValueError(
            f"egress host {host!r} is not a plain DNS name (labels of a-z, 0-9 and '-', "
            "at least two labels, not an IP address)"
        )
    return name


def _check_port(port: Any, what: str = "egress port") -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError(f"{what} {port!r} is not an integer in 1..65535")
    return port


def _check_label(value: Any, what: str) -> str:
    if not isinstance(value, str) or not is_dns_label(value):
        raise ValueError(f"{what} {value!r} is not a DNS label (a-z, 0-9, '-', at most 63 characters)")
    return value


def _endpoint(entry: Any) -> tuple[str, int]:
    if isinstance(entry, tuple) and len(entry) == 2:
        host, port = entry
    elif hasattr(entry, "host") and hasattr(entry, "port"):
        host, port = entry.host, entry.port
    else:
        raise ValueError(f"egress entry {entry!r} is neither (host, port) nor an Endpoint")
    return _check_host(host), _check_port(port)


def egress_allowlist(egress: Iterable[Any], control_plane: Any) -> tuple[tuple[str, int], ...]:
    """The (host, port) pairs a cage may reach: its egress entries plus the control plane,
    validated, lower-cased, deduplicated and sorted (stable output: no diff without a change)."""
    return tuple(sorted({_endpoint(e) for e in egress} | {_endpoint(control_plane)}))


def _networks(cidrs: Iterable[str], what: str) -> list[str]:
    out = []
    for cidr in cidrs:
        try:
            out.append(str(ipaddress.ip_network(cidr, strict=True)))
        except (TypeError, ValueError):
            raise ValueError(f"{what} entry {cidr!r} is not a CIDR network") from None
    return sorted(set(out))


def render_proxy_config(
    *,
    claw: str,
    org: str,
    allowlist: Sequence[tuple[str, int]],
    listen_port: int = PROXY_PORT,
    client_cidrs: Sequence[str] = (),
    bench_allow_cidrs: Sequence[str] = (),
) -> str:
    """The squid.conf text for one cage's proxy.

    client_cidrs: if given, only these source networks may use the proxy (the cage network).
    bench_allow_cidrs: private networks to exempt from the destination block. For test benches
    only (a test server on a Docker network has a private address); production passes nothing.
    """
    claw = _check_label(claw, "claw name")
    org = _check_label(org, "org name")
    listen_port = _check_port(listen_port, "listen port")
    pairs = sorted({_endpoint(tuple(p) if isinstance(p, list) else p) for p in allowlist})
    if not pairs:
        raise ValueError("the allowlist is empty; it always holds at least the control plane")
    clients = _networks(client_cidrs, "client_cidrs")
    bench = _networks(bench_allow_cidrs, "bench_allow_cidrs")
    names = sorted({host for host, _ in pairs})

    lines = [
        f"# Squid egress proxy of ClawCage {claw} (org {org}). Rendered by components/egress.py:",
        "# do not edit; every rule below is explained there.",
        f"http_port {listen_port}",
        "",
        "# Non-root, read-only rootfs, no disk: no pid file, no cache, no helpers, logs to stdio.",
        "pid_filename none",
        "cache deny all",
        "cache_mem 0 MB",
        "coredump_dir /tmp",
        "netdb_filename none",
        "pinger_enable off",
        "icp_port 0",
        "htcp_port 0",
        "max_filedescriptors 4096",
        "shutdown_lifetime 1 seconds",
        # No `via off`: Squid 6 warns that HTTP requires Via, and a CONNECT tunnel's bytes carry no
        # header of Squid's either way (plain HTTP is refused).
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        "cache_log stdio:/dev/stderr",
        f'logformat clawcage clawcage-egress claw={claw} org={org} client=%>a request="%rm %ru" '
        "status=%>Hs result=%Ss reason=%{reason}note dst=%<a:%<p bytes=%st duration_ms=%tr",
        "access_log stdio:/dev/stdout logformat=clawcage",
        "logfile_rotate 0",
        "",
        "acl CONNECT method CONNECT",
        r"acl ip_literal dstdom_regex -n ^[0-9.]+$ ^\[ : ^0x ^[0-9]+$",
        "acl allowed_names dstdomain -n " + " ".join(names),
        "acl blocked_dst dst " + " ".join(BLOCKED_DESTINATIONS),
        "acl why_not_connect annotate_transaction reason=not-connect",
        "acl why_ip_literal annotate_transaction reason=ip-literal",
        "acl why_not_allowlisted annotate_transaction reason=not-allowlisted",
        "acl why_blocked_dst annotate_transaction reason=blocked-destination",
        "acl why_wrong_port annotate_transaction reason=port-not-allowed",
        "acl why_allowed annotate_transaction reason=allowlisted",
        "acl why_not_client annotate_transaction reason=not-a-cage-client",
    ]
    if clients:
        lines.append("acl cage_clients src " + " ".join(clients))
    if bench:
        lines.append("# BENCH ONLY: private destinations exempted from the block for a test server.")
        lines.append("acl bench_allowed_dst dst " + " ".join(bench))
    for i, (host, port) in enumerate(pairs):
        lines.append(f"acl egress{i}_host dstdomain -n {host}")
        lines.append(f"acl egress{i}_port port {port}")
    lines += ["", "# First match wins; names are checked before anything is resolved."]
    if clients:
        lines.append("http_access deny !cage_clients why_not_client")
    lines += [
        "http_access deny !CONNECT why_not_connect",
        "http_access deny ip_literal why_ip_literal",
        "http_access deny !allowed_names why_not_allowlisted",
        "http_access deny blocked_dst !bench_allowed_dst why_blocked_dst"
        if bench
        else "http_access deny blocked_dst why_blocked_dst",
    ]
    for i, _ in enumerate(pairs):
        lines.append(f"http_access allow egress{i}_host egress{i}_port why_allowed")
    lines += ["http_access deny all why_wrong_port", ""]
    return "\n".join(lines)
