"""Cages deployed to the VM over the production path: the Docker provider's ssh:// transport and
remote commands, each pinned to the derived host key, onto Debian's docker.io on cgroup v2. Then the
host-side facts of isolation that only such a host shows, and a teardown that leaves nothing."""

from __future__ import annotations

import shlex

import pytest

from components import conventions, hostscripts
from components.conventions import (
    CAGE_VOLUME_MOUNT,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    HOST_VOLUME_ROOT,
    LABEL_ROLE,
    audit_key,
    cage_slice,
)
from tests.vm import probes
from tests.vm.conftest import CAGES, NEIGHBOUR, PROBE, cage_cgroup, ssh, ssh_mux_stop
from tools import recover, replay, vm, vmhost

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
    for claw in CAGES:
        assert names.get(f"claw-{claw}") == "running", names
        assert names.get(f"proxy-{claw}") == "running", names


def cage_dir(claw: str) -> str:
    """The cage's slice in the VM's cgroup tree, quoted for the shell (its name holds a backslash)."""
    return shlex.quote(f"/sys/fs/cgroup/{conventions.cage_cgroup(claw, 'systemd')}")


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
            assert cgroup.startswith(f"0::/{conventions.cage_cgroup(claw, 'systemd')}/docker-"), (name, cgroup)


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
        assert f"/{conventions.cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
    finally:
        ssh(machine, "docker rm -f slice-join")
        assert ssh(machine, f"docker start proxy-{PROBE} claw-{PROBE}").returncode == 0
    pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' claw-{PROBE}").stdout.strip()
    assert f"/{conventions.cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
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


def test_a_fork_bomb_stops_at_the_cages_pids_limit_and_the_neighbour_still_runs(cages, vm_scorecard):
    host, machine, _ = cages
    pids_max = limits_facts(host, PROBE)["pids"]  # the whole cage's: claw and proxy together
    out = in_claw(machine, PROBE, FORK_BOMB).split()
    peak = ssh(machine, f"cat {shlex.quote(cage_cgroup(machine, PROBE) + '/pids.peak')}").stdout.strip()
    neighbour = in_claw(machine, NEIGHBOUR, "import os; print(len(os.listdir('/proc')) > 0)").strip()
    # EAGAIN; pids.peak may pass pids.max only by execs that joined the cgroup (probes.MIGRATED)
    ok = len(out) == 2 and out[1] == "11" and int(out[0]) < pids_max and int(peak) <= pids_max + probes.MIGRATED
    vm_scorecard.record(
        GROUP, f"{PROBE}: fork bomb (up to 1000 forks)", f"EAGAIN below the cage's pids.max ({pids_max}); neighbour runs",
        f"forks, errno: {' '.join(out)}; the cage's pids.peak {peak}; neighbour answers: {neighbour}",
        ok and neighbour == "True",
    )  # fmt: skip
    assert len(out) == 2 and out[1] == "11", out  # EAGAIN long before the thousandth fork
    assert int(out[0]) < pids_max
    assert int(peak) <= pids_max + probes.MIGRATED
    assert neighbour == "True"


def claw_processes_holding_the_secret(host, machine) -> int:
    """How many of the probe claw's processes hold its secret, opened, in their environment."""
    return int(in_claw(machine, PROBE, (
        "import glob\n"
        "hits = []\n"
        "for p in glob.glob('/proc/[0-9]*/environ'):\n"
        "    try:\n"
        "        if b'ANTHROPIC_API_KEY=' + " + repr(host.probe_secret.encode()) + " in open(p, 'rb').read(): hits.append(p)\n"
        "    except OSError: pass\n"
        "print(len(hits))\n"
    )))  # fmt: skip


def test_the_sealed_secret_is_open_only_in_the_claws_process(cages, vm_scorecard):
    host, machine, _ = cages
    found = claw_processes_holding_the_secret(host, machine)
    assert found >= 1
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


