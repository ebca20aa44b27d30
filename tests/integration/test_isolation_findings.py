"""The attack-findings issue (issue 12): each finding's attack, replayed against the bench's cages as
the claw's own user. docs/attack-findings.md says, per finding, what the fix is, what stays residual
and why; a residual finding's probe bounds what the attacker gets.

Latency figures (the neighbour's p50/p95 during a flood) go into the scorecard's latency table; the
tests assert that the neighbour keeps answering, never a time."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from components import seccomp
from components.egress import parse_access_line
from tests.integration.bench import CAGE_A, CAGE_B
from tests.integration.test_isolation_limits import PAIRED_INTERVAL, _finish, _measure_b, rest_window
from tests.integration.test_isolation_network import THROUGH_PROXY

pytestmark = pytest.mark.integration
GROUP = "findings"


@pytest.fixture(scope="module")
def rest(isolation_bench):
    result, _ = rest_window(isolation_bench)
    isolation_bench.scorecard.latency.append(
        {"fault": "at rest (findings; A runs the placebo)", "neighbour": CAGE_B, **result}
    )
    return result


def _neighbour_row(bench, fault: str, during: dict, rest: dict) -> bool:
    """B keeps answering (connectivity intact); its latency is a figure in the scorecard, not a test."""
    bench.scorecard.latency.append({"fault": fault, "neighbour": CAGE_B, **during})
    ratio = round(during["p95_ms"] / rest["p95_ms"], 2) if rest["p95_ms"] else None
    ok = during["fails"] == 0 and during["n"] >= 10
    bench.scorecard.record(
        GROUP,
        f"{CAGE_B} connectivity during: {fault}",
        "answers every time (latency: the scorecard's latency table)",
        f"n={during['n']} fails={during['fails']} p95={during['p95_ms']} ms ({ratio}x rest {rest['p95_ms']} ms)",
        ok,
    )
    return ok


# --- finding 6: code planted in /tmp runs in later interpreters ----------------------------------------

PLANT = """
ver = "python%d.%d" % sys.version_info[:2]
payload = "open(%r, 'a').write(__name__ + '\\\\n')\\n" % ARG["marker"]
home = os.environ.get("HOME", "")
targets = [f"/tmp/.local/lib/{ver}/site-packages/usercustomize.py", "/tmp/sitecustomize.py",
           "/tmp/usercustomize.py", "/tmp/json.py", "/tmp/socket.py"]
if home and not home.startswith("/tmp"):
    targets.append(f"{home}/.local/lib/{ver}/site-packages/usercustomize.py")
planted, refused = [], {}
for t in targets:
    try:
        os.makedirs(os.path.dirname(t), exist_ok=True)
        with open(t, "w") as f: f.write(payload)
        planted.append(t)
    except OSError as e:
        refused[t] = errno.errorcode.get(e.errno, str(e))
out({"planted": planted, "refused": refused, "home": home, "cwd": os.getcwd()})
"""

CLEAN = """
import shutil
shutil.rmtree("/tmp/.local", ignore_errors=True)
ran = open(ARG["marker"]).read().split() if os.path.exists(ARG["marker"]) else []
for f in ("/tmp/sitecustomize.py", "/tmp/usercustomize.py", "/tmp/json.py", "/tmp/socket.py", ARG["marker"]):
    try: os.unlink(f)
    except FileNotFoundError: pass
