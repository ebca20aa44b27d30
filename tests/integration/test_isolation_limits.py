"""Limits and faults (issue 5): a runaway cage A is held to its limits while its neighbour B, another
org's cage, keeps measuring itself. B's latency during each fault is reported beside its latency at
rest (scorecard `latency`): rest is B's figures while A runs a probe that does nothing (bench.PLACEBO),
so the harness's own cost is in both."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.integration.bench import CAGE_A, CAGE_B, PLACEBO, cgroup_file, local_timeline
from tests.integration.test_isolation_credentials import claw_cmdline
from tools.audittrail import iso_time

pytestmark = pytest.mark.integration
GROUP = "limits"
MiB = 1024**2

# B's self-measurement: a fixed bit of CPU work plus a round trip to its proxy, every 50 ms.
MEASURE = """
import hashlib
samples, fails = [], 0
end = time.time() + ARG["seconds"]
while time.time() < end:
    t = time.perf_counter()
    h = hashlib.sha256()
    for _ in range(64): h.update(b"x" * 4096)
    try: socket.create_connection(("egress-proxy", 3128), 2).close()
    except OSError: fails += 1
    samples.append((time.perf_counter() - t) * 1000)
    time.sleep(ARG["interval"])
samples.sort()
q = lambda f: round(samples[min(len(samples) - 1, int(f * len(samples)))], 2)
out({"n": len(samples), "fails": fails, "p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": round(samples[-1], 2)})
"""

# Forks until refused, ARG["max"] children or ARG["seconds"] gone; holds them ARG["hold"] s, counts the
# processes the cage's /proc shows, kills them. (Under gVisor the count is the sandbox's own.)
FORK_BOMB = """
kids, error = [], None
start = time.time()
while len(kids) < ARG["max"] and time.time() - start < ARG["seconds"]:
    try:
        pid = os.fork()
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e)); break
    if pid == 0:
        signal.alarm(ARG["seconds"] + ARG["hold"] + 5); signal.pause(); os._exit(0)
    kids.append(pid)
elapsed = time.time() - start
time.sleep(ARG["hold"])
seen = len([p for p in os.listdir("/proc") if p.isdigit()])
for k in kids: os.kill(k, 9)
for k in kids: os.waitpid(k, 0)
out({"forked": len(kids), "error": error, "seconds": round(elapsed, 1), "processes seen": seen})
"""

MEMORY_HOG = """
chunks = []
while True:
    chunks.append(bytearray(16 << 20))
"""

CPU_SPIN = """
kids = []
for _ in range(ARG["procs"]):
    pid = os.fork()
    if pid == 0:
        end = time.time() + ARG["seconds"]
        while time.time() < end: pass
        os._exit(0)
    kids.append(pid)
