"""Cages deployed to the VM over the production path: the Docker provider's ssh:// transport and
remote commands, each pinned to the derived host key, onto Debian's docker.io on cgroup v2. Then the
host-side facts of isolation that only such a host shows, and a teardown that leaves nothing."""

from __future__ import annotations

import shlex

import pytest

from components.conventions import CAGE_VOLUME_MOUNT, CGROUP_ROOT, HOST_KEY_ROOT, HOST_VOLUME_ROOT, LABEL_ROLE
from components import hostscripts
from tests.vm.conftest import NEIGHBOUR, PROBE, cage_cgroup, ssh
from tools import replay

pytestmark = pytest.mark.vm
GROUP = "cages"


def in_claw(machine, claw: str, program: str) -> str:
    done = ssh(machine, f"docker exec claw-{claw} /usr/bin/python3 -I -c {shlex.quote(program)}")
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_every_cage_runs_on_the_vm_engine(cages):
    _, machine, state = cages
    client = state["deployment"].client
    names = {c.name: c.status for c in client.containers.list(all=True)}
    for claw in (PROBE, NEIGHBOUR):
        assert names.get(f"claw-{claw}") == "running", names
        assert names.get(f"proxy-{claw}") == "running", names


def test_whole_cage_limits_in_cgroup_v2(cages):
    host, machine, _ = cages
    facts = limits_facts(host, PROBE)
    d = f"/sys/fs/cgroup/{CGROUP_ROOT}/{PROBE}"
    assert ssh(machine, f"cat {d}/pids.max").stdout.strip() == str(facts["pids"])
    assert ssh(machine, f"cat {d}/memory.max").stdout.strip() == str(facts["memory"])
    assert ssh(machine, f"cat {d}/memory.swap.max").stdout.strip() == "0"
    assert ssh(machine, f"cat {d}/cpu.max").stdout.split() == [str(facts["cpu_quota"]), str(facts["cpu_period"])]
    # Both containers of the cage live below it; the neighbour's below its own.
    procs = ssh(machine, f"cat $(find {d} -mindepth 2 -name cgroup.procs) | wc -l").stdout.strip()
    assert int(procs) >= 2
    for name in (f"claw-{PROBE}", f"proxy-{PROBE}"):
        pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' {name}").stdout.strip()
        assert f"/{CGROUP_ROOT}/{PROBE}/" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout


FORK_BOMB = (
    "import os, signal, time\n"
    "children = []\n"
    "errno = 0\n"
    "try:\n"
    "    while len(children) < 1000:\n"
    "        pid = os.fork()\n"
    "        if pid == 0:\n"
    "            time.sleep(60); os._exit(0)\n"
    "        children.append(pid)\n"
    "except OSError as e:\n"
    "    errno = e.errno\n"
    "print(len(children), errno)\n"
    "for pid in children:\n"  # the bomb cleans up after itself, so that the next probe can start
    "    os.kill(pid, signal.SIGKILL)\n"
    "for pid in children:\n"
    "    os.waitpid(pid, 0)\n"
)


def limits_facts(host, claw: str) -> dict:
    limits = next(r for r in host.evaluation.resources if r.name == f"{claw}-limits")
    return hostscripts.script_facts(shlex.split(limits.inputs["create"])[2])


def test_a_fork_bomb_stops_at_the_cages_pids_limit_and_the_neighbour_still_runs(cages, vm_scorecard):
    host, machine, _ = cages
    pids_max = limits_facts(host, PROBE)["pids"]  # the whole cage's: claw and proxy together
    out = in_claw(machine, PROBE, FORK_BOMB).split()
    peak = ssh(machine, f"cat {cage_cgroup(machine, PROBE)}/pids.peak").stdout.strip()
    neighbour = in_claw(machine, NEIGHBOUR, "import os; print(len(os.listdir('/proc')) > 0)").strip()
    ok = len(out) == 2 and out[1] == "11" and int(out[0]) < pids_max and int(peak) <= pids_max  # EAGAIN
    vm_scorecard.record(
        GROUP, f"{PROBE}: fork bomb (up to 1000 forks)", f"EAGAIN below the cage's pids.max ({pids_max}); neighbour runs",
        f"forks, errno: {' '.join(out)}; the cage's pids.peak {peak}; neighbour answers: {neighbour}",
        ok and neighbour == "True",
    )  # fmt: skip
    assert len(out) == 2 and out[1] == "11", out  # EAGAIN long before the thousandth fork
    assert int(out[0]) < pids_max
    assert int(peak) <= pids_max
    assert neighbour == "True"