out(ran)
"""


def test_code_planted_in_tmp_runs_in_no_later_interpreter(isolation_bench):
    bench = isolation_bench
    name = f"claw-{CAGE_A}"
    marker = f"/tmp/planted-ran-{secrets.token_hex(4)}"
    planted = bench.probe(name, PLANT, {"marker": marker})
    claw = bench.claw(CAGE_A)
    claw.reload()
    health = claw.attrs["Config"]["Healthcheck"]["Test"]
    runs = {
        "the health check (its configured command)": subprocess.run(
            ["docker", "exec", name, *health[1:]], capture_output=True, text=True, timeout=30
        ),
        "an operator's `docker exec ... python3 -c`": subprocess.run(
            ["docker", "exec", name, "python3", "-c", "import json, socket; print('operator')"],
            capture_output=True,
            text=True,
            timeout=30,
        ),
        "an isolation probe": bench.exec(name, "out('probe')"),
    }
    ran = bench.probe(name, CLEAN, {"marker": marker})
    ok = health[0] == "CMD" and planted["planted"] and not ran
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: usercustomize/sitecustomize/json.py/socket.py planted in /tmp, then 3 interpreters start",
        "none of the planted code runs (HOME and working directory read-only; -I for checks and probes)",
        {
            "HOME": planted["home"],
            "cwd": planted["cwd"],
            "planted": planted["planted"],
            "refused": planted["refused"],
            "planted code ran in": ran or "nothing",
            "exit codes": {k: r.returncode for k, r in runs.items()},
            "health check": " ".join(health[1:3]),
        },
        ok,
    )
    assert ok, (planted, ran)
    assert all(r.returncode == 0 for r in runs.values()), {k: r.stderr[-300:] for k, r in runs.items()}


# --- findings 7, 10, 11: the seccomp profile -----------------------------------------------------------

SYSCALLS = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def raw(nr, *args):
    rc = libc.syscall(nr, *args)
    return "SUCCEEDED" if rc >= 0 else errno.errorcode.get(ctypes.get_errno(), "?")
res = {"io_uring_setup": raw(425, 1, None), "io_uring_enter": raw(426, -1, 0, 0, 0, None, 0),
       "io_uring_register": raw(427, -1, 0, None, 0)}
for label, family, kind in (("socket(AF_VSOCK)", 40, socket.SOCK_STREAM), ("socket(AF_ALG)", 38, socket.SOCK_SEQPACKET),
                            ("socket(AF_TIPC)", 30, socket.SOCK_RDM), ("socket(AF_INET) (control)", 2, socket.SOCK_STREAM),
                            ("socket(AF_UNIX) (control)", 1, socket.SOCK_STREAM)):
    try: socket.socket(family, kind).close(); res[label] = "SUCCEEDED"
    except OSError as e: res[label] = errno.errorcode.get(e.errno, str(e))
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.ptrace.restype = ctypes.c_long
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH = 0x4206, 0x4207, 17
rc = libc.ptrace(PTRACE_SEIZE, 1, None, None)
res["ptrace(SEIZE) of the cage's init (pid 1)"] = "SUCCEEDED" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
if rc == 0:  # stop it and let it go again: what the attacker did, without leaving it stopped
    libc.ptrace(PTRACE_INTERRUPT, 1, None, None); time.sleep(0.2)
    res["init state while traced"] = [l for l in open("/proc/1/status") if l.startswith("State:")][0].split()[1]
    libc.ptrace(PTRACE_DETACH, 1, None, None)
res["process_vm_readv(init)"] = raw(310, 1, None, 0, None, 0, 0)
out(res)
"""


def test_the_projects_seccomp_profile_is_on_both_cage_containers(isolation_bench):
    bench = isolation_bench
    observed, ok = {}, True
    for role, container in (("claw", bench.claw(CAGE_A)), ("proxy", bench.proxy(CAGE_A))):
        container.reload()
        opts = container.attrs["HostConfig"]["SecurityOpt"] or []
        profiles = [json.loads(o.split("=", 1)[1]) for o in opts if o.startswith("seccomp=")]
        same = profiles == [seccomp.profile()]
        observed[role] = f"seccomp profile = components.seccomp: {same}; other options: " + ", ".join(
            o for o in opts if not o.startswith("seccomp=")
        )
        ok = ok and same
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: seccomp profile of claw and proxy (docker inspect)",
        "the project's own profile on both, whatever the engine's default",
        observed,
        ok,
    )
    assert ok, observed


def test_io_uring_vsock_and_ptrace_of_init_are_refused(isolation_bench):
    bench = isolation_bench
    res = bench.probe(f"claw-{CAGE_A}", SYSCALLS)
    scope = Path("/proc/sys/kernel/yama/ptrace_scope")
    refused = {k: v for k, v in res.items() if "control" not in k and k != "init state while traced"}
    controls = {k: v for k, v in res.items() if "control" in k}
    ok = all(v == "EPERM" for v in refused.values()) and all(v == "SUCCEEDED" for v in controls.values())
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: io_uring, AF_VSOCK/AF_ALG/AF_TIPC sockets, ptrace and process_vm_readv of its own init",
        "EPERM from the profile (AF_INET, AF_UNIX still work)",
        {
            **res,
            "host kernel.yama.ptrace_scope": scope.read_text().strip() if scope.exists() else "not in this kernel",
        },
        ok,
    )
    assert ok, res


