"""Network isolation probes, run inside the replayed cages as the claw's user (issue 5).

Each probe records a scorecard row (probe, expected, observed, verdict) before it asserts.
"""

from __future__ import annotations

import secrets
import socket
import struct
import subprocess
import time

import pytest

from tests.integration.bench import (
    CAGE_A,
    CAGE_B,
    CAGE_C,
    GREETING,
    HOST_SERVICE_TCP,
    HOST_SERVICE_UDP,
    METADATA_IP,
    OUTSIDE_IP,
)

pytestmark = pytest.mark.integration
GROUP = "network"
TCP_PORTS = list(range(1, 1025)) + [3128, 8443, HOST_SERVICE_TCP]
UDP_PORTS = [53, 123, 3128, HOST_SERVICE_UDP]

# Non-blocking connects in batches, UDP with a reply wanted, ICMP echo over a ping socket.
REACH = """
import resource, select
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
res = {ip: {"open": [], "tcp_errors": {}, "udp": {}, "icmp": "no reply"} for ip in ARG["targets"]}
def err(ip, e):
    k = errno.errorcode.get(e, str(e)) if e != -1 else "timeout"
    res[ip]["tcp_errors"][k] = res[ip]["tcp_errors"].get(k, 0) + 1
poller, pending = select.poll(), {}
for ip in ARG["targets"]:
    for p in ARG["tcp"]:
        s = socket.socket(); s.setblocking(False)
        e = s.connect_ex((ip, p))
        if e == 0: res[ip]["open"].append(p); s.close()
        elif e == errno.EINPROGRESS: pending[s.fileno()] = ("tcp", s, ip, p); poller.register(s, select.POLLOUT)
        else: err(ip, e); s.close()
    for p in ARG["udp"]:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
        try:
            s.sendto(b"probe", (ip, p)); res[ip]["udp"][p] = "no reply"
            pending[s.fileno()] = ("udp", s, ip, p); poller.register(s, select.POLLIN)
        except OSError as e:
            res[ip]["udp"][p] = errno.errorcode.get(e.errno, str(e)); s.close()
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); s.setblocking(False)
        s.sendto(b"\\x08\\x00\\x00\\x00\\x00\\x01\\x00\\x01probe", (ip, 0))
        pending[s.fileno()] = ("icmp", s, ip, 0); poller.register(s, select.POLLIN)
    except OSError as e:
        res[ip]["icmp"] = "cannot send: " + errno.errorcode.get(e.errno, str(e))
deadline = time.time() + ARG["wait"]
while pending and time.time() < deadline:
    for fd, _ev in poller.poll(max(1, int((deadline - time.time()) * 1000))):
        kind, s, ip, p = pending.pop(fd); poller.unregister(fd)
        if kind == "tcp":
            e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if e == 0: res[ip]["open"].append(p)
            else: err(ip, e)
        else:
            try:
                s.recv(100); reply = "REPLY"
            except OSError as e:
                reply = errno.errorcode.get(e.errno, str(e))
            if kind == "udp": res[ip]["udp"][p] = reply
            else: res[ip]["icmp"] = reply
        s.close()
for kind, s, ip, p in pending.values():
    if kind == "tcp": err(ip, -1)
    s.close()
out(res)
"""

# CONNECT through the cage's own proxy; for a 200, finish TLS against the bench CA and read.
THROUGH_PROXY = """
import ssl
def attempt(request, tls_name):
    s = socket.create_connection(("egress-proxy", 3128), timeout=10)
    s.sendall(request.encode())
    reply = b""
    while b"\\r\\n\\r\\n" not in reply:
        chunk = s.recv(4096)
        if not chunk: break
        reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
    body = ""
    if status == 200 and tls_name:
        ctx = ssl.create_default_context(cadata=ARG["ca"])
        t = ctx.wrap_socket(s, server_hostname=tls_name); t.settimeout(10)
        body = t.recv(200).decode(errors="replace").strip(); t.close()
    else:
        s.close()
    return {"status": status, "body": body}
res = {}
for label, request, tls_name in ARG["cases"]:
    try: res[label] = attempt(request, tls_name)
    except Exception as e: res[label] = {"status": -1, "body": type(e).__name__ + ": " + str(e)}
out(res)
"""


def _connect(host_port: str) -> str:
    return f"CONNECT {host_port} HTTP/1.1\r\nHost: {host_port}\r\n\r\n"


def _reach(bench, cage: str, targets: dict[str, str], wait: float = 2.5) -> dict:
    return bench.probe(
        f"claw-{cage}",
        REACH,
        {"targets": sorted(set(targets.values())), "tcp": TCP_PORTS, "udp": UDP_PORTS, "wait": wait},
        timeout=120,
    )


