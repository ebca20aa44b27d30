"""The VM host tier: a Debian 13 VM (systemd, cgroup v2, Debian's docker.io) booted under QEMU/TCG
with the user-data the program renders, then provisioned over SSH the way `pulumi up` provisions a
new cloud host (tools/vm.py, tools/vmhost.py). Outside CI a missing tool or a non-root run skips;
in CI (CI=true) it fails. The VM is booted once per session and stopped at the end
(CLAWSTAFF_VM_KEEP=1 leaves it running for a look: `python -m tools.vm ssh ...`; outside CI,
CLAWSTAFF_VM_REUSE=1 runs the tests against a VM that `python -m tools.vm up` left running).

The three cages are deployed once per session (`cages`) and shared by test_vm_cages.py and
test_vm_isolation.py and test_vm_gvisor.py; the test marked `vm_teardown` removes them and runs after every other test of
the tier. The probes record the VM host's scorecard (`vm_scorecard`, build/vm-isolation-report.json;
`python -m tools.isolation_report --vm --no-run --markdown docs/vm-isolation-report.md` renders it).
"""

from __future__ import annotations

import os
import posixpath
import shutil
import subprocess
import time

import pytest

from tests.conftest import IN_CI
from tests.integration.bench import PLACEBO
from tools import isolation_report, replay, vm, vmhost

PROBE, NEIGHBOUR, GVISOR = "vm-probe", "vm-neighbour", "vm-gvisor"  # the cages of tools.vmhost.stack_config
CAGES = (PROBE, NEIGHBOUR, GVISOR)  # GVISOR runs under gVisor (tests/vm/test_vm_gvisor.py), the others under runc
NEEDED = ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "nft", "ssh", "ssh-keygen", "apt-cacher-ng")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the VM tier cannot run: {reason} (.ci/run must provide it)")
    pytest.skip(f"the VM tier cannot run here: {reason}")


@pytest.fixture(scope="session")
def vm_host():
    """(the host as the program renders it, the VM, what provisioning printed)."""
    if os.geteuid() != 0:
        _unavailable("it needs root (tap device, nftables, mmdebstrap)")
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        _unavailable(f"missing {', '.join(missing)}")
    host = vmhost.rendered()
    running = vm.Vm.load()
    if os.environ.get("CLAWSTAFF_VM_REUSE") == "1" and running and running.alive() and not IN_CI:
        # Development only: the VM `python -m tools.vm up` left running (already provisioned).
        yield host, running, vm.wait_for_cloud_init(running), {}
        return
    machine = vm.boot(host.user_data, host.first_contact_public)
    try:
        status = vm.wait_for_cloud_init(machine)
        logs = vmhost.provision(host, machine) if status.get("status") == "done" else {}
        yield host, machine, status, logs
    finally:
        if os.environ.get("CLAWSTAFF_VM_KEEP") != "1":
            vm.down()


def pytest_collection_modifyitems(config, items):
    """The reboot test runs after every probe (they measure the first boot), the teardown test, which
    removes the session's cages, after every other test of the tier."""
    reboot = [item for item in items if item.get_closest_marker("vm_reboot")]
    last = [item for item in items if item.get_closest_marker("vm_teardown")]
    items[:] = [item for item in items if item not in last and item not in reboot] + reboot + last


def ssh_argv(machine) -> list[str]:
    """The tier's pinned SSH command (tools.vm.Vm.ssh_argv) over one multiplexed connection: under
    TCG every new SSH handshake costs the VM seconds, and the tests read many small files. The
    master ends after 5 idle minutes, or with the session's cages."""
    argv, path = machine.ssh_argv(), machine.workdir / "ssh-mux"
    options = ["-o", f"ControlPath={path}"]
    if not path.exists():
        # ServerAlive: the master also ends when the VM goes away. Wait for its socket, so that the
        # next call cannot start a second connection that finds no master.
        alive = ["-o", "ServerAliveInterval=15", "-o", "ServerAliveCountMax=4"]
        subprocess.run(
            [*argv[:-1], *options, *alive, "-o", "ControlMaster=yes", "-o", "ControlPersist=300", "-f", "-N", argv[-1]],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120,
        )  # fmt: skip
        for _ in range(100):
            if path.exists():
                break
            time.sleep(0.1)
    return [*argv[:-1], *options, "-o", "ControlMaster=no", argv[-1]]


def ssh_mux_stop(machine) -> None:
    argv = machine.ssh_argv()
    subprocess.run([*argv[:-1], "-o", f"ControlPath={machine.workdir / 'ssh-mux'}", "-O", "exit", argv[-1]],
                   capture_output=True, timeout=60)  # fmt: skip


