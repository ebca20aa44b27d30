"""What the gVisor tier costs, measured on the Debian 13 VM host in one run (issue 16):

    sudo .venv/bin/python -m benchmarks.gvisor [--rounds 3] [--out benchmarks/gvisor-results.json]

It boots the VM tier's host (tools.vm, tools.vmhost: the program's user-data, first contact and
bootstrap), deploys its three cages (vm-probe under runc, vm-gvisor under gVisor: the same limits, a
volume and a sealed secret each), measures, tears the cages down and stops the VM. With
CLAWSTAFF_VM_REUSE=1 it uses a VM that `python -m tools.vm up` left running instead of booting one.

- memory per claw container at rest: the container's cgroup memory.current and its anon share (the
  gVisor claw's cgroup holds the whole sandbox: the Sentry, the gofer and the claw's memory);
- start to ready: `docker start` of the stopped claw container until its health command (the claw
  reaching its proxy, as the container's healthcheck runs it) first passes; the median of `--rounds`;
- a syscall-heavy workload inside the claw: stat, getpid and open/close of /dev/null in a loop for
  4 s (probe by docker exec, as the claw's uid), in operations per second.

Every figure is a ratio of the two claws in the same run: under TCG (software emulation) absolute
times mean nothing, and gVisor's systrap platform pays for each trapped syscall in emulated
instructions, so the syscall ratio here is an upper bound of what real hardware shows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from components.cage import HEALTHCHECK_PYTHON  # noqa: E402
from components.conventions import PROXY_ALIAS  # noqa: E402
from components.egress import PROXY_PORT  # noqa: E402
from tests.vm.conftest import container_cgroup  # noqa: E402
from tools import replay, vm, vmhost  # noqa: E402

RUNC_CLAW, GVISOR_CLAW = "vm-probe", "vm-gvisor"
HEALTH = [
    *HEALTHCHECK_PYTHON,
    "-c",
    f"import socket; socket.create_connection(('{PROXY_ALIAS}', {PROXY_PORT}), 3).close()",
]
SYSCALLS = (
    "import os, time, json\n"
    "n, end = 0, time.monotonic() + 4\n"
    "while time.monotonic() < end:\n"
    "    for _ in range(50):\n"
    "        os.stat('/'); os.getpid(); os.close(os.open('/dev/null', os.O_RDONLY))\n"
    "    n += 150\n"
    "print(json.dumps(n / 4))\n"
)


def ssh(machine: vm.Vm, command: str, timeout: float = 600) -> str:
    done = vm.run([*machine.ssh_argv(), command], check=False, timeout=timeout)
    if done.returncode != 0:
        raise vm.VmError(f"{command[:80]} failed ({done.returncode}): {done.stderr[-500:]}")
    return done.stdout


def memory(machine: vm.Vm, container: str) -> dict[str, float]:
    d = shlex.quote(container_cgroup(machine, container))
    current = int(ssh(machine, f"cat {d}/memory.current"))
    stat = dict(l.split() for l in ssh(machine, f"cat {d}/memory.stat").splitlines())
    return {"current_mib": round(current / 2**20, 1), "anon_mib": round(int(stat["anon"]) / 2**20, 1)}


def start_to_ready(machine: vm.Vm, container: str) -> float:
    """Seconds from `docker start` until the health command first passes (measured on the VM)."""
    health = shlex.join(["docker", "exec", container, *HEALTH])
    script = (
        f"docker stop -t 5 {container} >/dev/null; t0=$(date +%s.%N); docker start {container} >/dev/null; "
        f'until {health} 2>/dev/null; do sleep 0.2; done; t1=$(date +%s.%N); python3 -c "print($t1 - $t0)"'
    )
    return float(ssh(machine, script, timeout=900))


def syscall_rate(machine: vm.Vm, container: str) -> float:
    return float(ssh(machine, shlex.join(["docker", "exec", container, *HEALTHCHECK_PYTHON, "-c", SYSCALLS])))


def measure(machine: vm.Vm, rounds: int) -> dict:
    claws = {"runc": f"claw-{RUNC_CLAW}", "gvisor": f"claw-{GVISOR_CLAW}"}
    time.sleep(30)  # both claws settle after their first health checks
    out: dict = {"memory": {k: memory(machine, c) for k, c in claws.items()}}
    out["syscalls_per_s"] = {k: [syscall_rate(machine, c) for _ in range(rounds)] for k, c in claws.items()}
    out["start_to_ready_s"] = {k: [start_to_ready(machine, c) for _ in range(rounds)] for k, c in claws.items()}
    med = {k: statistics.median(v) for k, v in out["start_to_ready_s"].items()}
    rate = {k: statistics.median(v) for k, v in out["syscalls_per_s"].items()}
    out["ratios"] = {
        "memory_current_gvisor_over_runc": round(out["memory"]["gvisor"]["current_mib"] / out["memory"]["runc"]["current_mib"], 2),
        "start_to_ready_gvisor_over_runc": round(med["gvisor"] / med["runc"], 2),
        "syscall_workload_slowdown_runc_rate_over_gvisor_rate": round(rate["runc"] / rate["gvisor"], 2),
    }  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "gvisor-results.json")
    args = parser.parse_args(argv)
    host = vmhost.rendered()
    running = vm.Vm.load()
    reuse = os.environ.get("CLAWSTAFF_VM_REUSE") == "1" and running is not None and running.alive()
    machine = running if reuse else vm.boot(host.user_data, host.first_contact_public)
    try:
        if not reuse:
            status = vm.wait_for_cloud_init(machine)
            if status.get("status") != "done":
                raise vm.VmError(f"cloud-init did not finish: {status}")
            vmhost.provision(host, machine)
        deployment = vmhost.deploy_cages(host, machine)
        try:
            figures = measure(machine, args.rounds)
        finally:
            replay.teardown(deployment)
    finally:
        if not reuse:
            vm.down()
    result = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "where": "the VM tier's Debian 13 host under QEMU/TCG (2 vCPUs, 3 GiB), Docker 26, runsc 0.0~20240729 "
        "(systrap, --network=host), cgroup v2 with the systemd driver",
        "claws": {"runc": RUNC_CLAW, "gvisor": GVISOR_CLAW},
        "rounds": args.rounds,
        **figures,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["ratios"], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
