"""What a cage's audit rules cost, measured on this machine's engine and auditd in one run (issue 15):

    sudo .venv/bin/python -m benchmarks.audit [--rounds 3] [--seconds 4] [--out benchmarks/audit-results.json]

A container of the claw image runs as a cage's user would (a non-root uid under userns-remap, read-only
root, no capabilities, a CPU quota as a claw's `cpus`) with a volume at /data (a tmpfs mounted where the cage's volume is, so the
rules' volume-read rule applies). Its load is file-heavy: per iteration it creates and writes a file on
/data, reads it, renames it, chmods it and deletes it (5 operations, every one of them a record with
the rules loaded). Rounds alternate without and with the cage's rules (components/cageaudit.py,
loaded by the real audit-create.sh), operations per second in each, medians; the figure is the ratio.

A flood: a second cage (its own uid and rules) runs the same load alone, then while the first
cage runs it flat out, both audited. The neighbour's ops/s during the flood over its ops/s alone is
what one claw's records cost another's: auditd is one writer for the host, and the kernel makes a
process whose record finds the queue full wait (rules.d: up to 60 s) rather than drop it. The
kernel's lost counter before and after says whether any record was dropped.

The trail's size: the bytes auditd wrote under the cage's key per recorded file operation and per
exec (a `python3 -I -c pass` run in the container), and from them the bytes per cage-hour of a claw
whose work is stated (WORKLOAD below). An idle claw's trail is empty.
Everything it starts is removed at the end, also on failure.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components import cageaudit, cagehost  # noqa: E402
from components.conventions import audit_key, host_volume_dir  # noqa: E402
from tools import audit, engine  # noqa: E402

UID = 4242
IMAGE_VERSION = (ROOT / "images" / "VERSION").read_text().strip()
IMAGE = f"clawstaff/claw-runtime:{IMAGE_VERSION}"
FILE_LOAD = (
    "import json, os, sys, time\n"
    "n, i, end = 0, 0, time.monotonic() + float(sys.argv[1])\n"
    "while time.monotonic() < end:\n"
    "    p = f'/data/f{i}'; i += 1\n"
    "    with open(p, 'w') as f: f.write('x' * 64)\n"
    "    with open(p) as f: f.read()\n"
    "    os.rename(p, p + 'r'); os.chmod(p + 'r', 0o600); os.remove(p + 'r')\n"
    "    n += 5\n"
    "print(json.dumps(n / float(sys.argv[1])))\n"
)
CHILD = ("/usr/bin/python3", "-I", "-c", "import subprocess, sys; subprocess.run(sys.argv[1:], check=True)")
# A claw's stated hour, busy all of it: a tool run a minute, ten file operations a minute. (Docker's
# health check is not in the trail: runc starts it as root, which gets no audit context.)
WORKLOAD = {"tool execs": 60, "file operations": 600}


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(list(argv), capture_output=True, text=True, **kw)
    if check and done.returncode != 0:
        raise SystemExit(f"benchmark: {' '.join(argv[:4])} failed: {done.stderr.strip()[-500:]}")
    return done


def trail_bytes(claw: str, since: datetime.datetime) -> int:
    """The bytes of the cage's records since `since` (a bounded search: the host's log may be large)."""
    return len(audit.read_output(audit.local_run(audit.search_script(claw, since))).encode())


def audit_counters() -> dict[str, int]:
    """The kernel's audit counters that say whether records were lost or had to wait (auditctl -s)."""
    shown = dict(line.split(" ", 1) for line in sh("auditctl", "-s").stdout.splitlines() if " " in line)
    return {k: int(shown[k]) for k in ("lost", "backlog", "backlog_wait_time_actual") if k in shown}


def now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