def _elf_calling_io_uring_setup() -> bytes:
    """A static x86-64 ELF: io_uring_setup(1, NULL), then exit(-result): 1 = EPERM (refused by the
    filter), 14 = EFAULT (the kernel ran the syscall)."""
    import struct

    code = bytes.fromhex("b8a9010000bf0100000031f60f05f7d889c7b83c0000000f05")
    base, entry = 0x400000, 0x400000 + 64 + 56
    ident = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8)
    ehdr = ident + struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, 64, 0, 0, 64, 56, 1, 0, 0, 0)
    total = 64 + 56 + len(code)
    return ehdr + struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000) + code


MEMFD_EXEC = """
import base64, ctypes
elf = base64.b64decode(ARG["elf"])
libc = ctypes.CDLL(None, use_errno=True)
def run(path):
    pid = os.fork()
    if pid == 0:
        try: os.execv(path, ["native"])
        except OSError as e: os.write(2, errno.errorcode.get(e.errno, "?").encode()); os._exit(100)
    return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
res = {}
with open("/tmp/native", "wb") as f: f.write(elf)
os.chmod("/tmp/native", 0o755)
res["exec from /tmp (noexec)"] = run("/tmp/native"); os.unlink("/tmp/native")
fd = libc.memfd_create(b"native", 0)
if fd < 0:
    res["memfd_create"] = errno.errorcode.get(ctypes.get_errno(), "?")
else:
    os.write(fd, elf)
    res["memfd_create"] = "SUCCEEDED"
    res["exec of the memfd: exit status (1 = io_uring_setup got EPERM, 14 = it ran)"] = run(f"/proc/self/fd/{fd}")
out(res)
"""


def test_native_code_from_a_memfd_runs_under_the_same_filter(isolation_bench):
    """Finding 11 is accepted as residual (docs/attack-findings.md): noexec /tmp is no barrier to
    native code. The bound: native code gets exactly the claw's filter, here refusing io_uring."""
    import base64

    bench = isolation_bench
    res = bench.probe(f"claw-{CAGE_A}", MEMFD_EXEC, {"elf": base64.b64encode(_elf_calling_io_uring_setup()).decode()})
    status = res.get("exec of the memfd: exit status (1 = io_uring_setup got EPERM, 14 = it ran)")
    ok = res["exec from /tmp (noexec)"] == 100 and status == 1
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: memfd_create + execve of a static ELF that calls io_uring_setup",
        "residual: it runs (docs/attack-findings.md); bounded: the same seccomp filter (EPERM), noexec /tmp holds",
        res,
        ok,
    )
    assert ok, res


# --- findings 9 and 10: pid 1's environment, the key file, and pid 1's duties ---------------------------

PID1 = """
import glob
res = {}
try:
    open("/proc/1/environ", "rb").read(); res["read /proc/1/environ"] = "SUCCEEDED"
except OSError as e:
    res["read /proc/1/environ"] = errno.errorcode.get(e.errno, str(e))
try:
    os.listdir("/proc/1/fd"); res["list /proc/1/fd"] = "SUCCEEDED"
except OSError as e:
    res["list /proc/1/fd"] = errno.errorcode.get(e.errno, str(e))
res["pid 1 cmdline"] = [a.decode() for a in open("/proc/1/cmdline", "rb").read().split(b"\\0") if a][:3]
res["own key readable"] = bool(open("/run/clawcage/key").read().strip())
# An orphan: a child that leaves a grandchild behind; pid 1 must reap it when it exits.
child = os.fork()
if child == 0:
    if os.fork() == 0:
        time.sleep(0.3); os._exit(0)
    os._exit(0)
os.waitpid(child, 0)
time.sleep(1.5)
res["zombies"] = [p for p in glob.glob("/proc/[0-9]*/stat") if open(p).read().rsplit(")", 1)[1].split()[0] == "Z"]
out(res)
"""


