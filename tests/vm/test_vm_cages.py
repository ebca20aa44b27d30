"""Cages deployed to the VM over the production path: the Docker provider's ssh:// transport and
remote commands, each pinned to the derived host key, onto Debian's docker.io on cgroup v2. Then the
host-side facts of isolation that only such a host shows, and a teardown that leaves nothing."""

from __future__ import annotations

import shlex

import pytest

from components.conventions import (
    CAGE_VOLUME_MOUNT,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    HOST_VOLUME_ROOT,
    LABEL_ROLE,
    cage_cgroup,
    cage_slice,
)
from components import hostscripts
from tools import recover, replay, vm, vmhost

pytestmark = pytest.mark.vm

PROBE, NEIGHBOUR = "vm-probe", "vm-neighbour"


@pytest.fixture(scope="module")
def cages(vm_host):
    host, machine, status, _ = vm_host
    assert status.get("status") == "done", status
    deployment = vmhost.deploy_cages(host, machine)
    state = {"deployment": deployment, "torn_down": False}
    try:
        yield host, machine, state
    finally:
        if not state["torn_down"]:
            replay.teardown(deployment)


def ssh(machine, command: str):
    return machine.ssh(command, check=False, timeout=600)


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


def cage_dir(claw: str) -> str:
    """The cage's slice in the VM's cgroup tree, quoted for the shell (its name holds a backslash)."""
    return shlex.quote(f"/sys/fs/cgroup/{cage_cgroup(claw, 'systemd')}")


def test_whole_cage_limits_are_a_systemd_slice_on_cgroup_v2(cages):
    host, machine, _ = cages
    facts = limits_facts(host, PROBE)
    assert facts["driver"] == "systemd"
    slice_ = shlex.quote(cage_slice(PROBE))
    shown = dict(
        line.split("=", 1)
        for line in ssh(machine, f"systemctl show -p TasksMax,MemoryMax,MemorySwapMax,CPUQuotaPerSecUSec,"
                                 f"IOWeight,ActiveState,FragmentPath {slice_}").stdout.split("\n") if "=" in line
    )  # fmt: skip
    assert shown["ActiveState"] == "active"
    assert shown["FragmentPath"] == f"/etc/systemd/system/{cage_slice(PROBE)}"  # a unit file: it outlives a reboot
    assert shown["TasksMax"] == str(facts["pids"]) and shown["MemoryMax"] == str(facts["memory"])
    assert shown["MemorySwapMax"] == "0" and shown["IOWeight"] == "100"
    d = cage_dir(PROBE)
    assert ssh(machine, f"cat {d}/pids.max").stdout.strip() == str(facts["pids"])
    assert ssh(machine, f"cat {d}/memory.max").stdout.strip() == str(facts["memory"])
    assert ssh(machine, f"cat {d}/memory.swap.max").stdout.strip() == "0"
    assert ssh(machine, f"cat {d}/cpu.max").stdout.split() == [str(facts["cpu_quota"]), str(facts["cpu_period"])]
    # Both containers of the cage are scopes in its slice; the neighbour's are in its own.
    for claw in (PROBE, NEIGHBOUR):
        for name in (f"claw-{claw}", f"proxy-{claw}"):
            pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' {name}").stdout.strip()
            cgroup = ssh(machine, f"cat /proc/{pid}/cgroup").stdout.strip()
            assert cgroup.startswith(f"0::/{cage_cgroup(claw, 'systemd')}/docker-"), (name, cgroup)


def test_the_slice_and_its_limits_outlive_the_cages_containers(cages):
    host, machine, _ = cages
    facts = limits_facts(host, PROBE)
    d = cage_dir(PROBE)
    assert ssh(machine, f"docker stop -t 2 claw-{PROBE} proxy-{PROBE}").returncode == 0
    try:
        assert ssh(machine, f"systemctl is-active {shlex.quote(cage_slice(PROBE))}").stdout.strip() == "active"
        assert ssh(machine, f"cat {d}/pids.max").stdout.strip() == str(facts["pids"])
        # A new container given the slice as its parent lands in it, below the same limits.
        image = state_image(machine, f"claw-{PROBE}")
        joined = ssh(machine, f"docker run -d --name slice-join --cgroup-parent {shlex.quote(cage_slice(PROBE))} "
                              f"--entrypoint /usr/bin/python3 {image} -I -c 'import time; time.sleep(60)'")  # fmt: skip
        assert joined.returncode == 0, joined.stderr
        pid = ssh(machine, "docker inspect -f '{{.State.Pid}}' slice-join").stdout.strip()
        assert f"/{cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
    finally:
        ssh(machine, "docker rm -f slice-join")
        assert ssh(machine, f"docker start proxy-{PROBE} claw-{PROBE}").returncode == 0
    pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' claw-{PROBE}").stdout.strip()
    assert f"/{cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
    assert ssh(machine, f"cat {d}/memory.max").stdout.strip() == str(facts["memory"])


def state_image(machine, container: str) -> str:
    return ssh(machine, f"docker inspect -f '{{{{.Image}}}}' {container}").stdout.strip()


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


