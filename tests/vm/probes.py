"""How the VM tier's isolation probes run on the VM: a Python program inside a cage container as the
container's own user (`docker exec` over the pinned SSH connection, the isolation bench's prelude and
`python3 -I`), the neighbour's self-measurement beside a fault, and the host-side facts the probes
read (cgroup files, conntrack counts, memory, disk, CPU time of the engine).

The programs shared with the engine's isolation suite are imported from it (one source); the ones
here differ because the VM is ~27x slower (TCG) or because only this host shows the fact."""

from __future__ import annotations

import json
import re
import shlex
import queue
import subprocess
import textwrap
import threading
import time
from typing import Any

from components import hostscripts
from tests.integration.bench import PRELUDE, PROBE_PYTHON
from tests.integration.test_isolation_network import REACH, THROUGH_PROXY
from tests.vm.conftest import PROBE, ssh, ssh_argv
from tools import mockrun, vm

MiB = 1024**2
METADATA_IP = "169.254.169.254"
# The host reads the metadata stand-in's one file (tests/vm/test_vm_isolation.py).
FETCH = (
    'python3 -I -c "import urllib.request; print(urllib.request.urlopen('
    f"'http://{METADATA_IP}/user-data', timeout=5).read().decode())\""
)


def _docker_exec(container: str, code: str, arg: Any, timeout: int, interactive: bool = False) -> str:
    program = textwrap.dedent(PRELUDE % timeout) + textwrap.dedent(code)
    argv = ["docker", "exec", *(["-i"] if interactive else []), container, *PROBE_PYTHON, "-c", program]
    if arg is not None:
        argv.append(json.dumps(arg))
    return shlex.join(argv)


# Every probe's exec is bounded on the VM too, below the ssh client's own timeout: a `docker exec` whose
# container ended under it (a gVisor sandbox killed by the OOM killer) may never return, and `timeout`
# then ends it with 124 (137 after the kill) instead of the client raising. The probe's own PRELUDE
# bounds it first, at `timeout`.
EXEC_GRACE_S, EXEC_KILL_AFTER_S, SSH_GRACE_S = 50, 10, 60


def bounded(command: str, timeout: int) -> str:
    """`command` ended on the VM after timeout + EXEC_GRACE_S seconds (killed EXEC_KILL_AFTER_S later)."""
    return f"timeout --kill-after={EXEC_KILL_AFTER_S} {timeout + EXEC_GRACE_S} {command}"


def run(machine, container: str, code: str, arg: Any = None, *, timeout: int = 60) -> subprocess.CompletedProcess:
    return ssh(
        machine,
        bounded(_docker_exec(container, code, arg, timeout), timeout),
        timeout=timeout + SSH_GRACE_S + EXEC_KILL_AFTER_S,
    )