def test_pid1_is_cage_init_closed_to_the_claw_and_it_reaps(isolation_bench):
    """Findings 9 and 10 (docs/attack-findings.md). pid 1 is cage-init, non-dumpable: the claw, same uid,
    cannot read its environment (which holds the sealed blob), list its fds or trace it; it reaps orphans.
    The key file stays readable for restarts (residual, documented): it opens only A's own blob."""
    bench = isolation_bench
    res = bench.probe(f"claw-{CAGE_A}", PID1)
    ok = (
        res["read /proc/1/environ"] == "EACCES"
        and res["list /proc/1/fd"] == "EACCES"
        and "/usr/local/bin/cage-init" in res["pid 1 cmdline"]
        and res["zombies"] == []
    )
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: pid 1's environment and fds, an orphan left to pid 1, /run/clawcage/key after start",
        "pid 1 is cage-init: environ and fds refused (EACCES), the orphan reaped; the key readable (residual: "
        "A's own key, for restarts)",
        res,
        ok,
    )
    assert ok, res


# --- finding 12: a quote in a refused URL, and the JSON access log -----------------------------------------


def test_a_quote_and_a_backslash_in_a_refused_request_survive_into_the_audit_log(isolation_bench):
    bench = isolation_bench
    run = secrets.token_hex(4)
    target = f'q{run}"x\\y.forbidden.example:443'
    since = str(int(time.time()) - 1)
    reply = bench.probe(
        f"claw-{CAGE_A}",
        THROUGH_PROXY,
        {"ca": bench.outside.cert_pem, "cases": [["quoted", f"CONNECT {target} HTTP/1.1\r\nHost: x\r\n\r\n", None]]},
    )
    entries, error = [], None
    for _ in range(20):
        done = subprocess.run(["docker", "logs", "--since", since, f"proxy-{CAGE_A}"], capture_output=True, text=True)
        try:
            entries = [e for l in done.stdout.splitlines() if (e := parse_access_line(l)) is not None]
            error = None
        except ValueError as err:
            error = str(err)
        if any(e["request"] == target for e in entries) or (error and run in error):
            break
        time.sleep(0.5)
    match = [e for e in entries if e["request"] == target]
    ok = error is None and len(match) == 1 and match[0]["status"] == "403" and match[0]["claw"] == CAGE_A
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: CONNECT to a name holding a quote and a backslash",
        "403, logged as one JSON line the suite's parser reads back exactly",
        {"proxy reply": reply["quoted"]["status"], "parsed": match[0] if match else None, "parse error": error},
        ok,
    )
    assert ok, (error, entries[-3:])


# --- finding 13: the bench's exemption, its working directory ----------------------------------------------

# A DNS server that answers A queries from a table of name -> [addresses] (several answers per name).
MIXED_DNS = r"""
import json, socket, struct, sys
table = json.loads(sys.argv[1])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
while True:
    data, peer = s.recvfrom(512)
    qid = struct.unpack(">H", data[:2])[0]; i, labels = 12, []
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode()); i += 1 + data[i]
    qtype = struct.unpack(">H", data[i + 1:i + 3])[0]; question = data[12:i + 5]
    addresses = table.get(".".join(labels).lower(), []) if qtype == 1 else []
    answers = b"".join(b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 5, 4) + socket.inet_aton(a) for a in addresses)
    s.sendto(struct.pack(">HHHHHH", qid, 0x8180, 1, len(addresses), 0, 0) + question + answers, peer)
"""

VIA = """
def attempt(host_port):
    s = socket.create_connection((ARG["proxy"], 3128), timeout=10)
    s.sendall(f"CONNECT {host_port} HTTP/1.1\\r\\nHost: {host_port}\\r\\n\\r\\n".encode())
    try: reply = s.recv(200)
    except OSError as e: return type(e).__name__
    finally: s.close()
    return int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/") else 0
out({t: attempt(t) for t in ARG["targets"]})
"""