for k in kids: os.waitpid(k, 0)
out({"spinners": len(kids)})
"""


MEASURE_BY_ADDRESS = MEASURE.replace('("egress-proxy", 3128)', '(ARG["proxy"], 3128)')


# Two measurers at once sample every PAIRED_INTERVAL s each: B's own new connections stay at 20 a second,
# as with one measurer, under the cage's SYN rate (components.egress.CAGE_CONNECTIONS_PER_SECOND), which
# would otherwise drop B's SYNs (1 s retries in B's figures).
INTERVAL, PAIRED_INTERVAL = 0.05, 0.1


def _measure_b(bench, seconds: float, proxy: str | None = None, interval: float = INTERVAL):
    """B measures itself for `seconds`, a sample every `interval` s: round trips to its proxy by name
    (Docker's embedded DNS, in dockerd), or by the proxy's address when one is given."""
    arg = {"seconds": seconds, "interval": interval} | ({"proxy": proxy} if proxy else {})
    code = MEASURE_BY_ADDRESS if proxy else MEASURE
    return bench.popen_probe(f"claw-{CAGE_B}", code, arg, timeout=int(seconds) + 20)


def _finish(proc) -> dict:
    stdout, stderr = proc.communicate(timeout=60)
    lines = [l for l in stdout.splitlines() if l.strip()]
    assert proc.returncode == 0 and lines, f"B's measurement failed: {stderr[-500:]}"
    return json.loads(lines[-1])


def rest_window(bench, seconds: float = 6, proxy: str | None = None) -> tuple[dict, dict | None]:
    """B's figures "at rest", measured the way a fault's are: B measures itself for `seconds` + 2 s
    (by name, and by `proxy`'s address too when given, two programs at once as the log flood's test
    runs them) while, from the second second on, A runs bench.PLACEBO for `seconds` through the same
    `docker exec` a fault's probe takes. (figures by name, figures by address or None)"""
    interval = PAIRED_INTERVAL if proxy else INTERVAL
    by_name = _measure_b(bench, seconds + 2, interval=interval)
    by_address = _measure_b(bench, seconds + 2, proxy, interval) if proxy else None
    time.sleep(1)
    bench.probe(f"claw-{CAGE_A}", PLACEBO, {"seconds": seconds}, timeout=int(seconds) + 20)
    return _finish(by_name), (_finish(by_address) if by_address else None)


@pytest.fixture(scope="module")
def at_rest(isolation_bench):
    result, _ = rest_window(isolation_bench)
    isolation_bench.scorecard.latency.append({"fault": "at rest (A runs the placebo)", "neighbour": CAGE_B, **result})
    return result


def _b_held(bench, fault: str, during: dict, rest: dict) -> bool:
    """B keeps answering: every round trip worked (asserted). Its latency is a figure of the scorecard,
    beside rest's, never asserted: this machine is shared, and a time bound would test its load."""
    bench.scorecard.latency.append({"fault": fault, "neighbour": CAGE_B, **during})
    ok = during["fails"] == 0 and during["n"] >= 10
    ratio = round(during["p95_ms"] / rest["p95_ms"], 2) if rest["p95_ms"] else None
    bench.scorecard.record(
        GROUP,
        f"{CAGE_B} latency during: {fault}",
        "answers every time (latency: the scorecard's latency table)",
        f"n={during['n']} fails={during['fails']} p50={during['p50_ms']} p95={during['p95_ms']} "
        f"({ratio}x rest {rest['p95_ms']} ms) max={during['max_ms']} ms",
        ok,
    )
    bench.scorecard.write()
    return ok


def _limit_hits(bench, cage: str, leaf: str, action: str) -> list:
    """The cage's limit hits of `action` in the claw container `leaf`'s cgroup, as `tools.audit --stack
    local` reads them from the kernel's log."""
    org = next(c.org for c in bench.stack.config.claws if c.name == cage)
    found = local_timeline(bench, cage)
    return [e for e in found if e.action == action and e.cgroup.endswith("/" + leaf) and e.org == org]


def _claw_id(bench, cage: str) -> str:
    claw = bench.claw(cage)
    claw.reload()
    return claw.id


def test_fork_bomb_hits_the_cage_pids_limit(isolation_bench, at_rest):
    bench = isolation_bench
    pids_max = int(cgroup_file("pids", CAGE_A, "pids.max").read_text())
    leaf = _claw_id(bench, CAGE_A)
    events_before = cgroup_file("pids", CAGE_A, "pids.events", leaf).read_text()
    started = time.time() - 1  # the kernel log's clock is read from its boot time: a second's slack
    b = _measure_b(bench, 7)
    time.sleep(1)
    bomb = bench.probe(f"claw-{CAGE_A}", FORK_BOMB, {"max": 5000, "seconds": 10, "hold": 3}, timeout=40)
    during = _finish(b)
    events_after = cgroup_file("pids", CAGE_A, "pids.events", leaf).read_text()
    ok = bomb["error"] == "EAGAIN" and bomb["forked"] < pids_max
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: fork bomb",
        f"EAGAIN below the cage's pids.max ({pids_max})",
        f"{bomb['error']} after {bomb['forked']} forks; the claw cgroup's pids.events "
        f"{' '.join(events_before.split())} -> {' '.join(events_after.split())}",
        ok,
    )
    held = _b_held(bench, "fork bomb in A", during, at_rest)
    # The refusal is in the claw's trail: the kernel says it at the cgroup's first refusal, once.
    hits = _limit_hits(bench, CAGE_A, leaf, "fork-refused")
    first = events_before.split() == ["max", "0"]
    in_trail = len(hits) == 1 and (not first or hits[0].time >= iso_time(started))
    bench.scorecard.record(
        "audit trail",
        f"{CAGE_A}'s trail after its fork bomb (`tools.audit --stack local`, from the kernel's log)",
        "one fork-refused event of the claw's cgroup, at its first refusal, with the claw and its org",
        [(e.time, e.action, e.result, e.cgroup) for e in hits] or "none",
        in_trail,
    )
    assert ok and held, (bomb, during)
    assert in_trail, (hits, events_before)