@pytest.mark.vm_reboot
def test_a_reboot_fails_closed_and_one_command_brings_every_cage_back(cages, vm_scorecard):
    host, machine, _ = cages
    in_claw(machine, PROBE, f"open('{CAGE_VOLUME_MOUNT}/before-reboot', 'w').write('kept')")
    ssh_mux_stop(machine)  # the shared connection would not survive the reboot
    seconds = vm.reboot(machine)
    target = recover.Host(host.evaluation, vmhost.HOST_NAME, machine.address, machine.operator_key)
    after = {s.claw: s for s in target.observe()}
    # What holds a secret is gone, and the claw cannot start without it: every cage failed closed.
    # The audit rules live in the kernel only: gone too, loaded again by the recovery before the claw runs.
    failed_closed = all(not s.key and not s.audited and not s.claw_running for s in after.values())
    failed_closed = failed_closed and not after[PROBE].volume_mounted
    keys_left = [c for c in (PROBE, NEIGHBOUR) if left_at(machine, f"{HOST_KEY_ROOT}/{c}")]
    loops = ssh(machine, "losetup -a").stdout.split()
    # What holds none is on disk and came back: the proxies (Docker's restart policy, at boot, in
    # their slices) and the slice's unit with the cage's limits.
    facts = limits_facts(host, PROBE)
    unit = ssh(machine, f"cat {shlex.quote('/etc/systemd/system/' + cage_slice(PROBE))}").stdout
    kept_by_itself = all(s.proxy_running for s in after.values()) and f"TasksMax={facts['pids']}" in unit
    # No secret reached the disk before the reboot, so none is there after it.
    paths = f"/var/lib/docker /var/lib/containerd /etc /var/lib/cloud /var/log /root {HOST_VOLUME_ROOT} /srv /var/tmp"
    on_disk = ssh(machine, f"grep -r -l -a -F {host.probe_secret} {paths} 2>/dev/null | head -5").stdout.split()
    # The preview says what the one command will do, and does nothing.
    preview: list[str] = []
    recover.recover(target, apply=False, out=preview.append)
    text = "\n".join(preview)
    planned = all(
        f"put cage {c}'s key on the host's tmpfs" in text and f"load cage {c}'s kernel audit rules" in text
        and f"start claw-{c}" in text
        for c in after
    )  # fmt: skip
    planned = planned and f"re-open cage {PROBE}'s encrypted volume" in text
    unchanged = {s.claw: s for s in target.observe()} == after
    # The command: every cage runs again, with its key, its volume's data and its limits.
    states = recover.recover(target, apply=True, out=preview.append)
    back = all(s.key and s.audited and s.claw_running and s.proxy_running for s in states)
    kept = in_claw(machine, PROBE, f"print(open('{CAGE_VOLUME_MOUNT}/before-reboot').read())").strip()
    pids = ssh(machine, f"cat {cage_dir(PROBE)}/pids.max").stdout.strip()
    pid = ssh(machine, f"docker inspect -f '{{{{.State.Pid}}}}' claw-{PROBE}").stdout.strip()
    in_slice = f"/{conventions.cage_cgroup(PROBE, 'systemd')}/docker-" in ssh(machine, f"cat /proc/{pid}/cgroup").stdout
    # The claw opened its credentials again. (Its files are not searched now: the isolation probes had
    # the claw copy its secret into its own volume, which the host sees decrypted while it is mounted.)
    reopened = claw_processes_holding_the_secret(host, machine) >= 1
    vm_scorecard.record(
        GROUP, "reboot of the VM, then `python -m tools.recover --vm` (preview) and `--apply`",
        "every claw fails closed (no key, no audit rules, not running, no volume); proxies and slices come back by "
        "themselves; "
        "no secret on disk; the preview changes nothing; the command brings every cage back, data and limits kept",
        f"rebooted to SSH in {seconds:.0f} s; after it (claw, key, audited, claw running, proxy running): "
        f"{[(s.claw, s.key, s.audited, s.claw_running, s.proxy_running) for s in after.values()]}, keys left {keys_left or 'none'}, "
        f"loop devices {loops or 'none'}, secret in files {on_disk or 'none'}; preview planned every step: {planned}, "
        f"changed nothing: {unchanged}; after --apply every cage runs: {back}, the file written before reads "
        f"{kept!r}, pids.max {pids}, claw in its slice: {in_slice}, its credentials open again: {reopened}",
        failed_closed and not keys_left and not loops and kept_by_itself and not on_disk and planned and unchanged
        and back and kept == "kept" and pids == str(facts["pids"]) and in_slice and reopened,
    )  # fmt: skip
    assert failed_closed and not keys_left and not loops, after
    assert kept_by_itself, (after, unit)
    assert on_disk == []
    assert planned and unchanged, text
    assert back, states
    assert kept == "kept" and pids == str(facts["pids"]) and in_slice
    assert reopened


