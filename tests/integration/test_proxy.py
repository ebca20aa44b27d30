"""The egress proxy, for real: the egress-proxy image running a rendered config, hardened like a cage.

A throwaway internal Docker network holds: a test server (the "model provider"), a recording DNS
server (so we can see which names the proxy asked for), two proxies (one with the production
default, one with a bench exemption for the network's private subnet, since the test server can
only have a private address here), and a client that speaks CONNECT like a claw would.
"""

from __future__ import annotations

import ipaddress
import json
import re
import time
from pathlib import Path

import pytest

from components.egress import egress_allowlist, parse_access_line, render_proxy_config

pytestmark = pytest.mark.integration

CLAW, ORG = "bench-claw", "bench-org"
GREETING = "HELLO-FROM-THE-ALLOWED-ENDPOINT"

# Listens on 443 and 8443 and greets whoever connects: what the tunnel should reach.
SERVER = f"""
import socket, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.sendall(b"{GREETING}\\n"); c.close()
for p in (443, 8443):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
"""

# A tiny authoritative DNS server: answers A queries from a table, logs every name it is asked.
DNS = r"""
import json, socket, struct, sys
table = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(512)
    qid, flags, qd = struct.unpack(">HHH", data[:6])
    i, labels = 12, []
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode()); i += 1 + data[i]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]
    question = data[12:i + 5]
    name = ".".join(labels).lower()
    print(f"QUERY {name} {qtype}", flush=True)
    address = table.get(name)
    if address is None:
        s.sendto(struct.pack(">HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question, peer)   # NXDOMAIN
    elif qtype != 1:
        s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 0, 0, 0) + question, peer)   # no AAAA
    else:
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(address)
        s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer, peer)
"""

# The claw's side: CONNECT through a proxy, report the status line and what came back.
CLIENT = r"""
import json, socket, sys, time
probes = json.loads(sys.argv[1])
results = []
for proxy, request in probes:
    deadline = time.time() + 30
    while True:
        try:
            s = socket.create_connection((proxy, 3128), timeout=10); break
        except OSError:
            if time.time() > deadline: raise
            time.sleep(0.3)
    s.sendall(request.encode() + b"\r\nHost: bench\r\n\r\n")
    reply = b""
    while b"\r\n\r\n" not in reply:
        chunk = s.recv(4096)
        if not chunk: break
        reply += chunk
    head, _, rest = reply.partition(b"\r\n\r\n")
    status = head.split(b"\r\n")[0].decode()
    body = rest
    if " 200 " in status:
        while b"\n" not in body:
            chunk = s.recv(4096)
            if not chunk: break
            body += chunk
    s.close()
    results.append({"proxy": proxy, "request": request, "status": status,
                    "tunnel": body.decode(errors="replace").strip() if " 200 " in status else ""})
print(json.dumps(results))
"""


def logs(container) -> tuple[str, str]:
    return (
        container.logs(stdout=True, stderr=False).decode(errors="replace"),
        container.logs(stdout=False, stderr=True).decode(errors="replace"),
    )