def test_memory_hog_is_oom_killed_and_the_claw_restarts_within_its_bound(isolation_bench, at_rest):
    bench = isolation_bench
    claw_id = _claw_id(bench, CAGE_A)
    started = time.time() - 1
    oom_control = cgroup_file("memory", CAGE_A, "memory.oom_control", claw_id)
    kills_before = _oom_kills(oom_control)
    restarts_before = bench.claw(CAGE_A).attrs["RestartCount"]
    b = _measure_b(bench, 7)
    time.sleep(1)
    hog = bench.exec(f"claw-{CAGE_A}", MEMORY_HOG, timeout=40)
    during = _finish(b)
    kills_after = _oom_kills(oom_control)
    limit = int(cgroup_file("memory", CAGE_A, "memory.limit_in_bytes", claw_id).read_text())
    ok = hog.returncode == 137 and kills_after > kills_before
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: memory hog",
        f"OOM-killed at the claw's limit ({limit // MiB} MiB)",
        f"exit {hog.returncode}; oom_kill {kills_before} -> {kills_after}",
        ok,
    )
    held = _b_held(bench, "memory hog in A", during, at_rest)
    hits = [e for e in _limit_hits(bench, CAGE_A, claw_id, "oom-kill") if e.time >= iso_time(started)]
    in_trail = len(hits) == kills_after - kills_before and all(e.comm and e.pid for e in hits)
    bench.scorecard.record(
        "audit trail",
        f"{CAGE_A}'s trail after its memory hog (`tools.audit --stack local`, from the kernel's log)",
        "an oom-kill event per kill the claw's memory cgroup counted, with the task, its pid and the claw",
        [(e.time, e.action, e.comm, e.pid) for e in hits] or "none",
        in_trail,
    )
    assert in_trail, (hits, kills_before, kills_after)

    # The claw itself dies (as the OOM killer would kill it): Docker restarts it, within its bound.
    killer = """
for p in os.listdir("/proc"):
    if p.isdigit() and open(f"/proc/{p}/cmdline", "rb").read() == ARG.encode():
        os.kill(int(p), 9)
        time.sleep(5)  # the cage stops with its claw, and takes this probe along (exit 137)
out("the claw's own process was not found in the cage")
"""
    killed = bench.exec(f"claw-{CAGE_A}", killer, claw_cmdline(bench, CAGE_A))
    assert killed.returncode != 0, killed.stdout
    claw = bench.claw(CAGE_A)
    deadline = time.time() + 30
    while time.time() < deadline:
        claw.reload()
        state = claw.attrs["State"]
        # Docker reports Running=true during the restart back-off too; Restarting tells them apart.
        if claw.attrs["RestartCount"] > restarts_before and state["Running"] and not state["Restarting"]:
            break
        time.sleep(0.3)
    policy = claw.attrs["HostConfig"]["RestartPolicy"]
    restarted = (
        claw.attrs["RestartCount"] == restarts_before + 1
        and claw.attrs["State"]["Running"]
        and not claw.attrs["State"]["Restarting"]
    )
    alive = bench.probe(f"claw-{CAGE_A}", "out('alive')") == "alive" if restarted else False
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: the claw process is killed",
        "restarted once, running, policy bounded",
        f"restarts {restarts_before} -> {claw.attrs['RestartCount']}, running "
        f"{claw.attrs['State']['Running']}, policy {policy['Name']}:{policy['MaximumRetryCount']}",
        restarted and alive and policy == {"Name": "on-failure", "MaximumRetryCount": 5},
    )
    assert ok and held and restarted and alive, (hog.returncode, hog.stderr[-300:], kills_before, kills_after)


def _oom_kills(path: Path) -> int:
    for line in path.read_text().splitlines():
        if line.startswith("oom_kill "):
            return int(line.split()[1])
    raise AssertionError(f"{path} has no oom_kill counter (kernel too old for this probe)")


def test_cpu_spin_is_held_to_its_quota(isolation_bench, at_rest):
    bench = isolation_bench
    claw_id = _claw_id(bench, CAGE_A)
    usage = cgroup_file("cpuacct", CAGE_A, "cpuacct.usage", claw_id)
    quota = next(c.cpus for c in bench.stack.config.claws if c.name == CAGE_A)
    b = _measure_b(bench, 8)
    time.sleep(1)
    before, t0 = int(usage.read_text()), time.monotonic()
    bench.probe(f"claw-{CAGE_A}", CPU_SPIN, {"procs": 2, "seconds": 5}, timeout=30)
    used = (int(usage.read_text()) - before) / 1e9
    wall = time.monotonic() - t0
    during = _finish(b)
    share = used / wall
    ok = share <= float(quota) * 1.2 + 0.02
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: two processes spin for 5 s",
        f"<= its quota of {quota} CPU",
        f"{share:.3f} CPU ({used:.2f} s CPU in {wall:.2f} s)",
        ok,
    )
    held = _b_held(bench, "CPU spin in A", during, at_rest)
    assert ok and held, (share, during)


FILL = """
res = {}
for d in ("/tmp", "/data"):
    path, written, error = os.path.join(d, "fill"), 0, None
    try:
        with open(path, "wb") as f:
            while written < (1 << 30):
                f.write(b"\\x5a" * (1 << 20)); written += 1 << 20
            f.flush(); os.fsync(f.fileno())
    except OSError as e:
        error = errno.errorcode.get(e.errno, str(e))
    os.unlink(path)
    res[d] = {"written_mib": written >> 20, "error": error}
out(res)
"""


def test_filling_a_disks_fails_in_a_only(isolation_bench, at_rest):
    bench = isolation_bench
    b = _measure_b(bench, 6)
    time.sleep(0.5)
    fill = bench.probe(f"claw-{CAGE_A}", FILL, timeout=60)
    during = _finish(b)
    ok = all(r["error"] == "ENOSPC" for r in fill.values())
    bench.scorecard.record(GROUP, f"{CAGE_A}: fill /tmp and /data", "ENOSPC in A", fill, ok)
    held = _b_held(bench, "A fills its tmpfs and volume", during, at_rest)
    assert ok and held, (fill, during)
