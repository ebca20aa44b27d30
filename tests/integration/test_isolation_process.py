"""Process and kernel probes, inside a replayed cage as the claw's user (issue 5)."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.cage import HEALTHCHECK_PYTHON
from tests.integration.bench import CAGE_A

pytestmark = pytest.mark.integration
GROUP = "process"

PROBE = """
import ctypes, stat
libc = ctypes.CDLL(None, use_errno=True)
def call(fn, *args):
    rc = fn(*args)
    return "SUCCEEDED" if rc == 0 else errno.errorcode.get(ctypes.get_errno(), "?")
res = {}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
for k in ("Uid", "CapEff", "CapPrm", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp"):
    res[k] = status[k].strip()
procs = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try: procs[p] = open(f"/proc/{p}/cmdline", "rb").read().replace(b"\\0", b" ").decode()[:60]
        except OSError: pass
res["processes"] = procs
res["mount"] = call(libc.mount, b"none", b"/tmp", b"tmpfs", 0, None)
res["unshare_user"] = call(libc.unshare, 0x10000000)
res["unshare_mount"] = call(libc.unshare, 0x00020000)
res["unshare_net"] = call(libc.unshare, 0x40000000)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
res["ptrace_proxy"] = {str(pid): ("SUCCEEDED" if libc.ptrace(16, pid, None, None) == 0
                                  else errno.errorcode.get(ctypes.get_errno(), "?")) for pid in ARG["proxy_pids"]}
for name, args in (("raw_icmp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)),
                   ("raw_tcp", (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)),
                   ("packet", (socket.AF_PACKET, socket.SOCK_RAW, 0))):
    try: socket.socket(*args).close(); res[name] = "SUCCEEDED"
    except OSError as e: res[name] = errno.errorcode.get(e.errno, str(e))
for name, fn in (("setuid0", lambda: os.setuid(0)), ("setgid0", lambda: os.setgid(0)),
                 ("setuid_other", lambda: os.setuid(ARG["other_uid"]))):
    try: fn(); res[name] = "SUCCEEDED"
    except OSError as e: res[name] = errno.errorcode.get(e.errno, str(e))
res["uid_map"] = open("/proc/self/uid_map").read().split()
res["docker_sockets"] = [p for p in ("/var/run/docker.sock", "/run/docker.sock", "/run/containerd/containerd.sock",
                                     "/var/run/containerd/containerd.sock") if os.path.exists(p)]
setuid, shells = [], []
SHELLS = {"sh", "bash", "dash", "zsh", "ash", "ksh", "mksh", "busybox", "toybox", "csh", "tcsh", "fish"}
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for f in files:
        path = os.path.join(root, f)
        try: st = os.lstat(path)
        except OSError: continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & (stat.S_ISUID | stat.S_ISGID): setuid.append(path)
        if f in SHELLS: shells.append(path)
res["setuid_files"] = setuid
res["shells"] = shells
out(res)
"""


@pytest.fixture(scope="module")
def probed(isolation_bench):
    bench = isolation_bench
    # Every process of the proxy, by its host pid: the claw must not even see them, let alone trace them.
    top = bench.proxy(CAGE_A).top(ps_args="-o pid")
    proxy_pids = sorted(int(row[0]) for row in top["Processes"])
    other_uid = int(bench.claw("globex-triage").attrs["Config"]["User"].split(":")[0])
    return bench, bench.probe(f"claw-{CAGE_A}", PROBE, {"proxy_pids": proxy_pids, "other_uid": other_uid}, timeout=60)


def test_sees_only_its_own_processes(probed):
    bench, res = probed
    # Docker's health check, run in the claw container as the claw's user every 30 s, is the cage's own
    # too; when it runs during the probe it is a fourth process (the commands are cut at 60 characters).
    health = " ".join([*HEALTHCHECK_PYTHON, "-c", "import socket; socket.create_connection"])
    commands = [c for c in res["processes"].values() if not (health.startswith(c) or c.startswith(health))]
    # cage-init (pid 1), the claw itself and this probe: nothing of the proxy, the host or another cage.
    foreign = [
        c
        for c in commands
        if not c.startswith(
            ("/usr/bin/python3 -I /usr/local/bin/cage-init ", "/usr/bin/python3 -c ", "/usr/bin/python3 -I -c ")
        )
        or "squid" in c
    ]
    ok = len(commands) <= 3 and not foreign
    bench.scorecard.record(
        GROUP, f"{CAGE_A}: processes visible in /proc", "only the cage's own (init, claw, probe)", res["processes"], ok
    )
    assert ok, res["processes"]


def test_no_capabilities_no_new_privs_seccomp(probed):
    bench, res = probed
    empty = "0000000000000000"
    checks = [
        ("effective capabilities", res["CapEff"] == empty, res["CapEff"]),
        ("permitted capabilities", res["CapPrm"] == empty, res["CapPrm"]),
        ("bounding capabilities", res["CapBnd"] == empty, res["CapBnd"]),
        ("ambient capabilities", res["CapAmb"] == empty, res["CapAmb"]),
        ("no_new_privs", res["NoNewPrivs"] == "1", res["NoNewPrivs"]),
        ("seccomp mode", res["Seccomp"] == "2", f"{res['Seccomp']} (2 = filter)"),
    ]
    for what, ok, observed in checks:
        bench.scorecard.record(
            GROUP,
            f"{CAGE_A}: {what}",
            "empty" if "capab" in what else ("1" if what == "no_new_privs" else "2 (filter)"),
            observed,
            ok,
        )
    assert all(ok for _, ok, _ in checks), res


def test_privileged_operations_fail(probed):
    bench, res = probed
    checks = {
        "mount a tmpfs": res["mount"],
        "unshare(CLONE_NEWUSER)": res["unshare_user"],
        "unshare(CLONE_NEWNS)": res["unshare_mount"],
        "unshare(CLONE_NEWNET)": res["unshare_net"],
        "raw ICMP socket": res["raw_icmp"],
        "raw TCP socket": res["raw_tcp"],
        "AF_PACKET socket": res["packet"],
        "setuid(0)": res["setuid0"],
        "setgid(0)": res["setgid0"],
        "setuid(another cage's uid)": res["setuid_other"],
    }
    for pid, outcome in res["ptrace_proxy"].items():
        checks[f"ptrace(ATTACH) of the proxy's process (host pid {pid})"] = outcome
    for what, outcome in checks.items():
        bench.scorecard.record(
            GROUP, f"{CAGE_A}: {what}", "fails (EPERM/EACCES/ESRCH)", outcome, outcome != "SUCCEEDED"
        )
    assert all(o != "SUCCEEDED" for o in checks.values()), checks


def test_container_root_is_an_unprivileged_host_uid(probed):
    bench, res = probed
    inside, host_start, count = (int(x) for x in res["uid_map"][:3])
    claw = bench.claw(CAGE_A)
    claw.reload()
    pid = claw.attrs["State"]["Pid"]
    host_uids = [l for l in Path(f"/proc/{pid}/status").read_text().splitlines() if l.startswith("Uid:")][0].split()[1:]
    claw_uid = int(res["Uid"].split()[0])
    ok = inside == 0 and host_start >= 65536 and all(int(u) == host_start + claw_uid for u in host_uids)
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: user namespace (userns-remap)",
        "container uid 0 = an unprivileged host uid; the claw's host uid = base + its uid",
        f"uid_map 0->{host_start} (x{count}); claw uid {claw_uid} is host uid {host_uids[0]}",
        ok,
    )
    assert ok, (res["uid_map"], host_uids)


def test_no_docker_socket_no_setuid_no_shell(probed):
    bench, res = probed
    for what, found in (
        ("Docker/containerd socket", res["docker_sockets"]),
        ("setuid/setgid binaries", res["setuid_files"]),
        ("shells", res["shells"]),
    ):
        bench.scorecard.record(GROUP, f"{CAGE_A}: {what} in the claw image", "none", found or "none", not found)
    assert not res["docker_sockets"] and not res["setuid_files"] and not res["shells"], res