@pytest.fixture(scope="module")
def bench(docker_client, claw_runtime_image, egress_proxy_image, tmp_path_factory):
    """Start the bench once for the module; remove every container and the network afterwards."""
    import uuid

    prefix = f"clawtest-{uuid.uuid4().hex[:8]}"
    created: list = []
    hardening = dict(
        read_only=True,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
        pids_limit=128,
        mem_limit="256m",
        labels={"clawstaff.test": "integration"},
    )
    network = docker_client.networks.create(
        f"{prefix}-net", driver="bridge", internal=True, labels={"clawstaff.test": "integration"}
    )
    created.append(network)
    try:
        network.reload()
        subnet = network.attrs["IPAM"]["Config"][0]["Subnet"]

        def start(name, image, **kwargs):
            container = docker_client.containers.run(
                image, name=f"{prefix}-{name}", detach=True, network=network.name, **hardening, **kwargs
            )
            created.append(container)
            container.reload()
            return container

        server = start("server", claw_runtime_image, entrypoint=["/usr/bin/python3"], command=["-c", SERVER])
        server_ip = server.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]
        table = {
            "api.allowed.test": server_ip,
            "forbidden.test": server_ip,
            "rebind.allowed.test": "127.0.0.1",
            "metadata.allowed.test": "169.254.169.254",
            "neighbour.allowed.test": "10.20.30.40",
        }
        dns = start("dns", claw_runtime_image, entrypoint=["/usr/bin/python3"], command=["-c", DNS, json.dumps(table)])
        dns_ip = dns.attrs["NetworkSettings"]["Networks"][network.name]["IPAddress"]

        allowlist = egress_allowlist(
            [
                ("api.allowed.test", 443),
                ("rebind.allowed.test", 443),
                ("metadata.allowed.test", 443),
                ("neighbour.allowed.test", 443),
            ],
            ("control.allowed.test", 443),
        )
        configs = tmp_path_factory.mktemp("proxy")
        configs.chmod(0o755)
        proxies = {}
        for variant, bench_cidrs in (("default", ()), ("bench", (subnet,))):
            path = Path(configs) / f"{variant}.conf"
            path.write_text(render_proxy_config(claw=CLAW, org=ORG, allowlist=allowlist, bench_allow_cidrs=bench_cidrs))
            path.chmod(0o644)
            proxies[variant] = start(
                f"proxy-{variant}",
                egress_proxy_image,
                dns=[dns_ip],
                volumes={str(path): {"bind": "/etc/clawcage/squid.conf", "mode": "ro"}},
            )
        yield {
            "client": lambda probes: run_client(
                docker_client, claw_runtime_image, network, hardening, prefix, created, probes
            ),
            "proxies": proxies,
            "dns": dns,
            "server_ip": server_ip,
            "subnet": subnet,
            "prefix": prefix,
        }
    finally:
        for thing in reversed(created):
            try:
                thing.remove(force=True) if hasattr(thing, "stop") else thing.remove()
            except Exception:
                pass


def run_client(client, image, network, hardening, prefix, created, probes):
    container = client.containers.run(
        image,
        entrypoint=["/usr/bin/python3"],
        command=["-c", CLIENT, json.dumps(probes)],
        detach=True,
        name=f"{prefix}-client-{len(created)}",
        network=network.name,
        **hardening,
    )
    created.append(container)
    status = container.wait(timeout=120)
    out, err = logs(container)
    assert status["StatusCode"] == 0, err
    return {r["request"]: r for r in json.loads(out)}


@pytest.fixture(scope="module")
def results(bench):
    default = f"{bench['prefix']}-proxy-default"
    bench_proxy = f"{bench['prefix']}-proxy-bench"
    probes = [
        [bench_proxy, "CONNECT api.allowed.test:443 HTTP/1.1"],
        [bench_proxy, "CONNECT forbidden.test:443 HTTP/1.1"],
        [bench_proxy, f"CONNECT {bench['server_ip']}:443 HTTP/1.1"],
        [bench_proxy, "CONNECT api.allowed.test:8443 HTTP/1.1"],
        [bench_proxy, "CONNECT rebind.allowed.test:443 HTTP/1.1"],
        [bench_proxy, "CONNECT metadata.allowed.test:443 HTTP/1.1"],
        [bench_proxy, "CONNECT neighbour.allowed.test:443 HTTP/1.1"],
        [bench_proxy, "GET http://api.allowed.test:443/ HTTP/1.1"],
    ]
    by_proxy = {"bench": bench["client"](probes)}
    by_proxy["default"] = bench["client"](
        [[default, "CONNECT api.allowed.test:443 HTTP/1.1"], [default, "CONNECT forbidden.test:443 HTTP/1.1"]]
    )
    time.sleep(1)  # let Squid flush its access log lines
    return by_proxy


def test_allowlisted_name_and_port_is_tunnelled(results):
    result = results["bench"]["CONNECT api.allowed.test:443 HTTP/1.1"]
    assert " 200 " in result["status"]
    assert result["tunnel"] == GREETING