@pytest.fixture
def second_proxy(isolation_bench, tmp_path):
    """A second proxy beside A's, with A's own (bench) squid.conf, resolving through a DNS server
    that gives several addresses per name; removed afterwards."""
    from components import cagehost
    from tests.integration.bench import OUTSIDE_IP

    bench = isolation_bench
    client = bench.deployment.client
    network = f"cage-{CAGE_A}"
    control = bench.stack.config.control_plane.host
    allowed = next(c for c in bench.stack.config.claws if c.name == CAGE_A).egress[0].host
    table = {control: ["169.254.169.254", OUTSIDE_IP], allowed: [OUTSIDE_IP]}
    hardening = dict(read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"], network=network)
    claw_image = bench.claw(CAGE_A).image.id
    made = []
    # The test DNS is on a network of its own (a cage bridge carries only TCP to the proxy's port).
    side = client.networks.create(f"findings-dns-{CAGE_A}", driver="bridge", internal=True)
    try:
        hardening["network"] = side.name
        dns = client.containers.run(
            claw_image, ["-I", "-c", MIXED_DNS, json.dumps(table)], entrypoint=["/usr/bin/python3"],
            name=f"findings-dns-{CAGE_A}", detach=True, **hardening,
        )  # fmt: skip
        made.append(dns)
        dns.reload()
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {dns.attrs['NetworkSettings']['Networks'][side.name]['IPAddress']}\n")
        hardening["network"] = network
        tmp_path.chmod(0o755)
        resolv.chmod(0o644)
        proxy = client.containers.run(
            bench.stack.config.proxy_image, name=f"findings-proxy-{CAGE_A}", detach=True, tmpfs={"/tmp": "size=16m"},
            volumes={cagehost.proxy_config_dir(CAGE_A): {"bind": "/etc/clawcage", "mode": "ro"},
                     str(resolv): {"bind": "/etc/resolv.conf", "mode": "ro"}},
            **hardening,
        )  # fmt: skip
        made.append(proxy)
        # and on the host's egress network, as a cage's proxy is: the exempt address alone gets through
        egress = next(n for n in bench.addresses(bench.proxy(CAGE_A)) if n != network)
        client.networks.get(egress).connect(proxy)
        side.connect(proxy)
        time.sleep(2)
        proxy.reload()
        yield proxy.attrs["NetworkSettings"]["Networks"][network]["IPAddress"], control, allowed, table, made
    finally:
        for container in reversed(made):
            container.remove(force=True)
        side.remove()


def test_the_bench_exemption_is_exact_and_the_bench_keeps_no_private_key(isolation_bench, second_proxy):
    bench = isolation_bench
    address, control, allowed, table, helpers = second_proxy
    targets = [f"{control}:443", f"{allowed}:443"]
    res = bench.probe(f"claw-{CAGE_A}", VIA, {"proxy": address, "targets": targets})
    files = [p for p in bench.outside.workdir.rglob("*") if p.is_file()]
    keys = sorted(str(p) for p in files if "PRIVATE KEY" in p.read_text(errors="ignore"))
    ok = res[targets[0]] == 403 and res[targets[1]] == 200 and not keys
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}'s bench squid.conf: an allowlisted name answering the exempt address AND a private one; "
        "the bench's working directory",
        "403 for the mixed answer (as production), 200 for the exempt address alone; no private key on disk",
        {
            "answers": table,
            "status": res,
            "private keys in the working directory": keys or "none (removed after the server loaded it)",
        },
        ok,
    )
    assert ok, (res, keys, [h.logs().decode(errors="replace")[-1500:] for h in helpers])


# --- finding 1: conntrack exhaustion ----------------------------------------------------------------------

# For ARG["seconds"], and on until ARG["min"] datagrams are out (a slow machine: the VM under TCG), at
# most 30 s more.
FLOOD = """
end = time.time() + ARG["seconds"]
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(8)]
sent, port = 0, 1024
while time.time() < end or (sent < ARG.get("min", 0) and time.time() < end + 30):
    for s in socks:
        port = port + 1 if port < 65000 else 1024
        try: s.sendto(b"x", (ARG["target"], port)); sent += 1
        except OSError: pass
out({"sent": sent})
"""

CONNTRACK_COUNT = "/proc/sys/net/netfilter/nf_conntrack_count"


def _conntrack(pid: int | None = None) -> int:
    """The connection-tracking entries of the host's network namespace, or of the one of `pid`."""
    if pid is None:
        return int(Path(CONNTRACK_COUNT).read_text())
    done = subprocess.run(["nsenter", "-t", str(pid), "-n", "cat", CONNTRACK_COUNT], capture_output=True, text=True)
    return int(done.stdout)


def _unreclaimable_kib() -> int:
    return int(next(l for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("SUnreclaim")).split()[1])


