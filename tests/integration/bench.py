"""The isolation bench: the `local` stack replayed onto this machine's engine, an outside world made
of local stand-ins, a way to run probes inside a cage as the claw's user, and the scorecard.

What the bench changes in the program's graph, and why (each is printed in the scorecard):
- secrets: the stack file's encrypted values cannot be opened here (no Pulumi CLI), so each one is
  replaced by a fresh random plaintext before evaluation; the credential probes then search the host
  for strings that exist nowhere else;
- proxies: the "outside" test server has a TEST-NET-2 address (198.51.100.10) that the production
  proxy config refuses, so each cage's squid.conf is re-rendered with `bench_allow_cidrs` for exactly
  that /32 (components.egress, the documented bench hook), and the proxies get a hosts table (the
  `hosts` input of the Container) that resolves the allowlisted names to that server and the control
  plane to 169.254.169.254, standing in for DNS that points an allowed name at a private address.

The outside world, all on this machine: a network namespace with the test server (TLS on 443 and
8443) behind a veth; 169.254.169.254 on a host interface (metadata stand-in); a TCP/UDP service on the
host's own addresses; a DNS server on every host address (127.0.0.53 included) that answers every name
and logs every query.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import secrets as pysecrets
import shutil
import subprocess
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors

from components.broker import BENCH_CA_ENV, BROKER_ENV, placeholder
from components.config import is_secret_placeholder, load_stack_file, parse_stack_config
from components.egress import egress_allowlist, render_proxy_config
from tools import audit, engine, mockrun, replay
from tools.isolation_report import Scorecard

ROOT = Path(__file__).resolve().parents[2]

NETNS = "clawbench-out"
VETH_HOST, VETH_NS = "cbo-h", "cbo-n"
OUTSIDE_GW, OUTSIDE_IP = "198.51.100.1", "198.51.100.10"
METADATA_IF, METADATA_IP = "cb-meta", "169.254.169.254"
HOST_SERVICE_TCP, HOST_SERVICE_UDP = 18080, 18081
GREETING = "HELLO-FROM-OUTSIDE"

# The cages the probes use: A has the volume; C shares A's org; B is another org (the neighbour).
CAGE_A, CAGE_B, CAGE_C = "acme-reports", "globex-triage", "acme-support"


# --- scorecard: tools.isolation_report.Scorecard (one writer for the engine's and the VM's reports) -----


# --- the bench's version of the program's graph --------------------------------------------------------


def random_secret(path: str) -> str:
    """A unique plaintext, greppable and long enough that a hit cannot be a coincidence."""
    return f"bench-{hashlib.sha256(path.encode()).hexdigest()[:6]}-{pysecrets.token_hex(16)}"


def _fill_secrets(node: Any, found: dict[str, str]) -> Any:
    if is_secret_placeholder(node):
        path = node[len("[secret:") : -1]
        found[path] = random_secret(path)
        return found[path]
    if isinstance(node, dict):
        return {k: _fill_secrets(v, found) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill_secrets(v, found) for v in node]
    return node


@dataclass
class BenchStack:
    evaluation: mockrun.Evaluation
    config: Any  # components.config.StackConfig
    plaintexts: dict[str, str]  # config key path -> the random value the bench put there

    def claw_secrets(self, claw: str) -> dict[str, str]:
        return dict(self.config.claw_secrets.get(claw, {}))

    def brokered(self, claw: str) -> dict[str, str]:
        """NAME -> real value of the claw's brokered secrets (they reach its broker, never the claw)."""
        names = {b.name for b in next(c for c in self.config.claws if c.name == claw).broker}
        return {n: v for n, v in self.claw_secrets(claw).items() if n in names}

    def placeholder(self, claw: str, name: str) -> str:
        return placeholder(self.config.sealing_key, claw, name, self.claw_secrets(claw)[name])

    def claw_view(self, claw: str) -> dict[str, str]:
        """What the claw's environment holds: env-delivered values, and placeholders of brokered ones."""
        brokered = self.brokered(claw)
        return {n: (self.placeholder(claw, n) if n in brokered else v) for n, v in self.claw_secrets(claw).items()}

    def secret_values(self) -> list[str]:
        return list(self.plaintexts.values())