def probe(machine, container: str, code: str, arg: Any = None, *, timeout: int = 60) -> Any:
    """The probe's last line of output, as JSON; a failed probe fails the test with its stderr."""
    done = run(machine, container, code, arg, timeout=timeout)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    if done.returncode != 0 or not lines:
        raise AssertionError(f"probe in {container} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(lines[-1])


class Running:
    """A probe that runs beside the test: its stdin stays open until `stop` (the program may wait for
    that); its output lines are read with `readline`. Both pipes are drained by threads, so no read
    waits past its timeout: a probe that hangs (a stuck `docker exec`, a VM gone quiet) fails the test
    that waits on it instead of holding the tier."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)  # fmt: skip
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.errors: list[str] = []
        self._readers = [threading.Thread(target=self._drain_stdout, daemon=True),
                         threading.Thread(target=self._drain_stderr, daemon=True)]  # fmt: skip
        for reader in self._readers:
            reader.start()

    def _drain_stdout(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)  # end of output

    def _drain_stderr(self) -> None:
        for line in self.proc.stderr:
            self.errors.append(line)

    def stderr(self) -> str:
        return "".join(self.errors)

    def readline(self, timeout: float = 300) -> Any:
        """The next JSON line; fails the test after `timeout` seconds of silence."""
        try:
            line = self.lines.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(
                f"the probe said nothing for {timeout:.0f} s (killed): {self.stderr()[-1500:]}"
            ) from None
        if line is None:
            self.lines.put(None)
            self._readers[1].join(timeout=10)  # all of stderr
            raise AssertionError(f"the probe ended early ({self.proc.wait(timeout=60)}): {self.stderr()[-1500:]}")
        return json.loads(line)

    def stop(self, timeout: float = 120) -> tuple[int, list, str]:
        """Close the probe's stdin, wait: (exit code, the JSON lines it printed since the last read,
        stderr)."""
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"the probe did not end {timeout:.0f} s after its input closed (killed)") from None
        for reader in self._readers:
            reader.join(timeout=30)
        rest = []
        while not self.lines.empty() and (line := self.lines.get_nowait()) is not None:
            if line.strip():
                rest.append(json.loads(line))
        return self.proc.returncode, rest, self.stderr()

    def send(self, line: str) -> None:
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()


def start(machine, container: str, code: str, arg: Any = None, *, timeout: int = 120) -> Running:
    """A probe beside the test (`Running`); `timeout` bounds the program inside the container too."""
    return Running([*ssh_argv(machine), _docker_exec(container, code, arg, timeout, interactive=True)])


# The neighbour measures itself for as long as the module runs: a fixed bit of CPU work plus a TCP
# round trip to its own proxy, every 50 ms. Each line on its stdin asks for the figures of the
# samples since the previous line (one JSON line back); end of input ends it.
MEASURE = """
import hashlib, threading
samples, fails, lock = [], [0], threading.Lock()
def serve():
    global samples
    while sys.stdin.readline():
        with lock:
            taken, samples, failed = samples, [], fails[0]
            fails[0] = 0
        s = sorted(taken) or [0.0]
        q = lambda f: round(s[min(len(s) - 1, int(f * len(s)))], 1)
        out({"n": len(taken), "fails": failed, "p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": round(s[-1], 1)})
    os._exit(0)
threading.Thread(target=serve, daemon=True).start()
out({"ready": True})
while True:
    t = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(16): h.update(b"x" * 4096)
    try: socket.create_connection(("egress-proxy", 3128), 5).close(); ok = True
    except OSError: ok = False
    with lock:
        samples.append((time.perf_counter() - t) * 1000)
        fails[0] += not ok
    time.sleep(0.05)
"""


class Neighbour:
    """The neighbour's claw measuring its own latency, all along; `window()` gives the figures of the
    samples since the previous call."""

    def __init__(self, machine, claw: str):
        self.probe = start(machine, f"claw-{claw}", MEASURE, timeout=7200)
        assert self.probe.readline() == {"ready": True}

    def window(self) -> dict:
        self.probe.send("")
        return self.probe.readline(timeout=120)

    def stop(self) -> None:
        self.probe.stop()


# --- host-side facts, read on the VM --------------------------------------------------------------


def script_facts(host, resource: str) -> dict:
    """The facts line of a host command the program registered (its size, limits, ...)."""
    create = next(r for r in host.evaluation.resources if r.name == resource).inputs["create"]
    return hostscripts.script_facts(shlex.split(mockrun.unwrap_secrets(create))[2])


def wait_answers(machine, claw: str, tries: int = 60) -> bool:
    """The claw's container runs a probe (again: after Docker restarted it); False after `tries` tries."""
    for _ in range(tries):
        if run(machine, f"claw-{claw}", "out(1)", timeout=60).returncode == 0:
            return True
        time.sleep(5)
    return False


def restarts_and_state(machine, claw: str) -> str:
    fmt = "'{{.RestartCount}} {{.State.Status}}'"
    return " / ".join(ssh(machine, f"docker inspect -f {fmt} {c}-{claw}").stdout.strip() for c in ("claw", "proxy"))


def keyed(text: str) -> dict[str, int]:
    """A cgroup `key value` file (memory.events, memory.stat, cpu.stat) as a dict."""
    return {k: int(v) for k, v in (line.split() for line in text.splitlines() if len(line.split()) == 2)}


def cgroup_file(machine, directory: str, name: str) -> str:
    done = ssh(machine, f"cat {shlex.quote(directory + '/' + name)}")  # a slice's name holds a backslash
    assert done.returncode == 0, done.stderr
    return done.stdout


def meminfo(machine) -> dict[str, int]:
    """/proc/meminfo in KiB."""
    return {line.split(":")[0]: int(line.split()[1]) for line in ssh(machine, "cat /proc/meminfo").stdout.splitlines()}