def test_a_udp_flood_to_its_own_proxy_reaches_neither_the_proxy_nor_the_hosts_table(isolation_bench, rest):
    """Finding 1. The host's table: a cage bridge is untracked (notrack). The proxy's table (its own
    network namespace; the kernel does not charge conntrack entries to any cage's memory): only TCP
    to the proxy's port crosses a cage bridge. Residual (docs/attack-findings.md): the claw's own
    namespace tracks what it sends, bounded by nf_conntrack_max per namespace; figure recorded."""
    bench = isolation_bench
    proxy, claw = bench.proxy(CAGE_A), bench.claw(CAGE_A)
    target = bench.addresses(proxy)[f"cage-{CAGE_A}"]
    proxy_pid, claw_pid = proxy.attrs["State"]["Pid"], claw.attrs["State"]["Pid"]
    before = (_conntrack(), _conntrack(proxy_pid), _conntrack(claw_pid), _unreclaimable_kib())
    neighbour = _measure_b(bench, 8)
    time.sleep(1)
    flood = bench.probe(f"claw-{CAGE_A}", FLOOD, {"target": target, "seconds": 6}, timeout=30)
    after = (_conntrack(), _conntrack(proxy_pid), _conntrack(claw_pid), _unreclaimable_kib())
    during = _finish(neighbour)
    host, in_proxy = after[0] - before[0], after[1] - before[1]
    ok = flood["sent"] > 10_000 and host < 1_000 and in_proxy < 1_000
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: 1-byte UDP datagrams from 8 sockets to closed ports of its own proxy, 6 s",
        "neither the host's nor the proxy's conntrack table grows (residual: the claw's own, bounded)",
        f"{flood['sent']} datagrams; conntrack entries: host {before[0]} -> {after[0]}, proxy's namespace "
        f"{before[1]} -> {after[1]}, claw's own namespace {before[2]} -> {after[2]} (cap nf_conntrack_max "
        f"{Path('/proc/sys/net/netfilter/nf_conntrack_max').read_text().strip()}); host SUnreclaim "
        f"{(after[3] - before[3]) // 1024:+d} MiB",
        ok,
    )
    held = _neighbour_row(bench, "UDP flood (conntrack) in A", during, rest)
    assert ok and held, (flood, before, after, during)


# --- finding 3: log flooding -----------------------------------------------------------------------------

# The attack as found (Docker's init held the container's stdout where the claw could open it), then the
# way that is left: the claw's own stdout, a pipe to cage-init (pid 1), written without blocking so the
# probe counts what it got in while the relay holds it back.
LOG_FLOOD = """
import glob
res = {}
try:
    open("/proc/1/fd/1", "wb").close(); res["open /proc/1/fd/1"] = "SUCCEEDED"
except OSError as e:
    res["open /proc/1/fd/1"] = errno.errorcode.get(e.errno, str(e))
claw = [int(p.split("/")[2]) for p in glob.glob("/proc/[0-9]*/stat")
        if open(p).read().rsplit(")", 1)[1].split()[1] == "1"]
res["claw pid"] = claw[0]
fd = os.open(f"/proc/{claw[0]}/fd/1", os.O_WRONLY | os.O_NONBLOCK)
line = (b"x" * 16383) + b"\\n"
end = time.time() + ARG["seconds"]; written = 0; view = b""
while time.time() < end:
    try:
        view = view or line
        n = os.write(fd, view); written += n; view = view[n:]
    except BlockingIOError:
        time.sleep(0.005)
res["written bytes"] = written
out(res)
"""


def relayed_since(log_lines, since: str) -> tuple[int, list[dict]]:
    """From a claw's json-file log lines (every retained file): the bytes of its stdout logged at or
    after `since` (RFC 3339, UTC, the engine's clock), and cage-init's records on stderr in that time."""
    relayed, notes = 0, []
    for raw in log_lines:
        entry = json.loads(raw)
        if entry["time"] < since:
            continue
        if entry["stream"] == "stdout":
            relayed += len(entry["log"].encode())
        elif entry["log"].startswith("cage-init: {"):
            notes.append(json.loads(entry["log"].removeprefix("cage-init: ")))
    return relayed, notes


