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

Every request, allowed or refused, is logged to stdout (Docker's log driver takes it) as one JSON
object per line with the claw's name and org and the reason (`access_log_format`, read back by
`parse_access_line`). The proxy sees only `CONNECT host:port`, never a secret. Each client connection
carries one request and a cage's new connections are rate-limited on its bridge, so a claw cannot
make its proxy log faster than CAGE_CONNECTIONS_PER_SECOND lines of at most ACCESS_LINE_MAX bytes.

Inputs are distrusted: a name, port, claw or org that is not plain DNS syntax raises ValueError, so
no entry can smuggle Squid directives, ACL flags or regex metacharacters into the file.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.parse
from collections.abc import Iterable, Sequence
from typing import Any

from components.addresses import BLOCKED_DESTINATIONS  # destinations no cage may reach through its proxy
from components.conventions import DNS_LABEL_PATTERN as _LABEL
from components.conventions import is_dns_label

PROXY_PORT = 3128
# Concurrent connections one client (the claw) may hold to its proxy; more are dropped by Squid.
MAX_CLIENT_CONNECTIONS = 256
# New connections per second one cage may open to its proxy, and the burst above that rate; enforced
# by the host firewall on the cage's bridge (components/firewall.py). With one request per client
# connection (`client_persistent_connections off`), this is the rate of requests a claw can make its
# proxy log, allowed or refused (attack-findings finding 4). Above what a busy claw opens (a new
# tunnel every 50 ms, as the bench's neighbour measures itself, is 20 a second).
CAGE_CONNECTIONS_PER_SECOND = 25
CAGE_CONNECTIONS_BURST = 100

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


ACCESS_LOG_TAG = "clawcage-egress"
# The `reason` of a request the proxy let through; every other reason is a refusal's.
ALLOWED_REASON = "allowlisted"
# The access log is JSON lines: one object per request, every value a JSON string. Fields a client
# chooses (method, URL) are URL-encoded by Squid (`%#`: quote, backslash, controls, non-ASCII and
# every other unsafe byte become %XX), so no value can break the string it sits in, and
# `parse_access_line` gives back exactly what the client sent. The other fields are Squid's own
# (addresses, numbers, result codes) or ours (claw, org: DNS labels; reason: fixed annotations).
#
# The fields a client chooses are cut at LOGGED_WIDTH characters (after encoding: Squid applies the
# width last), so one line is at most about ACCESS_LINE_MAX bytes: with the request rate bounded per
# cage, so is the rate at which a claw fills its proxy's log (attack-findings finding 4). A cut value
# is marked in what `parse_access_line` returns (`truncated`).
LOGGED_WIDTH = {"method": 32, "request": 512}
ACCESS_LINE_MAX = 1024
ACCESS_LOG_FIELDS: tuple[tuple[str, str], ...] = (
    ("client", "%>a"),
    ("method", f"%#.{LOGGED_WIDTH['method']}rm"),
    ("request", f"%#.{LOGGED_WIDTH['request']}ru"),
    ("status", "%>Hs"),
    ("result", "%Ss"),
    ("reason", "%#{reason}note"),
    ("dst", "%<a:%<p"),
    ("bytes", "%st"),
    ("duration_ms", "%tr"),
)
URL_ENCODED_FIELDS = frozenset({"method", "request", "reason"})


def access_log_format(claw: str, org: str) -> str:
    """Squid's logformat specification of a cage's access log (claw and org are checked labels)."""
    fields = [("log", ACCESS_LOG_TAG), ("claw", claw), ("org", org), *ACCESS_LOG_FIELDS]
    return "{" + ",".join(f'"{name}":"{value}"' for name, value in fields) + "}"


def parse_access_line(line: str) -> dict[str, str] | None:
    """One access log line as a dict (client-chosen fields decoded), None for a line that is not an
    access log line (Squid's own messages). A line that claims to be one but does not parse raises
    ValueError: an audit reader must never skip a line it cannot read."""
    text = line.strip()
    if ACCESS_LOG_TAG not in text:
        return None
    try:
        entry = json.loads(text)
    except ValueError as err:
        raise ValueError(f"unreadable access log line ({err}): {text[:200]!r}") from None
    if not isinstance(entry, dict) or entry.get("log") != ACCESS_LOG_TAG:
        raise ValueError(f"not an access log object: {text[:200]!r}")
    if not all(isinstance(v, str) for v in entry.values()):
        raise ValueError(f"an access log value is not a string: {text[:200]!r}")
    decoded, cut = {}, []
    for key, value in entry.items():
        if key not in URL_ENCODED_FIELDS:
            decoded[key] = value
            continue
        truncated = len(value) >= LOGGED_WIDTH.get(key, len(value) + 1)
        decoded[key] = _url_decode(value, truncated)
        if truncated:
            cut.append(key)
    if cut:
        decoded["truncated"] = ",".join(cut)
    return decoded