def _nothing_answered(result: dict) -> bool:
    """No open port, no refusal (a RST or port-unreachable would mean the packet got somewhere), no
    UDP or ICMP reply."""
    return (
        not result["open"]
        and "ECONNREFUSED" not in result["tcp_errors"]
        and "REPLY" not in result["udp"].values()
        and result["icmp"] != "REPLY"
    )


def _summary(result: dict) -> str:
    return (
        f"open={result['open'] or 'none'} tcp={result['tcp_errors']} udp={sorted(set(result['udp'].values()))} "
        f"icmp={result['icmp']}"
    )


@pytest.mark.parametrize("attacker,victims", [(CAGE_A, (CAGE_B, CAGE_C)), (CAGE_B, (CAGE_A, CAGE_C))])
def test_no_lateral_reach_to_other_cages(isolation_bench, attacker, victims):
    bench = isolation_bench
    targets = {}
    for victim in victims:
        for net, ip in bench.addresses(bench.claw(victim)).items():
            targets[f"{victim} claw on {net}"] = ip
        for net, ip in bench.addresses(bench.proxy(victim)).items():
            targets[f"{victim} proxy on {net}"] = ip
    result = _reach(bench, attacker, targets)
    failures = []
    for label, ip in targets.items():
        ok = _nothing_answered(result[ip])
        bench.scorecard.record(
            GROUP,
            f"{attacker} -> {label} ({ip}) tcp 1-1024,3128,8443; udp; icmp",
            "nothing answers",
            _summary(result[ip]),
            ok,
        )
        if not ok:
            failures.append(label)
    assert not failures, f"{attacker} reached {failures}: {result}"


def test_no_reach_to_host_services_or_metadata(isolation_bench):
    bench = isolation_bench
    before = bench.outside.service_hits()
    targets = {
        "own cage gateway (host)": bench.gateway(f"cage-{CAGE_A}"),
        "egress network gateway (host)": bench.gateway("egress-laptop"),
        "docker0 (host)": "172.17.0.1",
        "host's primary address": _primary_address(),
        "metadata 169.254.169.254": METADATA_IP,
        "outside server, no proxy": OUTSIDE_IP,
    }
    result = _reach(bench, CAGE_A, targets)
    hits = bench.outside.service_hits()[len(before) :]
    failures = []
    for label, ip in targets.items():
        ok = _nothing_answered(result[ip])
        bench.scorecard.record(
            GROUP, f"{CAGE_A} -> {label} ({ip}) directly", "nothing answers", _summary(result[ip]), ok
        )
        if not ok:
            failures.append(label)
    bench.scorecard.record(
        GROUP,
        "host services' own log during the probe",
        "no connection from a cage",
        hits.strip() or "no connection",
        not hits.strip(),
    )
    assert not failures and not hits.strip(), (failures, hits, result)


def _primary_address() -> str:
    out = subprocess.run(["ip", "-4", "-o", "route", "get", "1.1.1.1"], capture_output=True, text=True).stdout
    return out.split(" src ")[1].split()[0]


DNS_PROBE = """
name = ARG["name"]
res = {}
try:
    socket.getaddrinfo(name, 443); res["getaddrinfo"] = "RESOLVED"
except socket.gaierror as e:
    res["getaddrinfo"] = "failed: " + str(e)
query = bytes.fromhex(ARG["query"])
for server in ARG["servers"]:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    try:
        s.sendto(query, (server, 53)); data = s.recvfrom(512)[0]
        res[server] = "rcode=%d answers=%d" % (data[3] & 15, int.from_bytes(data[6:8], "big"))
    except socket.timeout: res[server] = "no reply"
    except OSError as e: res[server] = errno.errorcode.get(e.errno, str(e))
out(res)
"""


