"""What a cage's audit rules cost, measured on this machine's engine and auditd in one run (issue 15):

    sudo .venv/bin/python -m benchmarks.audit [--rounds 3] [--seconds 4] [--out benchmarks/audit-results.json]

A container of the claw image runs as a cage's user would (a non-root uid under userns-remap, read-only
root, no capabilities) with a volume at /data (a tmpfs mounted where the cage's volume is, so the
rules' volume-read rule applies). Its load is file-heavy: per iteration it creates and writes a file on
/data, reads it, renames it, chmods it and deletes it (5 operations, every one of them a record with
the rules loaded). Rounds alternate without and with the cage's rules (components/cageaudit.py,
loaded by the real audit-create.sh), operations per second in each, medians; the figure is the ratio.

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


def trail_bytes(claw: str) -> int:
    return len(audit.read_output(audit.local_run(audit.search_script(claw))).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.audit", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "audit-results.json")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("benchmark: needs root (audit rules, mounts, the engine)")
    if engine.audit_daemon_pid() is None:
        raise SystemExit("benchmark: no audit daemon runs (python -m tools.engine start starts it)")
    claw = f"bench-audit-{secrets.token_hex(3)}"
    mount = Path(host_volume_dir(claw)) / "mnt"
    data = Path(cagehost.volume_mount_path(claw))
    name = f"bench-audit-{claw}"
    create = cageaudit.render_audit_create(claw, uid=UID, volume=True)
    delete = cageaudit.render_audit_delete(claw)
    results: dict = {}
    try:
        mount.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", "size=64m", "bench-audit", str(mount))
        data.mkdir()
        host_uid = int(
            sh("/bin/bash", "-c", f"awk -F: '$1 == \"dockremap\" {{ print $2 + {UID} }}' /etc/subuid").stdout
        )
        os.chown(data, host_uid, host_uid)
        sh("docker", "run", "-d", "--name", name, "--label", "clawstaff.bench=audit", "--user", f"{UID}:{UID}",
           "--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL", "--security-opt", "no-new-privileges:true",
           "--mount", f"type=bind,source={data},target=/data", "--entrypoint", "/usr/bin/python3", IMAGE,
           "-I", "-c", "import time; time.sleep(3600)")  # fmt: skip

        def load() -> float:
            # In a child of the exec'd process, as a claw's own processes are: `docker exec` starts as
            # root, which gets no audit context (audit-base.rules); what it starts as the claw does.
            out = sh("docker", "exec", name, *CHILD, "/usr/bin/python3", "-I", "-c", FILE_LOAD, str(args.seconds))
            return float(out.stdout.strip().splitlines()[-1])

        without, with_rules = [], []
        for _ in range(args.rounds):
            sh("/bin/bash", "-c", delete)
            without.append(load())
            sh("/bin/bash", "-c", create)
            with_rules.append(load())
        # The trail's bytes: one file-operation run and 20 execs, each counted under the key alone.
        before = trail_bytes(claw)
        ops = load() * args.seconds
        time.sleep(1)
        per_op = (trail_bytes(claw) - before) / ops
        before = trail_bytes(claw)
        for _ in range(20):
            sh("docker", "exec", name, *CHILD, "/usr/bin/python3", "-I", "-c", "pass")
        time.sleep(1)
        per_exec = (trail_bytes(claw) - before) / 20
        hour = WORKLOAD["tool execs"] * per_exec + WORKLOAD["file operations"] * per_op
        results = {
            "measured": datetime.date.today().isoformat(),
            "where": "this machine's engine (Docker 20.10, userns-remap) and auditd, one run",
            "rounds": args.rounds,
            "seconds per round": args.seconds,
            "file ops/s without rules": [round(x) for x in without],
            "file ops/s with rules": [round(x) for x in with_rules],
            "median without": round(statistics.median(without)),
            "median with": round(statistics.median(with_rules)),
            "ratio with/without": round(statistics.median(with_rules) / statistics.median(without), 3),
            "trail bytes per file operation": round(per_op),
            "trail bytes per exec": round(per_exec),
            "workload per hour": WORKLOAD,
            "trail bytes per cage-hour, the stated busy claw": round(hour),
        }
    finally:
        sh("docker", "rm", "-f", name, check=False)
        sh("/bin/bash", "-c", delete, check=False)
        if mount.is_mount():
            sh("umount", str(mount), check=False)
        sh("rm", "-rf", host_volume_dir(claw), check=False)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, value in results.items():
        print(f"{key}: {value}")
    print(f"(key {audit_key(claw)}; written to {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