def _url_decode(value: str, truncated: bool) -> str:
    """A URL-encoded value back to what the client sent. A value Squid cut at its width may end in
    part of an escape (`%`, `%X`) or of a UTF-8 sequence: that tail is dropped, nothing else."""
    if not truncated:
        return urllib.parse.unquote(value, errors="strict")
    raw = urllib.parse.unquote_to_bytes(re.sub(r"%[0-9A-Fa-f]?\Z", "", value))
    for cut in range(4):  # a UTF-8 character is at most 4 bytes: at most 3 of it can be left over
        try:
            return raw[: len(raw) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    raise ValueError(f"a cut access log value is not UTF-8: {value[:200]!r}")


def carve(blocked: Iterable[str], exempt: Iterable[str]) -> list[str]:
    """`blocked` minus the `exempt` networks, as CIDRs: an address is in the result exactly when it is
    in a blocked network and in no exempt one. The bench's exemption is then exact: an answer that
    holds any other blocked address is still refused, as in production (attack-findings finding 13)."""
    networks = [ipaddress.ip_network(b) for b in blocked]
    holes = []
    for e in exempt:
        hole = ipaddress.ip_network(e)
        holes.append(hole)
        if hole.version == 4:  # and its IPv4-mapped IPv6 form (::ffff:a.b.c.d), which Squid may compare
            mapped = ipaddress.IPv6Address("::ffff:" + str(hole.network_address))
            holes.append(ipaddress.ip_network(f"{mapped}/{96 + hole.prefixlen}"))
    for hole in holes:
        out = []
        for net in networks:
            if net.version != hole.version or not net.overlaps(hole):
                out.append(net)
            elif hole.supernet_of(net):
                continue  # the whole blocked network is exempt
            else:
                out.extend(net.address_exclude(hole))
        networks = out
    return [str(n) for n in sorted(networks, key=lambda n: (n.version, n))]


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
        # A claw's connections to its proxy are bounded: connections that never finish their headers
        # are the proxy's memory, and the proxy must outlive its claw (attack-findings finding 5).
        f"client_ip_max_connections {MAX_CLIENT_CONNECTIONS}",
        # One request per client connection: a refused request ends its connection, so the host
        # firewall's per-cage rate of new connections bounds the rate of requests, and with it how
        # fast a claw can fill this log (attack-findings finding 4). A CONNECT tunnel is one
        # connection either way.
        "client_persistent_connections off",
        "shutdown_lifetime 1 seconds",
        # No `via off`: Squid 6 warns that HTTP requires Via, and a CONNECT tunnel's bytes carry no
        # header of Squid's either way (plain HTTP is refused).
        "forwarded_for delete",
        "httpd_suppress_version_string on",
        "cache_log stdio:/dev/stderr",
        "logformat clawcage " + access_log_format(claw, org),
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
        f"acl why_allowed annotate_transaction reason={ALLOWED_REASON}",
        "acl why_not_client annotate_transaction reason=not-a-cage-client",
    ]
    if clients:
        lines.append("acl cage_clients src " + " ".join(clients))
    if bench:
        lines.append("# BENCH ONLY: private destinations exempted from the block for a test server.")
        lines.append("acl bench_allowed_dst dst " + " ".join(bench))
        # `dst` matches when ANY address of a name matches, so "blocked and not exempt" must be one
        # list: the blocked networks with the exempt ones cut out. An answer holding the exempt
        # address and any other blocked one is refused by it.
        lines.append("acl blocked_dst_unexempted dst " + " ".join(carve(BLOCKED_DESTINATIONS, bench)))
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
    ]
    if bench:
        lines.append("http_access deny blocked_dst_unexempted why_blocked_dst")
        lines.append("http_access deny blocked_dst !bench_allowed_dst why_blocked_dst")  # never weaker
    else:
        lines.append("http_access deny blocked_dst why_blocked_dst")
    for i, _ in enumerate(pairs):
        lines.append(f"http_access allow egress{i}_host egress{i}_port why_allowed")
    lines += ["http_access deny all why_wrong_port", ""]
    return "\n".join(lines)