def test_a_fork_bomb_stops_at_the_cages_pids_limit_and_the_neighbour_still_runs(cages):
    host, machine, _ = cages
    pids_max = limits_facts(host, PROBE)["pids"]  # the whole cage's: claw and proxy together
    out = in_claw(machine, PROBE, FORK_BOMB).split()
    assert len(out) == 2 and out[1] == "11", out  # EAGAIN long before the thousandth fork
    assert int(out[0]) < pids_max
    peak = ssh(machine, f"cat {cage_dir(PROBE)}/pids.peak").stdout.strip()
    assert int(peak) <= pids_max
    assert in_claw(machine, NEIGHBOUR, "import os; print(len(os.listdir('/proc')) > 0)").strip() == "True"


def test_the_sealed_secret_is_open_only_in_the_claws_process(cages):
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


def test_a_reboot_fails_closed_and_one_command_brings_every_cage_back(cages):
    host, machine, _ = cages
    in_claw(machine, PROBE, f"open('{CAGE_VOLUME_MOUNT}/before-reboot', 'w').write('kept')")
    seconds = vm.reboot(machine)
    print(f"reboot to SSH: {seconds:.0f} s")
    target = recover.Host(host.evaluation, vmhost.HOST_NAME, machine.address, machine.operator_key)
    after = {s.claw: s for s in target.observe()}
    # What holds a secret is gone, and the claw cannot start without it: every cage failed closed.
    for claw in (PROBE, NEIGHBOUR):
        assert not after[claw].key and not after[claw].claw_running, after[claw]
        assert ssh(machine, f"test -e {HOST_KEY_ROOT}/{claw}").returncode == 1
    assert not after[PROBE].volume_mounted
    assert ssh(machine, "losetup -a").stdout.strip() == ""
    # What holds none is on disk and came back: the proxies (Docker's restart policy, at boot, in
    # their slices) and the slice's unit with the cage's limits.
    assert all(after[claw].proxy_running for claw in (PROBE, NEIGHBOUR)), after
    facts = limits_facts(host, PROBE)
    unit = ssh(machine, f"cat {shlex.quote('/etc/systemd/system/' + cage_slice(PROBE))}").stdout
    assert f"TasksMax={facts['pids']}" in unit and f"MemoryMax={facts['memory']}" in unit
    # No secret reached the disk before the reboot, so none is there after it.
    paths = f"/var/lib/docker /var/lib/containerd /etc /var/lib/cloud /var/log /root {HOST_VOLUME_ROOT} /srv /var/tmp"
    assert ssh(machine, f"grep -r -l -a -F {host.probe_secret} {paths} 2>/dev/null | head -5").stdout.strip() == ""
    # The preview says what the one command will do, and does nothing.
    preview: list[str] = []
    recover.recover(target, apply=False, out=preview.append)
    text = "\n".join(preview)
    for claw in (PROBE, NEIGHBOUR):
        assert f"put cage {claw}'s key on the host's tmpfs" in text and f"start claw-{claw}" in text
    assert f"re-open cage {PROBE}'s encrypted volume" in text
    assert {s.claw: s for s in target.observe()} == after
    # The command: every cage runs again, with its key, its volume's data and its limits.
    states = recover.recover(target, apply=True, out=preview.append)
    assert all(s.key and s.claw_running and s.proxy_running for s in states), states
    assert in_claw(machine, PROBE, f"print(open('{CAGE_VOLUME_MOUNT}/before-reboot').read())").strip() == "kept"
    assert ssh(machine, f"cat {cage_dir(PROBE)}/pids.max").stdout.strip() == str(facts["pids"])
    pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' claw-{PROBE}").stdout.strip()
    assert f"/{cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
    test_the_sealed_secret_is_open_only_in_the_claws_process(cages)


def test_teardown_leaves_nothing_on_the_vm(cages):
    _, machine, state = cages
    errors = replay.teardown(state["deployment"])
    state["torn_down"] = True
    assert errors == []
    assert ssh(machine, f"docker ps -aq --filter label={LABEL_ROLE}").stdout.strip() == ""
    assert ssh(machine, f"docker network ls -q --filter label={LABEL_ROLE}").stdout.strip() == ""
    for claw in (PROBE, NEIGHBOUR):
        assert ssh(machine, f"test -e {cage_dir(claw)}").returncode == 1
        assert ssh(machine, f"test -e {shlex.quote('/etc/systemd/system/' + cage_slice(claw))}").returncode == 1
        assert ssh(machine, f"test -e {HOST_KEY_ROOT}/{claw}").returncode == 1
        # Its files: the volume's directory (backing file, wrapped key) and the proxy's config.
        assert ssh(machine, f"test -e {HOST_VOLUME_ROOT}/{claw}").returncode == 1
        assert ssh(machine, f"test -e {HOST_PROXY_CONFIG_ROOT}/{claw}").returncode == 1
    assert ssh(machine, f"ls -A {HOST_VOLUME_ROOT}/.loop 2>/dev/null").stdout.strip() == ""  # no loop alias
    assert ssh(machine, "losetup -a").stdout.strip() == ""
    assert HOST_VOLUME_ROOT not in ssh(machine, "findmnt -rn -o TARGET").stdout