def _relayed_since(log_path: Path, since: str) -> tuple[int, list[dict]]:
    lines = []
    for path in sorted(log_path.parent.glob(log_path.name + "*")):
        lines += path.read_text(errors="replace").splitlines()
    return relayed_since(lines, since)


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of these processes (all their threads), in seconds."""
    import os

    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _engine_pids() -> list[int]:
    """dockerd, containerd and the shims: the processes that copy what a claw writes to its logs."""
    pids: list[int] = []
    for name in ("dockerd", "containerd", "containerd-shim"):  # comm names, 15 characters at most
        done = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True)
        pids += [int(p) for p in done.stdout.split()]
    return sorted(set(pids))


def test_a_log_flood_is_held_to_the_relays_rate_and_the_neighbour_keeps_answering(isolation_bench):
    """Finding 3. pid 1 is cage-init, non-dumpable: the claw cannot open the container's stdout. Its own
    stdout goes through cage-init's bucket (conventions.CLAW_LOG_RATE_BYTES, _BURST_BYTES): what reaches
    the engine, and so what dockerd and the shim copy on the host's CPU, is at most the burst plus the
    rate for the time of the flood; the claw is held back, and that is recorded. The neighbour B measures
    itself by name (Docker's embedded DNS, in dockerd) and by address; latencies are figures."""
    from components.conventions import CLAW_LOG_BURST_BYTES, CLAW_LOG_RATE_BYTES

    bench = isolation_bench
    claw = bench.claw(CAGE_A)
    claw.reload()
    log_path = Path(claw.attrs["LogPath"])
    proxy_b = bench.addresses(bench.proxy(CAGE_B))[f"cage-{CAGE_B}"]
    # B's rest for this test: its two measurers at once, as during the flood.
    rest, rest_ip = rest_window(bench, 6, proxy_b)
    for fault, figures in (("", rest), (", proxy by address", rest_ip)):
        bench.scorecard.latency.append(
            {"fault": f"at rest{fault} (log flood's two measurers; A runs the placebo)", "neighbour": CAGE_B, **figures}
        )
    engine = _engine_pids()
    cpu_before = _cpu_seconds(engine)
    neighbour = _measure_b(bench, 8, interval=PAIRED_INTERVAL)
    neighbour_ip = _measure_b(bench, 8, proxy_b, PAIRED_INTERVAL)
    time.sleep(1)
    since = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    started = time.monotonic()
    flood = bench.probe(f"claw-{CAGE_A}", LOG_FLOOD, {"seconds": 6}, timeout=30)
    elapsed = time.monotonic() - started
    engine_cpu_s = _cpu_seconds(engine) - cpu_before
    during, during_ip = _finish(neighbour), _finish(neighbour_ip)
    time.sleep(0.5)  # what the relay had read when the probe stopped reaches the file
    relayed, notes = _relayed_since(log_path, since)
    bound = CLAW_LOG_BURST_BYTES + CLAW_LOG_RATE_BYTES * (elapsed + 1.5)
    refused = flood["open /proc/1/fd/1"] == "EACCES"
    held = [n for n in notes if n.get("event") == "log-throttled"]
    ok = refused and 0 < relayed <= bound and flood["written bytes"] >= relayed and bool(held)
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: writes 16 KiB lines to pid 1's stdout, then to its own, for 6 s",
        f"pid 1's stdout refused (EACCES); what reaches the engine at most {CLAW_LOG_BURST_BYTES // 2**20} MiB + "
        f"{CLAW_LOG_RATE_BYTES // 1024} KiB/s; the claw held back and a log-throttled record; engine CPU and B's "
        "latency are figures",
        {
            "pid 1's stdout": flood["open /proc/1/fd/1"],
            "claw wrote MiB": round(flood["written bytes"] / 2**20, 2),
            "reached the log MiB": round(relayed / 2**20, 2),
            "bound MiB": round(bound / 2**20, 2),
            "log-throttled records": len(held),
            "engine CPU-s during the flood (dockerd, containerd, shims)": round(engine_cpu_s, 2),
            "seconds": round(elapsed, 1),
            "B p95 by name, rest -> flood (ms)": f"{rest['p95_ms']} -> {during['p95_ms']}",
            "B p95 by address, rest -> flood (ms)": f"{rest_ip['p95_ms']} -> {during_ip['p95_ms']}",
        },
        ok,
    )
    answered = _neighbour_row(bench, "log flood in A", during, rest)
    answered_ip = _neighbour_row(bench, "log flood in A, proxy by address", during_ip, rest_ip)
    assert ok and answered and answered_ip, (flood, relayed, bound, notes, during, during_ip)