def bench_stack(scorecard: Scorecard) -> BenchStack:
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.local.yaml")
    plaintexts: dict[str, str] = {}
    raw = _fill_secrets(raw, plaintexts)
    config = parse_stack_config(raw, stack="local", secret_keys=secret_keys)
    evaluation = mockrun.evaluate("local", raw, secret_keys)
    scorecard.notes.append(f"secrets: {len(plaintexts)} encrypted stack values replaced by fresh random plaintexts")
    evaluation = bench_graph(evaluation, config, scorecard)
    return BenchStack(evaluation, config, plaintexts)


def proxy_hosts(config) -> list[dict[str, str]]:
    names = sorted({e.host for c in config.claws for e in c.egress})
    table = [{"host": n, "ip": OUTSIDE_IP} for n in names]
    table.append({"host": config.control_plane.host, "ip": METADATA_IP})
    return table


def bench_graph(evaluation: mockrun.Evaluation, config, scorecard: Scorecard) -> mockrun.Evaluation:
    """The program's graph with the two bench changes of the module docstring, nothing else."""
    claws = {c.name: c for c in config.claws}
    hosts = proxy_hosts(config)
    out: list[mockrun.Registered] = []
    configs: dict[str, str] = {}
    for r in evaluation.resources:
        if r.type == replay.LOCAL_COMMAND and r.name.endswith("-proxy-config"):
            claw = claws[r.name[: -len("-proxy-config")]]
            production = render_proxy_config(
                claw=claw.name, org=claw.org, allowlist=egress_allowlist(claw.egress, config.control_plane)
            )
            if r.inputs.get("stdin") != production:
                raise AssertionError(f"{r.name}: the program's proxy config is not the production rendering")
            text = render_proxy_config(
                claw=claw.name,
                org=claw.org,
                allowlist=egress_allowlist(claw.egress, config.control_plane),
                bench_allow_cidrs=[f"{OUTSIDE_IP}/32"],
            )
            configs[claw.name] = text
            r = dataclasses.replace(r, inputs={**r.inputs, "stdin": text})
        out.append(r)
    final: list[mockrun.Registered] = []
    for r in out:
        if r.type == replay.CONTAINER and r.name.endswith("-proxy"):
            claw = r.name[: -len("-proxy")]
            labels = [
                dict(l)
                if l["label"] != "clawstaff.config-sha256"
                else {"label": l["label"], "value": hashlib.sha256(configs[claw].encode()).hexdigest()}
                for l in r.inputs["labels"]
            ]
            if "hosts" in r.inputs:
                raise AssertionError(f"{r.name}: the program now sets hosts; the bench would overwrite them")
            r = dataclasses.replace(r, inputs={**r.inputs, "labels": labels, "hosts": hosts})
        final.append(r)
    scorecard.notes.append(
        f"proxies: squid.conf re-rendered with bench_allow_cidrs=[{OUTSIDE_IP}/32] "
        "(production config checked identical otherwise)"
    )
    scorecard.notes.append("proxies: hosts table " + ", ".join(f"{h['host']}={h['ip']}" for h in hosts))
    return dataclasses.replace(evaluation, resources=final)


def bench_broker_trust(evaluation: mockrun.Evaluation, ca_pem: str, scorecard: Scorecard) -> mockrun.Evaluation:
    """Each broker also trusts the outside stand-in's self-signed certificate for its upstream
    connections (BENCH_CA_ENV; production brokers trust the system CA bundle only)."""
    out = []
    for r in evaluation.resources:
        if r.type == replay.CONTAINER and any(str(e).startswith(BROKER_ENV + "=") for e in r.inputs.get("envs", [])):
            r = dataclasses.replace(r, inputs={**r.inputs, "envs": [*r.inputs["envs"], f"{BENCH_CA_ENV}={ca_pem}"]})
        out.append(r)
    scorecard.notes.append(f"brokers: {BENCH_CA_ENV} adds the outside server's certificate to the upstream trust")
    return dataclasses.replace(evaluation, resources=out)


# --- the outside world ------------------------------------------------------------------------------------