@pytest.mark.parametrize(
    "request_line",
    [
        "CONNECT forbidden.test:443 HTTP/1.1",  # not on the allowlist
        "CONNECT {ip}:443 HTTP/1.1",  # an IP literal (of the very server allowed by name)
        "CONNECT api.allowed.test:8443 HTTP/1.1",  # allowed name, other port
        "CONNECT rebind.allowed.test:443 HTTP/1.1",  # allowed name resolving to loopback
        "CONNECT metadata.allowed.test:443 HTTP/1.1",  # ... to the metadata service
        "CONNECT neighbour.allowed.test:443 HTTP/1.1",  # ... to RFC 1918 outside the bench exemption
        "GET http://api.allowed.test:443/ HTTP/1.1",  # plain HTTP
    ],
)
def test_everything_else_is_refused(results, bench, request_line):
    result = results["bench"][request_line.format(ip=bench["server_ip"])]
    assert result["status"].split()[1] == "403", result
    assert result["tunnel"] == ""


def test_default_refuses_an_allowed_name_that_resolves_to_a_private_address(results, bench):
    # Without the bench exemption, the test server's private address is refused: the production
    # default does not trust DNS for where an allowed name may lead.
    result = results["default"]["CONNECT api.allowed.test:443 HTTP/1.1"]
    assert result["status"].split()[1] == "403"
    assert ipaddress.ip_address(bench["server_ip"]).is_private


def test_disallowed_names_are_never_resolved(results, bench):
    queries = logs(bench["dns"])[0]
    assert "QUERY api.allowed.test" in queries  # the DNS server does see the proxy's lookups
    assert "forbidden.test" not in queries  # ... but never a refused name


def proxy_log(bench, variant) -> dict[str, dict[str, str]]:
    """Every access log line, read with the format's own parser (JSON lines): one that does not
    parse fails the test, none is skipped."""
    out, _ = logs(bench["proxies"][variant])
    entries = {}
    for line in out.splitlines():
        entry = parse_access_line(line)
        assert entry is not None, f"unexpected access log line: {line!r}"
        entries[f"{entry['method']} {entry['request']}"] = entry
    return entries


def test_every_request_is_logged_with_claw_org_and_reason(results, bench):
    entries = proxy_log(bench, "bench")
    ip = bench["server_ip"]
    expected = {
        "CONNECT api.allowed.test:443": ("200", "allowlisted"),
        "CONNECT forbidden.test:443": ("403", "not-allowlisted"),
        f"CONNECT {ip}:443": ("403", "ip-literal"),
        "CONNECT api.allowed.test:8443": ("403", "port-not-allowed"),
        "CONNECT rebind.allowed.test:443": ("403", "blocked-destination"),
        "CONNECT metadata.allowed.test:443": ("403", "blocked-destination"),
        "CONNECT neighbour.allowed.test:443": ("403", "blocked-destination"),
        "GET http://api.allowed.test:443/": ("403", "not-connect"),
    }
    for request, (status, reason) in expected.items():
        entry = entries[request]
        assert (entry["claw"], entry["org"], entry["status"], entry["reason"]) == (CLAW, ORG, status, reason)
    default = proxy_log(bench, "default")
    assert default["CONNECT api.allowed.test:443"]["reason"] == "blocked-destination"


def test_proxy_runs_hardened_and_its_config_is_clean(bench, docker_client):
    for variant, container in bench["proxies"].items():
        container.reload()
        host_config = container.attrs["HostConfig"]
        assert container.status == "running"
        assert container.attrs["Config"]["User"] not in ("", "0", "root")
        assert host_config["ReadonlyRootfs"] and host_config["CapDrop"] == ["ALL"]
        _, cache_log = logs(container)
        problems = [
            l
            for l in cache_log.splitlines()
            if re.search(r"\b(ERROR|FATAL)\b", l) or ("WARNING" in l and "BCP 177" not in l)
        ]
        assert problems == [], f"{variant}: {problems}"