def _dns_query(name: str) -> bytes:
    question = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\x00" + struct.pack(">HH", 1, 1)
    return struct.pack(">HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0) + question


def test_dns_exfiltration_never_reaches_the_hosts_resolver(isolation_bench):
    bench = isolation_bench
    # Control: the bench's DNS server answers and logs, so silence below means something.
    control = f"control-{secrets.token_hex(6)}.bench.example"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        s.sendto(_dns_query(control), ("127.0.0.53", 53))
        s.recvfrom(512)
    time.sleep(0.3)
    assert control in bench.outside.dns_queries(), "the bench DNS server does not log: the probe would prove nothing"

    name = f"exfil-{secrets.token_hex(8)}.leak.example"
    servers = ["127.0.0.11", "127.0.0.53", bench.gateway(f"cage-{CAGE_A}"), "172.17.0.1", _primary_address()]
    result = bench.probe(
        f"claw-{CAGE_A}", DNS_PROBE, {"name": name, "query": _dns_query(name).hex(), "servers": servers}, timeout=40
    )
    time.sleep(1)
    seen = name in bench.outside.dns_queries()
    ok = not seen and result["getaddrinfo"] != "RESOLVED"
    bench.scorecard.record(
        GROUP,
        "resolve a unique name from the cage (getaddrinfo; UDP to 127.0.0.11, 127.0.0.53, gateway, docker0, host)",
        "does not resolve; the test DNS never sees it",
        f"{result}; test DNS saw it: {seen}",
        ok,
    )
    assert ok, result


@pytest.mark.parametrize("cage", [CAGE_A, CAGE_B, CAGE_C])
def test_through_the_proxy_only_the_allowlist(isolation_bench, cage):
    bench = isolation_bench
    claw = next(c for c in bench.stack.config.claws if c.name == cage)
    allowed = claw.egress[0].host
    other_cage_ip = next(iter(bench.addresses(bench.claw(CAGE_B if cage != CAGE_B else CAGE_A)).values()))
    before = bench.outside.service_hits()
    cases = [
        ("allowlisted host", _connect(f"{allowed}:443"), allowed, 200),
        ("forbidden host", _connect("forbidden.example.net:443"), None, 403),
        ("IP literal of the allowlisted server", _connect(f"{OUTSIDE_IP}:443"), None, 403),
        ("allowlisted name on another port", _connect(f"{allowed}:8443"), None, 403),
        (
            "allowlisted name resolving to 169.254.169.254",
            _connect(f"{bench.stack.config.control_plane.host}:443"),
            None,
            403,
        ),
        ("metadata by IP (CONNECT)", _connect(f"{METADATA_IP}:80"), None, 403),
        (
            "metadata by IP (plain GET)",
            f"GET http://{METADATA_IP}/latest/meta-data/ HTTP/1.1\r\nHost: {METADATA_IP}\r\n\r\n",
            None,
            403,
        ),
        ("other cage's claw by IP", _connect(f"{other_cage_ip}:3128"), None, 403),
    ]
    result = bench.probe(
        f"claw-{cage}", THROUGH_PROXY, {"ca": bench.outside.cert_pem, "cases": [c[:3] for c in cases]}, timeout=60
    )
    failures = []
    for label, request, _tls, want in cases:
        got = result[label]
        ok = got["status"] == want and (want != 200 or got["body"] == GREETING)
        expected = "200 and the server's greeting over TLS" if want == 200 else "403 from the proxy"
        bench.scorecard.record(
            GROUP,
            f"{cage} via proxy: {label} ({request.split(' ')[1]})",
            expected,
            f"{got['status']} {got['body']}".strip(),
            ok,
        )
        if not ok:
            failures.append((label, got))
    hits = [l for l in bench.outside.service_hits()[len(before) :].splitlines() if METADATA_IP in l]
    bench.scorecard.record(GROUP, f"{cage} via proxy: metadata service log", "no connection", hits or "none", not hits)
    assert not failures and not hits, (failures, hits)


def test_ipv6_is_off_in_cages_and_proxies(isolation_bench):
    bench = isolation_bench
    code = """
res = {"disable_ipv6": open("/proc/sys/net/ipv6/conf/all/disable_ipv6").read().strip(),
       "if_inet6": open("/proc/net/if_inet6").read().strip() if os.path.exists("/proc/net/if_inet6") else ""}
try:
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM); s.settimeout(2); s.connect(("::1", 3128)); res["v6"] = "CONNECTED"
except OSError as e:
    res["v6"] = errno.errorcode.get(e.errno, str(e))
out(res)
"""
    failures = []
    for cage in (CAGE_A, CAGE_B, CAGE_C):
        got = bench.probe(f"claw-{cage}", code)
        ok = got["disable_ipv6"] == "1" and not got["if_inet6"] and got["v6"] != "CONNECTED"
        bench.scorecard.record(GROUP, f"{cage} claw: IPv6", "disabled, no address, no v6 socket", got, ok)
        pid = bench.proxy(cage).attrs["State"]["Pid"]
        addrs = subprocess.run(
            ["nsenter", "-t", str(pid), "-n", "ip", "-6", "-o", "addr"], capture_output=True, text=True
        ).stdout.strip()
        proxy_ok = not addrs
        bench.scorecard.record(GROUP, f"{cage} proxy: IPv6 addresses", "none", addrs or "none", proxy_ok)
        if not (ok and proxy_ok):
            failures.append(cage)
    assert not failures