def ssh(machine, command: str, timeout: float = 600, input: str | None = None):
    return vm.run([*ssh_argv(machine), command], check=False, timeout=timeout, input=input)


def container_cgroup(machine, container: str) -> str:
    """The container's cgroup v2 directory on the VM, read from its init process at run time (the
    cgroup driver and the cage's parent, a directory or a systemd slice, are the program's choice)."""
    pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' {container}").stdout.strip()
    assert pid.isdigit() and pid != "0", f"{container} is not running: {pid!r}"
    lines = ssh(machine, f"cat /proc/{pid}/cgroup").stdout.splitlines()
    unified = [line.split("::", 1)[1] for line in lines if line.startswith("0::")]
    assert unified, f"no cgroup v2 entry for {container}: {lines}"
    return "/sys/fs/cgroup" + unified[0]


def cage_cgroup(machine, claw: str) -> str:
    """The whole cage's cgroup (claw and proxy below it): the parent of the claw container's."""
    return posixpath.dirname(container_cgroup(machine, f"claw-{claw}"))


@pytest.fixture(scope="session")
def vm_scorecard():
    card = isolation_report.Scorecard(
        path=isolation_report.VM_REPORT,
        title="ClawCage isolation scorecard: the Debian 13 VM host",
        where=(
            "by the VM tier (`make vm-isolation-report`: tests/vm) on a Debian 13 VM under QEMU/TCG "
            "(systemd, cgroup v2, Debian's docker.io), cages deployed over the production path"
        ),
        notes_heading="What the tier adds around the host (stand-ins; the host is as the program provisions it):",
    )
    card.notes.append(
        "QEMU/TCG (software emulation, 2 vCPUs, 3 GiB): CPU-bound work runs about 27x slower than on real "
        "hardware, so every duration and latency here is a figure, never a verdict"
    )
    yield card
    card.write()


@pytest.fixture(scope="session")
def cages(vm_host):
    """The three cages, deployed once over ssh:// (tools.vmhost.deploy_cages); the cgroup directory of
    each cage as it was found after the deploy, for the teardown check."""
    host, machine, status, _ = vm_host
    assert status.get("status") == "done", status
    deployment = vmhost.deploy_cages(host, machine)
    state = {"deployment": deployment, "torn_down": False}
    try:
        state["cgroups"] = {claw: cage_cgroup(machine, claw) for claw in CAGES}
        yield host, machine, state
    finally:
        if not state["torn_down"]:
            replay.teardown(deployment)
        ssh_mux_stop(machine)


@pytest.fixture(scope="module")
def neighbour(request, cages, vm_scorecard):
    """The neighbour cage measuring itself through the whole module; its figures at rest first,
    measured as a fault's are: while the module's faulty cage (its `FAULTY`, else the probe cage) runs
    a probe that does nothing for 10 s (tests.integration.bench.PLACEBO) through the same SSH and
    `docker exec` a fault's probe takes, so what the harness costs the VM is in both."""
    from tests.vm import probes  # probes imports this module

    _, machine, _ = cages
    faulty = getattr(request.module, "FAULTY", PROBE)
    measuring = probes.Neighbour(machine, NEIGHBOUR)
    try:
        measuring.window()
        probes.probe(machine, f"claw-{faulty}", PLACEBO, {"seconds": 10}, timeout=120)
        measuring.rest = measuring.window()
        vm_scorecard.latency.append({"fault": f"at rest ({faulty} runs the placebo)", "neighbour": NEIGHBOUR,
                                     **measuring.rest})  # fmt: skip
        yield measuring
    finally:
        measuring.stop()


def neighbour_row(card, fault: str, during: dict, rest: dict, group: str = "vm host") -> bool:
    """The neighbour kept answering (asserted); its latency is a figure, next to rest's."""
    card.latency.append({"fault": fault, "neighbour": NEIGHBOUR, **during})
    ratio = round(during["p95_ms"] / rest["p95_ms"], 2) if rest["p95_ms"] else None
    ok = during["fails"] == 0 and during["n"] >= 3
    card.record(
        group, f"{NEIGHBOUR} connectivity during: {fault}", "answers every time (latency: figures only)",
        f"n={during['n']} fails={during['fails']} p50={during['p50_ms']} p95={during['p95_ms']} ms "
        f"({ratio}x rest p95 {rest['p95_ms']} ms)", ok,
    )  # fmt: skip
    return ok