def test_the_sealed_secret_is_open_only_in_the_claws_process(cages, vm_scorecard):
    host, machine, _ = cages
    found = in_claw(machine, PROBE, (
        "import glob\n"
        "hits = []\n"
        "for p in glob.glob('/proc/[0-9]*/environ'):\n"
        "    try:\n"
        "        if b'ANTHROPIC_API_KEY=' + " + repr(host.probe_secret.encode()) + " in open(p, 'rb').read(): hits.append(p)\n"
        "    except OSError: pass\n"
        "print(len(hits))\n"
    ))  # fmt: skip
    assert int(found) >= 1
    # Nowhere on the VM's disk: Docker's data root, configs, cloud-init's data, logs, the volume root.
    paths = f"/var/lib/docker /var/lib/containerd /etc /var/lib/cloud /var/log /root {HOST_VOLUME_ROOT} /srv"
    grep = ssh(machine, f"grep -r -l -a -F {host.probe_secret} {paths} 2>/dev/null | head -5")
    vm_scorecard.record(
        GROUP, f"{PROBE}: its sealed secret's plaintext, searched in the VM's files",
        "open in the claw's process; in no file (data root, /etc, cloud-init, logs, volumes)",
        f"claw processes holding it: {int(found)}; files holding it: {grep.stdout.split() or 'none'}",
        int(found) >= 1 and grep.stdout.strip() == "",
    )  # fmt: skip
    assert grep.stdout.strip() == "", grep.stdout


def test_the_key_lives_on_tmpfs_and_the_volume_is_encrypted(cages):
    _, machine, _ = cages
    assert ssh(machine, f"findmnt -n -o FSTYPE --target {HOST_KEY_ROOT}").stdout.strip() == "tmpfs"
    volume = in_claw(machine, PROBE, (
        f"open('{CAGE_VOLUME_MOUNT}/note', 'w').write('kept'); print(open('{CAGE_VOLUME_MOUNT}/note').read())"
    ))  # fmt: skip
    assert volume.strip() == "kept"
    mounts = ssh(machine, "findmnt -rn -o SOURCE,TARGET,FSTYPE").stdout
    assert f"{HOST_VOLUME_ROOT}/" in mounts and "ext4" in mounts


@pytest.mark.vm_teardown
def test_teardown_leaves_nothing_on_the_vm(cages, vm_scorecard):
    _, machine, state = cages
    errors = replay.teardown(state["deployment"])
    state["torn_down"] = True
    left = {
        "containers": ssh(machine, f"docker ps -aq --filter label={LABEL_ROLE}").stdout.split(),
        "networks": ssh(machine, f"docker network ls -q --filter label={LABEL_ROLE}").stdout.split(),
        "cgroups": [d for d in state["cgroups"].values() if ssh(machine, f"test -e {d}").returncode != 1],
        "keys": [c for c in (PROBE, NEIGHBOUR) if ssh(machine, f"test -e {HOST_KEY_ROOT}/{c}").returncode != 1],
        "loop devices": ssh(machine, "losetup -a").stdout.splitlines(),
        "mounts": [m for m in ssh(machine, "findmnt -rn -o TARGET").stdout.split() if HOST_VOLUME_ROOT in m],
    }
    vm_scorecard.record(
        GROUP, "teardown of both cages", "no error; no container, network, cgroup, key, loop device or mount left",
        {"errors": errors, **{k: v or "none" for k, v in left.items()}}, errors == [] and not any(left.values()),
    )  # fmt: skip
    assert errors == []
    assert left == {k: [] for k in left}, left