TLS_SERVER = r"""
import json, socket, ssl, sys, threading, time
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); ctx.load_cert_chain(sys.argv[1], sys.argv[2])
ctx.set_alpn_protocols(["http/1.1"])
record = open(sys.argv[3], "a", buffering=1)
lock = threading.Lock()
def http(t, port):
    # A client that negotiated http/1.1 gets an HTTP server that records what it received (the
    # broker's proof); /echo answers with the request's headers, as an endpoint that reflects them.
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = t.recv(65536)
        if not chunk: return
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [l.split(":", 1) for l in lines[1:] if ":" in l]
    length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
    while len(rest) < length:
        chunk = t.recv(65536)
        if not chunk: break
        rest += chunk
    with lock:
        record.write(json.dumps({"time": time.time(), "port": port,
                                 "request": lines[0], "headers": [[k.strip(), v.strip()] for k, v in headers],
                                 "body": rest.decode("latin-1")}) + "\n")
    body = ("\n".join(f"{k.strip()}: {v.strip()}" for k, v in headers) if lines[0].split(" ")[1].startswith("/echo")
            else "%s").encode() + b"\n"
    t.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nContent-Length: "
              + str(len(body)).encode() + b"\r\n\r\n" + body)
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        c, _ = s.accept()
        threading.Thread(target=one, args=(c, port), daemon=True).start()
def one(c, port):
    try:
        t = ctx.wrap_socket(c, server_side=True); t.settimeout(5)
        if t.selected_alpn_protocol() == "http/1.1":
            http(t, port)
        else:
            t.sendall(b"%s\n")
        t.close()
    except Exception:
        c.close()
for p in (443, 8443):
    threading.Thread(target=serve, args=(p,), daemon=True).start()
threading.Event().wait()
""" % (GREETING, GREETING)

# Plain TCP greeter and UDP echo on every host address, and on the metadata stand-in (port 80).
HOST_SERVICE = r"""
import socket, sys, threading
def tcp(addr, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(64)
    while True:
        c, peer = s.accept(); print("TCP", addr, port, peer[0], flush=True); c.sendall(b"HOST-SERVICE\n"); c.close()
def udp(addr, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((addr, port))
    while True:
        data, peer = s.recvfrom(2048); print("UDP", addr, port, peer[0], flush=True); s.sendto(data, peer)
threading.Thread(target=tcp, args=("0.0.0.0", %d), daemon=True).start()
threading.Thread(target=udp, args=("0.0.0.0", %d), daemon=True).start()
threading.Thread(target=tcp, args=("%s", 80), daemon=True).start()
threading.Event().wait()
""" % (HOST_SERVICE_TCP, HOST_SERVICE_UDP, METADATA_IP)

# Answers every A query with the outside server's address and logs every name it is asked.
DNS_SERVER = (
    r"""
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(2048)
    try:
        qid = struct.unpack(">H", data[:2])[0]; i, labels = 12, []
        while data[i]:
            labels.append(data[i + 1:i + 1 + data[i]].decode(errors="replace")); i += 1 + data[i]
        question = data[12:i + 5]
        print("QUERY", ".".join(labels).lower(), peer[0], flush=True)
        answer = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton("%s")
        s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer, peer)
    except Exception as e:
        print("BAD", repr(e), flush=True)
"""
    % OUTSIDE_IP
)