def left_at(machine, path: str) -> bool:
    """True while `path` is still on the VM."""
    return ssh(machine, f"test -e {shlex.quote(path)}").returncode != 1


@pytest.mark.vm_teardown
def test_teardown_leaves_nothing_on_the_vm(cages, vm_scorecard):
    _, machine, state = cages
    errors = replay.teardown(state["deployment"])
    state["torn_down"] = True
    left = {
        "containers": ssh(machine, f"docker ps -aq --filter label={LABEL_ROLE}").stdout.split(),
        "networks": ssh(machine, f"docker network ls -q --filter label={LABEL_ROLE}").stdout.split(),
        "cgroups": [d for d in state["cgroups"].values() if left_at(machine, d)],
        "slice units": [c for c in CAGES if left_at(machine, f"/etc/systemd/system/{cage_slice(c)}")],
        "keys": [c for c in CAGES if left_at(machine, f"{HOST_KEY_ROOT}/{c}")],
        # Its files: the volume's directory (backing file, wrapped key), the proxy's config, loop aliases.
        "files": [
            p
            for c in CAGES
            for p in (f"{HOST_VOLUME_ROOT}/{c}", f"{HOST_PROXY_CONFIG_ROOT}/{c}")
            if left_at(machine, p)
        ]
        + ssh(machine, f"ls -A {HOST_VOLUME_ROOT}/.loop 2>/dev/null").stdout.split(),
        "loop devices": ssh(machine, "losetup -a").stdout.splitlines(),
        "mounts": [m for m in ssh(machine, "findmnt -rn -o TARGET").stdout.split() if HOST_VOLUME_ROOT in m],
        "audit rules": [
            line
            for line in ssh(machine, "auditctl -l").stdout.splitlines()
            if any(line.endswith(f"-F key={audit_key(c)}") for c in CAGES)
        ],
    }
    vm_scorecard.record(
        GROUP, f"teardown of the {len(CAGES)} cages (two under runc, one under gVisor)",
        "no error; no container, network, slice (cgroup or unit), key, file, loop device, mount or audit rule left",
        {"errors": errors, **{k: v or "none" for k, v in left.items()}}, errors == [] and not any(left.values()),
    )  # fmt: skip
    # Each cage's trail outlives it: its records stay in the host's log, the last one its rules' removal.
    from tests.vm.test_vm_trail import trail

    host = cages[0]
    trails = {c: trail(host, machine, c) for c in CAGES}
    ends = {c: (t[-1].kind, t[-1].action) if t else None for c, t in trails.items()}
    kept = all(end == ("rules", "removed") for end in ends.values())
    vm_scorecard.record(
        GROUP, "each cage's audit trail after its teardown (tools.audit's search on the VM)",
        "kept in the host's audit log; its last event the removal of the cage's rules",
        {c: f"{len(t)} events, last {ends[c]}" for c, t in trails.items()}, kept,
    )  # fmt: skip
    assert errors == []
    assert left == {k: [] for k in left}, left
    assert kept, ends