class Cage:
    """A container of the claw image as a cage's user would run it, with a tmpfs volume at /data and
    the cage's audit rules (loaded and removed with `audit`)."""

    def __init__(self, uid: int, cpus: float):
        self.uid, self.cpus = uid, cpus
        self.claw = f"bench-audit-{secrets.token_hex(3)}"
        self.name = f"bench-audit-{self.claw}"
        self.mount = Path(host_volume_dir(self.claw)) / "mnt"
        self.create = cageaudit.render_audit_create(self.claw, uid=uid, volume=True)
        self.delete = cageaudit.render_audit_delete(self.claw)

    def start(self) -> None:
        data = Path(cagehost.volume_mount_path(self.claw))
        self.mount.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", "size=64m", "bench-audit", str(self.mount))
        data.mkdir()
        host_uid = int(
            sh("/bin/bash", "-c", f"awk -F: '$1 == \"dockremap\" {{ print $2 + {self.uid} }}' /etc/subuid").stdout
        )
        os.chown(data, host_uid, host_uid)
        sh("docker", "run", "-d", "--name", self.name, "--label", "clawstaff.bench=audit", "--user", f"{self.uid}:{self.uid}",
           "--cpus", str(self.cpus), "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
           "--mount", f"type=bind,source={data},target=/data", "--entrypoint", "/usr/bin/python3", IMAGE,
           "-I", "-c", "import time; time.sleep(3600)")  # fmt: skip

    def audit(self, on: bool) -> None:
        sh("/bin/bash", "-c", self.create if on else self.delete)

    def load(self, seconds: float) -> float:
        # In a child of the exec'd process, as a claw's own processes are: `docker exec` starts as
        # root, which gets no audit context (audit-base.rules); what it starts as the claw does.
        out = sh("docker", "exec", self.name, *CHILD, "/usr/bin/python3", "-I", "-c", FILE_LOAD, str(seconds))
        return float(out.stdout.strip().splitlines()[-1])

    def remove(self) -> None:
        sh("docker", "rm", "-f", self.name, check=False)
        sh("/bin/bash", "-c", self.delete, check=False)
        if self.mount.is_mount():
            sh("umount", str(self.mount), check=False)
        sh("rm", "-rf", host_volume_dir(self.claw), check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--cpus", type=float, default=1.0, help="each cage's CPU quota, as a claw's `cpus`")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "audit-results.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("benchmark: needs root (audit rules, mounts, the engine)")
    if engine.audit_daemon_pid() is None:
        raise SystemExit("benchmark: no audit daemon runs (python -m tools.engine start starts it)")
    cage, neighbour = Cage(UID, args.cpus), Cage(UID + 1, args.cpus)
    results: dict = {}
    try:
        for one in (cage, neighbour):
            one.start()
        without, with_rules = [], []
        for _ in range(args.rounds):
            cage.audit(False)
            without.append(cage.load(args.seconds))
            cage.audit(True)
            with_rules.append(cage.load(args.seconds))
        # The flood: the neighbour alone, then beside the cage's flat-out load (both audited).
        neighbour.audit(True)
        alone, beside, counters = [], [], {"before": audit_counters()}
        with ThreadPoolExecutor(max_workers=1) as pool:
            for _ in range(args.rounds):
                alone.append(neighbour.load(args.seconds))
                flood = pool.submit(cage.load, args.seconds + 2)  # it covers the neighbour's whole run
                time.sleep(1)
                beside.append(neighbour.load(args.seconds))
                flood.result()
        counters["after"] = audit_counters()
        # The trail's bytes: one file-operation run and 20 execs, each counted under the key alone.
        since = now()
        before = trail_bytes(cage.claw, since)
        ops = cage.load(args.seconds) * args.seconds
        time.sleep(1)
        per_op = (trail_bytes(cage.claw, since) - before) / ops
        since = now()
        before = trail_bytes(cage.claw, since)
        for _ in range(20):
            sh("docker", "exec", cage.name, *CHILD, "/usr/bin/python3", "-I", "-c", "pass")
        time.sleep(1)
        per_exec = (trail_bytes(cage.claw, since) - before) / 20
        hour = WORKLOAD["tool execs"] * per_exec + WORKLOAD["file operations"] * per_op
        results = {
            "measured": datetime.date.today().isoformat(),
            "where": "this machine's engine (Docker 20.10, userns-remap) and auditd, one run",
            "rounds": args.rounds,
            "seconds per round": args.seconds,
            "cpus per cage": args.cpus,
            "file ops/s without rules": [round(x) for x in without],
            "file ops/s with rules": [round(x) for x in with_rules],
            "median without": round(statistics.median(without)),
            "median with": round(statistics.median(with_rules)),
            "ratio with/without": round(statistics.median(with_rules) / statistics.median(without), 3),
            "neighbour file ops/s alone (audited)": [round(x) for x in alone],
            "neighbour file ops/s beside a flooding cage": [round(x) for x in beside],
            "neighbour ratio beside/alone": round(statistics.median(beside) / statistics.median(alone), 3),
            "kernel audit counters before/after the flood": counters,
            "trail bytes per file operation": round(per_op),
            "trail bytes per exec": round(per_exec),
            "workload per hour": WORKLOAD,
            "trail bytes per cage-hour, the stated busy claw": round(hour),
        }
    finally:
        for one in (cage, neighbour):
            one.remove()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key}: {value}")
    print(f"(keys {audit_key(cage.claw)}, {audit_key(neighbour.claw)}; written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