# --- finding 8: what another tenant sees of a volume ---------------------------------------------------------

BLOCK = """
name = ARG["loop"]
def read(path):
    try: return open(path).read().strip()
    except OSError as e: return errno.errorcode.get(e.errno, str(e))
parts = [l.split() for l in open("/proc/partitions").read().splitlines()[2:] if l.split()]
out({"backing_file": read(f"/sys/block/{name}/loop/backing_file"),
     "size (sectors)": read(f"/sys/block/{name}/size"),
     "stat (I/O counters)": read(f"/sys/block/{name}/stat"),
     "in /proc/partitions": any(p[-1] == name for p in parts),
     "device node": os.path.exists(f"/dev/{name}")})
"""


def test_another_tenants_cage_sees_no_name_in_a_volumes_loop_device(isolation_bench):
    """Finding 8: the loop device is attached through an opaque alias, so its backing_file names no
    tenant. Residual (docs/attack-findings.md): its size and I/O counters stay visible to every
    container (sysfs is not namespaced), the data and the device are not."""
    from components.conventions import host_volume_dir

    bench = isolation_bench
    image = f"{host_volume_dir(CAGE_A)}/backing.img"
    loops = subprocess.run(["losetup", "-j", image, "-n", "-O", "NAME"], capture_output=True, text=True).stdout.split()
    assert loops, f"{CAGE_A}'s volume has no loop device"
    seen = bench.probe(f"claw-{CAGE_B}", BLOCK, {"loop": loops[0].removeprefix("/dev/")})
    names = sorted({c.name for c in bench.stack.config.claws} | {c.org for c in bench.stack.config.claws})
    named = [n for n in names if n in seen["backing_file"]]
    ok = not named and not seen["device node"]
    bench.scorecard.record(
        GROUP,
        f"{CAGE_B} reads {CAGE_A}'s loop device in sysfs ({loops[0]})",
        "no claw or org name in backing_file, no device node; residual: size and I/O counters (documented)",
        {**seen, "names found": named or "none"},
        ok,
    )
    assert ok, seen


# --- finding 5: the claw holds its proxy's memory with unfinished requests ------------------------------------

HOLD = """
socks, refused = [], None
for i in range(ARG["n"]):
    try:
        s = socket.create_connection(("egress-proxy", 3128), 5)
        s.sendall(b"CONNECT x.example:443 HTTP/1.1\\r\\nX-Pad: " + b"a" * 4000)
        socks.append(s)
    except OSError as e:
        refused = errno.errorcode.get(e.errno, str(e)); break
time.sleep(2)
alive = 0
for s in socks:
    s.setblocking(False)
    try: alive += s.recv(1) != b""
    except BlockingIOError: alive += 1
    except OSError: pass
for s in socks: s.close()
out({"opened": len(socks), "kept by the proxy": alive, "connect error": refused})
"""


def test_unfinished_requests_are_bounded_per_claw_and_the_proxy_survives(isolation_bench):
    """Finding 5, partly: Squid keeps at most components.egress.MAX_CLIENT_CONNECTIONS connections of
    one claw, so unfinished headers cannot grow the proxy's memory to its limit. Residual
    (docs/attack-findings.md): a CONNECT is still logged when its tunnel closes."""
    from components.egress import MAX_CLIENT_CONNECTIONS

    bench = isolation_bench
    proxy = bench.proxy(CAGE_A)
    restarts = proxy.attrs["RestartCount"]
    res = bench.probe(f"claw-{CAGE_A}", HOLD, {"n": MAX_CLIENT_CONNECTIONS + 150}, timeout=60)
    proxy.reload()
    ok = res["kept by the proxy"] <= MAX_CLIENT_CONNECTIONS + 1 and proxy.status == "running"
    ok = ok and proxy.attrs["RestartCount"] == restarts
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: {MAX_CLIENT_CONNECTIONS + 150} connections to its proxy with unfinished headers",
        f"the proxy keeps at most {MAX_CLIENT_CONNECTIONS}, keeps running, does not restart",
        {**res, "proxy": proxy.status, "restarts": f"{restarts} -> {proxy.attrs['RestartCount']}"},
        ok,
    )
    assert ok, res