def _sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def _self_signed(names: list[str], workdir: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "clawstaff bench outside")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = workdir / "cert.pem", workdir / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class OutsideWorld:
    """Stand-ins for the internet, the host's services and the metadata service; all local."""

    def __init__(self, tls_names: list[str]):
        self.workdir = Path(tempfile.mkdtemp(prefix="clawbench-"))
        self.tls_names = tls_names
        self.processes: list[subprocess.Popen] = []
        self.cert_pem = ""
        self.dns_log = self.workdir / "dns.log"
        self.service_log = self.workdir / "service.log"
        self.tls_requests = self.workdir / "tls-requests.jsonl"  # what the TLS server received over HTTP

    def start(self) -> None:
        self.stop()  # a crashed earlier run may have left the namespace or interfaces
        _sh("ip", "netns", "add", NETNS)
        _sh("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS, "netns", NETNS)
        _sh("ip", "addr", "add", f"{OUTSIDE_GW}/24", "dev", VETH_HOST)
        _sh("ip", "link", "set", VETH_HOST, "up")
        for cmd in (
            ["ip", "link", "set", "lo", "up"],
            ["ip", "addr", "add", f"{OUTSIDE_IP}/24", "dev", VETH_NS],
            ["ip", "link", "set", VETH_NS, "up"],
            ["ip", "route", "add", "default", "via", OUTSIDE_GW],
        ):
            _sh("ip", "netns", "exec", NETNS, *cmd)
        # A dummy interface would do, but this kernel has no dummy driver: a veth pair whose both
        # ends stay in the host namespace carries the address just the same.
        _sh("ip", "link", "add", METADATA_IF, "type", "veth", "peer", "name", METADATA_IF + "-p")
        _sh("ip", "addr", "add", f"{METADATA_IP}/32", "dev", METADATA_IF)
        _sh("ip", "link", "set", METADATA_IF + "-p", "up")
        _sh("ip", "link", "set", METADATA_IF, "up")
        cert, key = _self_signed(self.tls_names, self.workdir)
        self.cert_pem = cert.read_text()
        python = "/usr/bin/python3"
        self._spawn(
            ["ip", "netns", "exec", NETNS, python, "-c", TLS_SERVER, str(cert), str(key), str(self.tls_requests)],
            self.workdir / "tls.log",
        )
        self._spawn([python, "-c", HOST_SERVICE], self.service_log)
        self._spawn([python, "-c", DNS_SERVER], self.dns_log)
        time.sleep(0.5)
        for p in self.processes:
            if p.poll() is not None:
                raise RuntimeError(f"an outside-world server exited at start: {p.args[:4]} (logs in {self.workdir})")
        # The TLS server holds its key in memory now: the private key leaves the disk at once.
        key.unlink()

    def _spawn(self, argv: list[str], log: Path) -> None:
        with open(log, "ab") as out:
            self.processes.append(
                subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
                )
            )

    def http_requests(self) -> list[dict]:
        """Every HTTP request the outside TLS server received (ALPN http/1.1), oldest first."""
        if not self.tls_requests.exists():
            return []
        return [json.loads(l) for l in self.tls_requests.read_text().splitlines() if l.strip()]

    def dns_queries(self) -> str:
        return self.dns_log.read_text() if self.dns_log.exists() else ""

    def service_hits(self) -> str:
        return self.service_log.read_text() if self.service_log.exists() else ""

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                os.killpg(p.pid, 9)  # our own child's process group, started with start_new_session
                p.wait(timeout=10)
        self.processes.clear()
        _sh("ip", "link", "del", METADATA_IF, check=False)
        _sh("ip", "link", "del", VETH_HOST, check=False)
        _sh("ip", "netns", "del", NETNS, check=False)

    def remove(self) -> None:
        """Stop, then remove the working directory (certificate, logs): nothing is left in /tmp."""
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


# --- probes inside a cage ---------------------------------------------------------------------------------

# Every probe runs isolated (-I): nothing the claw wrote (a usercustomize under HOME, a module in the
# working directory, PYTHON* variables) can run inside the probe and falsify what it reports.
PROBE_PYTHON = ["/usr/bin/python3", "-I"]

# Every probe program starts with this: a hard time limit, JSON out on the last line.
PRELUDE = """
import json, os, signal, socket, sys, time, errno
signal.alarm(%d)
ARG = json.loads(sys.argv[1]) if len(sys.argv) > 1 else None
def out(value):
    print(json.dumps(value), flush=True)
"""

# The control for a neighbour's latency "at rest": the same `docker exec` into the faulty cage, the
# same interpreter start and the same window as a fault, and then nothing. A fault's effect on the
# neighbour is its window against this one: what the test harness itself costs (an exec is work for
# dockerd, containerd and runc; the interpreter's start is CPU of the cage) is in both.
PLACEBO = """
time.sleep(ARG["seconds"])
out({"slept": ARG["seconds"]})
"""


# --- the audit trail's probe (tests/integration/test_isolation_audit_trail.py, tests/vm/test_vm_trail.py)