def conntrack(machine, pid: str | None = None) -> int:
    """Tracked connections of the VM's own network namespace, or of the one of process `pid`."""
    enter = f"nsenter -t {pid} -n " if pid else ""
    return int(ssh(machine, f"{enter}cat /proc/sys/net/netfilter/nf_conntrack_count").stdout)


def pid_of(machine, container: str) -> str:
    return ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' {container}").stdout.strip()


def root_free(machine) -> int:
    return int(ssh(machine, "df -B1 --output=avail / | tail -1").stdout)


# CPU seconds the engine has spent so far: dockerd, containerd and every containerd shim.
ENGINE_CPU = """
import os
ticks = 0
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        if open(f"/proc/{p}/comm").read().strip() in ("dockerd", "containerd", "containerd-shim"):
            ticks += sum(map(int, open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[11:13]))
    except OSError:
        pass
print(ticks / os.sysconf("SC_CLK_TCK"))
"""


def engine_cpu_s(machine) -> float:
    done = ssh(machine, "python3 -I -", input=ENGINE_CPU)
    assert done.returncode == 0, done.stderr
    return float(done.stdout)


# --- lateral traffic: what answers the probe cage's claw --------------------------------------------


def addresses(machine, container: str) -> dict[str, str]:
    """network name -> the container's IPv4 address on it."""
    nets = json.loads(ssh(machine, f"docker inspect -f '{{{{json .NetworkSettings.Networks}}}}' {container}").stdout)
    return {name: n["IPAddress"] for name, n in nets.items() if n.get("IPAddress")}


def host_addresses(machine) -> dict[str, str]:
    """Every IPv4 address of the VM but loopback: eth0 (VM_IP), the bridges' gateways, the stand-in."""
    found = {}
    for line in ssh(machine, "ip -4 -o addr show").stdout.splitlines():
        fields = line.split()
        if not fields[3].startswith("127."):
            found[f"{fields[1]} {fields[3]}"] = fields[3].split("/")[0]
    return found


# pids.max refuses forks, not migrations: a `docker exec` (the health check, a probe) joins the cage's
# cgroup even at the limit, so pids.peak may pass pids.max by the execs that joined at that moment.
MIGRATED = 2

TCP = [22, 53, 80, 443, 2375, 2376, 3128, 8080, vm.APT_PROXY_PORT]
UDP = [53, 123, 3128]


def reach(machine, targets: dict[str, str], claw: str = PROBE) -> dict[str, dict]:
    arg = {"targets": sorted(set(targets.values())), "tcp": TCP, "udp": UDP, "wait": 3}
    return probe(machine, f"claw-{claw}", REACH, arg, timeout=240)


def reached(result: dict) -> bool:
    return bool(result["open"]) or "REPLY" in result["udp"].values() or result["icmp"] == "REPLY"


def through_proxy(machine, cases: dict[str, str], claw: str = PROBE) -> dict[str, int]:
    """label -> the status the cage's own proxy answers to CONNECT host:port."""
    requests = [[label, f"CONNECT {hp} HTTP/1.1\r\nHost: {hp}\r\n\r\n", ""] for label, hp in cases.items()]
    res = probe(machine, f"claw-{claw}", THROUGH_PROXY, {"ca": "", "cases": requests}, timeout=120)
    return {label: r["status"] for label, r in res.items()}


def summary(results: dict[str, dict]) -> str:
    errors: dict[str, int] = {}
    for r in results.values():
        for k, n in r["tcp_errors"].items():
            errors[k] = errors.get(k, 0) + n
    udp = sorted({v for r in results.values() for v in r["udp"].values()})
    icmp = sorted({r["icmp"] for r in results.values()})
    return f"TCP {errors}, UDP {udp}, ICMP {icmp}"


# --- DNS leaving the VM: counted on both ends of its only link -----------------------------------------

VM_DNS_TABLE, TIER_DNS_TABLE = "clawprobe_dns", f"clawprobe_dns{vm.SLOT}"


def dns_counter_tables() -> tuple[str, str]:
    """nft tables counting port-53 packets: (on the VM, leaving by eth0; on this machine, arriving
    from the VM's tap), for `nft -f -`."""
    rule = "meta l4proto { tcp, udp } th dport 53 counter"
    chain = (
        "table inet {} {{\n  chain {} {{\n    type filter hook {} priority {}; policy accept;\n    {} {}\n  }}\n}}\n"
    )
    return (
        chain.format(VM_DNS_TABLE, "post", "postrouting", 300, 'oifname "eth0"', rule),
        chain.format(TIER_DNS_TABLE, "pre", "prerouting", -400, f'iifname "{vm.TAP}"', rule),
    )