# A tool run, then the file operations of the issue, on the volume and in /tmp, and a refused write.
# The actions run in a child of the probe: the probe is started by `docker exec`, which runc starts
# as root, so it has no audit context (components/hostscripts/files/audit-base.rules); what it starts,
# as the claw's user, has one, as everything the claw itself starts does.
TRAIL_BODY = """
import errno, json, os, subprocess, sys
ARG = json.loads(sys.argv[1])
def out(value):
    print(json.dumps(value), flush=True)
import subprocess
tag = ARG["tag"]
subprocess.run(["/usr/bin/python3", "-I", "-c", "pass", tag], check=True)
bases = [base for base in ("/data", "/tmp") if os.path.isdir(base)]  # /data: a cage with a volume
for base in bases:
    path = f"{base}/{tag}-note"
    with open(path, "w") as f:
        f.write("kept")
    with open(path) as f:
        f.read()
    os.rename(path, path + "-renamed")
    os.chmod(path + "-renamed", 0o600)
    os.remove(path + "-renamed")
try:
    open(f"/etc/{tag}-refused", "w")
except OSError as error:
    refused = error.errno
out({"refused": errno.errorcode[refused], "bases": bases})
"""
TRAIL_ACTIONS = """
import subprocess
done = subprocess.run(["/usr/bin/python3", "-I", "-c", ARG["body"], json.dumps({"tag": ARG["tag"]})],
                      capture_output=True, text=True, check=True)
print(done.stdout, flush=True)
"""


def trail_arg(tag: str) -> dict:
    return {"tag": tag, "body": TRAIL_BODY}


def trail_steps(found, tag: str) -> list[tuple[str, str, str]]:
    """(action, what, result) of the events that name the run's tag, and of the refused write into
    /etc after them. The kernel names only the directory of a create that failed (`/etc/`): the name
    it was refused never became a path."""
    steps, started = [], False
    for event in found:
        argv = [a if "\n" not in a else "<program>" for a in event.argv or []]  # a probe's code, shortened
        what = " ".join(argv) if argv else " ".join(event.paths)
        refused = started and event.result != "ok" and event.paths == ["/etc/"]
        if tag in what or refused:
            steps.append((event.action, what, event.result))
            started = True
    return steps


def trail_expected(tag: str, said: dict) -> list[tuple[str, str, str]]:
    """What TRAIL_ACTIONS leaves in the claw's trail, in order. A read is recorded on the volume only:
    the read of /tmp is not a record, by design (docs/audit.md)."""
    want = [
        ("exec", f"/usr/bin/python3 -I -c <program> {json.dumps({'tag': tag})}", "ok"),  # the probe's child
        ("exec", f"/usr/bin/python3 -I -c pass {tag}", "ok"),  # the tool it runs
    ]
    for base in said["bases"]:
        path = f"{base}/{tag}-note"
        want += [("create", path, "ok")] + ([("read", path, "ok")] if base == "/data" else [])
        want += [
            ("rename", f"{path} {path}-renamed", "ok"),
            ("chmod", f"{path}-renamed", "ok"),
            ("delete", f"{path}-renamed", "ok"),
        ]
    return want + [("write", "/etc/", said["refused"])]