def dns_counters(machine) -> tuple[int, int]:
    """Packets to port 53 seen leaving the VM: (on the VM's eth0, arriving on this machine's tap)."""
    count = lambda text: sum(int(n) for n in re.findall(r"counter packets (\d+)", text))  # noqa: E731
    tier = subprocess.run(["nft", "list", "table", "inet", TIER_DNS_TABLE], capture_output=True, text=True)
    return count(ssh(machine, f"nft list table inet {VM_DNS_TABLE}").stdout), count(tier.stdout)


# --- programs that only this tier runs ------------------------------------------------------------

# Loopback TCP connections whose receiving end never reads: every byte sent stays in the kernel's
# socket buffers (the sender's and the receiver's queue), up to a budget well below the claw's memory
# limit (the probe shows where the kernel charges them; the limit does the bounding). Holds them
# until stdin closes.
SOCKET_HOG = """
srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(256)
held, queued, chunk = [], 0, b"x" * 65536
deadline, budget = time.time() + ARG["seconds"], ARG["budget_mib"] << 20
for _ in range(ARG["conns"]):
    if time.time() > deadline or queued >= budget: break
    c = socket.create_connection(srv.getsockname()); a, _ = srv.accept()
    c.setblocking(False)
    while time.time() < deadline and queued < budget:
        try: queued += c.send(chunk)
        except OSError: break
    held.append((c, a))
out({"conns": len(held), "queued_mib": round(queued / 2**20, 1)})
sys.stdin.read()
out({"released": len(held)})
"""

# Resolve a unique outside name as the claw's libc does (its resolv.conf), and ask the cage's own
# proxy to open a tunnel to it: neither may send a query out of the VM.
LOOKUP = """
res = {"resolv.conf": " ".join(l for l in open("/etc/resolv.conf").read().split("\\n") if l and l[0] != "#")}
try: res["getaddrinfo"] = socket.getaddrinfo(ARG["name"], 443)[0][4][0]
except socket.gaierror as e: res["getaddrinfo"] = "failed: " + str(e)
try:
    s = socket.create_connection(("egress-proxy", 3128), 10)
    s.sendall(("CONNECT %s:443 HTTP/1.1\\r\\nHost: %s:443\\r\\n\\r\\n" % (ARG["proxied"], ARG["proxied"])).encode())
    res["proxy"] = s.recv(200).split(b"\\r\\n")[0].decode(); s.close()
except OSError as e: res["proxy"] = "failed: " + str(e)
out(res)
"""

# The claw copies its own secret (from its process's environment) and a marker into its volume.
INTO_VOLUME = """
secret = None
for p in os.listdir("/proc"):
    try: env = open(f"/proc/{p}/environ", "rb").read().split(b"\\0")
    except OSError: continue
    secret = next((e.split(b"=", 1)[1] for e in env if e.startswith(ARG["var"].encode() + b"=")), secret)
with open(os.path.join(ARG["dir"], ARG["marker"]), "wb") as f:
    f.write(b"%s\\n%s\\n" % (ARG["marker"].encode(), secret or b"")); f.flush(); os.fsync(f.fileno())
out({"secret copied": secret is not None})
"""


def disk_hits(path, needles: list[bytes], chunk: int = 16 * MiB) -> dict[bytes, int]:
    """How often each needle occurs in the raw disk image, read on this machine: only the file's data
    extents (SEEK_DATA/SEEK_HOLE), since the image is sparse; chunks overlap by the longest needle."""
    import os

    hits = dict.fromkeys(needles, 0)
    overlap = max(len(n) for n in needles) - 1
    with open(path, "rb") as f:
        fd, size, offset = f.fileno(), os.fstat(f.fileno()).st_size, 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after offset
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            pos = start
            while pos < end:
                f.seek(max(start, pos - overlap))
                block = f.read(min(chunk, end - pos) + (pos - max(start, pos - overlap)))
                skip = pos - max(start, pos - overlap)  # a needle inside the overlap was counted already
                for n in needles:
                    i = block.find(n)
                    while i != -1:
                        if i + len(n) > skip:
                            hits[n] += 1
                        i = block.find(n, i + 1)
                pos += chunk
            offset = end
    return hits