@dataclass
class Bench:
    stack: BenchStack
    deployment: replay.Deployment
    outside: OutsideWorld
    scorecard: Scorecard
    torn_down: bool = False
    teardown_errors: list[str] = field(default_factory=list)
    volume_marker: tuple[str, str] | None = None  # (content, file name) the claw wrote to its volume
    # Before the first cage existed: every trail query of the bench starts here (ausearch -ts), so it
    # skips the host's older audit logs instead of decoding all of them (a host's history is GiBs).
    started: datetime.datetime = field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc))

    # -- docker facts
    def claw(self, name: str):
        return self.deployment.client.containers.get(f"claw-{name}")

    def proxy(self, name: str):
        return self.deployment.client.containers.get(f"proxy-{name}")

    def addresses(self, container) -> dict[str, str]:
        container.reload()
        return {n: v["IPAddress"] for n, v in container.attrs["NetworkSettings"]["Networks"].items()}

    def gateway(self, network: str) -> str:
        net = self.deployment.client.networks.get(network)
        return net.attrs["IPAM"]["Config"][0]["Gateway"].split("/")[0]

    # -- running code in a cage as the claw's user (the image's user; no shell in it)
    def exec(
        self,
        container_name: str,
        code: str,
        arg: Any = None,
        *,
        timeout: int = 30,
        env: dict[str, str] | None = None,
        entrypoint: list[str] | None = None,
    ) -> subprocess.CompletedProcess:
        argv = ["docker", "exec", "-i"]
        for k, v in (env or {}).items():
            argv += ["-e", f"{k}={v}"]
        program = textwrap.dedent(PRELUDE % timeout) + textwrap.dedent(code)
        argv += [container_name, *(entrypoint or PROBE_PYTHON), "-c", program]
        if arg is not None:
            argv.append(json.dumps(arg))
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 15)

    def probe(self, container_name: str, code: str, arg: Any = None, *, timeout: int = 30) -> Any:
        result = self.exec(container_name, code, arg, timeout=timeout)
        lines = [l for l in result.stdout.splitlines() if l.strip()]
        if result.returncode != 0 or not lines:
            raise AssertionError(
                f"probe in {container_name} failed ({result.returncode}): {result.stderr.strip()[-1500:]}"
            )
        return json.loads(lines[-1])

    def popen_probe(self, container_name: str, code: str, arg: Any = None, *, timeout: int = 30) -> subprocess.Popen:
        program = textwrap.dedent(PRELUDE % timeout) + textwrap.dedent(code)
        argv = ["docker", "exec", "-i", container_name, *PROBE_PYTHON, "-c", program]
        if arg is not None:
            argv.append(json.dumps(arg))
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    # -- teardown, once, recorded
    def teardown(self) -> list[str]:
        if not self.torn_down:
            self.teardown_errors = replay.teardown(self.deployment)
            self.torn_down = True
        return self.teardown_errors


def cage_cgroup_dirs(claw: str) -> list[Path]:
    """The cage's parent cgroup in every v1 hierarchy (or the v2 one) that has it."""
    root = Path("/sys/fs/cgroup")
    candidates = [root / "clawstaff" / claw] + [d / "clawstaff" / claw for d in root.iterdir() if d.is_dir()]
    return [c for c in candidates if c.is_dir()]


def local_timeline(bench: Bench, cage: str) -> list:
    """The cage's whole timeline as `tools.audit --stack local` reads it: audit records, limit hits
    from the kernel's log, API calls from its proxy's log."""
    orgs = {c.name: c.org for c in bench.stack.config.claws}
    return audit.timeline(cage, audit.local_run, orgs, bench.started, cgroup=audit.cage_cgroup(cage, "cgroupfs"))


def cgroup_file(controller: str, claw: str, name: str, container_id: str | None = None) -> Path:
    base = Path("/sys/fs/cgroup") / controller / "clawstaff" / claw
    return (base / container_id / name) if container_id else base / name


def start_bench(scorecard: Scorecard) -> Bench:
    """Build the bench's graph, bring up the outside world, replay the stack. Cleans up on failure."""
    stack = bench_stack(scorecard)
    names = sorted({e.host for c in stack.config.claws for e in c.egress} | {stack.config.control_plane.host})
    client = docker.from_env(timeout=120)
    pinned = {stack.config.proxy_image, *(c.image for c in stack.config.claws)}
    for image in sorted(pinned):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise RuntimeError(
                f"Pulumi.local.yaml pins {image}, which this engine does not have: build the images "
                "with `make images` (reproducible: the same IDs) and check the pins"
            ) from None
    # The host firewall and sysctls this tree renders (tools.engine), as a provisioned host has them:
    # the engine is shared, and another tree may have loaded its own rendering.
    resolv = Path("/etc/resolv.conf").read_text() if Path("/etc/resolv.conf").exists() else ""
    engine.load_firewall(engine.EnginePaths(), engine.desired_files(resolv)[1])
    sysctls = engine.apply_sysctls()
    scorecard.notes.append("host: this tree's firewall loaded (tools.engine); " + ", ".join(sysctls))
    leftovers = replay.purge(stack.evaluation)
    if leftovers:
        raise RuntimeError("could not clear an earlier bench's leftovers: " + "; ".join(leftovers))
    started = datetime.datetime.now(datetime.timezone.utc)
    outside = OutsideWorld(names)
    try:
        outside.start()
        stack.evaluation = bench_broker_trust(stack.evaluation, outside.cert_pem, scorecard)
        deployment = replay.deploy(stack.evaluation)
    except BaseException:
        outside.remove()
        raise
    return Bench(stack, deployment, outside, scorecard, started=started)
