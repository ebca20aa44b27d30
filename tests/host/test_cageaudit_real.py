"""The cage's audit piece (components/cageaudit.py, audit-create.sh and audit-delete.sh) on this
machine's kernel and its auditd (`make engine` starts it).

Each test renders the scripts for a throwaway cage whose "user" is a uid nothing else on this machine
runs as, loads the rules, acts as that uid (a shell started with setpriv, as a cage's processes are
only a uid to the host kernel), and reads back what auditd wrote with ausearch and tools/audittrail.
The rules are removed by the fixture also when a test fails.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from datetime import datetime, timezone
from collections.abc import Iterator
from pathlib import Path

import pytest

from components import cageaudit, cagehost
from components.conventions import audit_key, host_volume_dir
from tests.host.conftest import IN_CI, require_root, require_tool, run
from tools import audit, audittrail, engine

pytestmark = pytest.mark.host
SUBID_START = 310000
CONTAINER_UID = 4321  # host uid SUBID_START + 4321
NEIGHBOUR_UID = 4322


def bash(script: str, *, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        ["/bin/sh", "-c", cagehost.shell_command(script)], capture_output=True, text=True, timeout=60
    )
    if check and result.returncode != 0:
        pytest.fail(f"script exited {result.returncode}: {result.stderr.strip()}")
    return result


def rules_of(claw: str) -> list[str]:
    listed = run(["auditctl", "-l", "-k", audit_key(claw)]).stdout.splitlines()
    return [line for line in listed if line.endswith(f"-F key={audit_key(claw)}")]


def trail(cage: dict) -> list[audittrail.Event]:
    """What auditd has of the cage's key since the test began (ausearch matches keys by prefix: keep
    this claw's only; it skips the host's older logs by their time, not by decoding them)."""
    for _ in range(50):  # auditd writes asynchronously
        found = audit.timeline(cage["claw"], audit.local_run, {}, cage["started"])
        if found and found[-1].kind != "rules":
            return found
        time.sleep(0.2)
    return found


def as_uid(uid: int, script: str, cwd: Path) -> str:
    """Run `script` as `uid` in `cwd` (relative paths: its parents need not be open to that uid)."""
    done = subprocess.run(
        # The script runs in a child of the first shell: setpriv starts as root, and a process that
        # starts as root gets no audit context (audit-base.rules); what it starts as `uid` does.
        ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "/bin/sh", "-c", '/bin/sh -c "$1"; exit $?', "sh", script],
        cwd=cwd, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def audited(tmp_path: Path) -> Iterator[dict]:
    require_root()
    for tool in ("auditctl", "ausearch", "setpriv"):
        require_tool(tool)
    if engine.audit_daemon_pid() is None:
        message = "no audit daemon runs here (python -m tools.engine start starts it)"
        pytest.fail(message) if IN_CI else pytest.skip(message)
    subuid = tmp_path / "subuid"
    subuid.write_text(f"dockremap:{SUBID_START}:65536\n")
    claw = f"t-audit-{secrets.token_hex(3)}"
    work = tmp_path / "work"
    work.mkdir(mode=0o777)
    work.chmod(0o777)
    started = datetime.now(timezone.utc)
    cage = {"claw": claw, "subuid": str(subuid), "work": work, "uid": SUBID_START + CONTAINER_UID, "started": started}
    try:
        yield cage
    finally:
        bash(cageaudit.render_audit_delete(claw), check=False)
        mount = Path(host_volume_dir(claw)) / "mnt"
        if mount.is_mount():
            run(["umount", str(mount)])
        if Path(host_volume_dir(claw)).exists():
            run(["rm", "-rf", host_volume_dir(claw)])


def test_the_rules_load_converge_and_go_with_the_cage(audited) -> None:
    claw = audited["claw"]
    create = cageaudit.render_audit_create(claw, uid=CONTAINER_UID, volume=False, subuid_file=audited["subuid"])
    bash(create)
    loaded = rules_of(claw)
    want = cageaudit.audit_rules(claw, host_uid=audited["uid"], arch=run(["uname", "-m"]).stdout.strip(), volume=None)
    assert len(loaded) == len(want) == 2
    # auditctl lists a rule's syscalls in its own order: compare them as sets, the rest as text.
    for shown, rule in zip(loaded, want):
        assert set(shown.split(" -S ")[1].split(" ")[0].split(",")) == set(
            rule.split(" -S ")[1].split(" ")[0].split(",")
        )
        assert f"-F uid={audited['uid']}" in shown
    bash(create)  # again: the same rules, not twice as many
    assert rules_of(claw) == loaded
    bash(cageaudit.render_audit_delete(claw))
    assert rules_of(claw) == []
    bash(cageaudit.render_audit_delete(claw))  # absent is fine


def test_what_the_cages_uid_does_is_recorded_in_order_and_a_neighbours_uid_is_not(audited) -> None:
    claw, work = audited["claw"], audited["work"]
    bash(cageaudit.render_audit_create(claw, uid=CONTAINER_UID, volume=False, subuid_file=audited["subuid"]))
    as_uid(audited["uid"], "echo one > kept; mv kept moved; chmod 600 moved; rm moved; /bin/true tool-run", work)
    as_uid(SUBID_START + NEIGHBOUR_UID, "echo other > neighbours-file; /bin/true neighbour-run", work)
    found = trail(audited)
    steps = [(e.action, e.argv[1] if e.argv and len(e.argv) > 1 else e.paths) for e in found if e.kind != "rules"]
    assert [s for s in steps if s[1] != ["/dev/null"]] == [
        ("exec", "-c"),
        ("create", ["kept"]),
        ("exec", "kept"),
        ("rename", ["kept", "moved"]),
        ("exec", "600"),
        ("chmod", ["moved"]),
        ("exec", "moved"),
        ("delete", ["moved"]),
        ("exec", "tool-run"),
    ]
    assert all(e.uid == audited["uid"] and e.result == "ok" for e in found if e.kind != "rules")
    assert not any("neighbour" in " ".join([*(e.argv or []), *e.paths]) for e in found)


def test_a_time_bounded_search_reads_only_the_records_from_its_start(audited) -> None:
    # The bound is ausearch's own (-ts, whole seconds): it skips older records without decoding them,
    # which is what keeps a search of a large log short. The records are read raw here, before
    # tools.audit's exact filter, so the bound is ausearch's and not ours.
    claw, work = audited["claw"], audited["work"]
    bash(cageaudit.render_audit_create(claw, uid=CONTAINER_UID, volume=False, subuid_file=audited["subuid"]))
    as_uid(audited["uid"], "/bin/true before-the-bound", work)
    trail(audited)  # written
    time.sleep(1.5)  # more than ausearch's second between the first run and the bound
    bound = datetime.now(timezone.utc)
    # The kernel stamps a record with its coarse clock (up to one tick, 1-10 ms, behind the real time),
    # so a program started within a tick of the bound may fall on either side of it: the trail's times
    # are exact to the tick, not to the microsecond (docs/audit.md). The margin is many ticks.
    time.sleep(0.2)
    as_uid(audited["uid"], "/bin/true after-the-bound", work)
    for _ in range(50):  # auditd writes asynchronously
        if any("after-the-bound" in (e.argv or []) for e in trail(audited)):
            break
        time.sleep(0.2)
    raw = audit.read_output(audit.local_run(audit.search_script(claw, since=bound)))
    argv = [" ".join(e.argv or []) for e in audittrail.events(audittrail.parse_records(raw), {})]
    assert "/bin/true after-the-bound" in argv and "/bin/true before-the-bound" not in argv, argv
    everything = [" ".join(e.argv or []) for e in trail(audited)]
    assert everything.index("/bin/true before-the-bound") < everything.index("/bin/true after-the-bound")
    ended = [" ".join(e.argv or []) for e in audit.timeline(claw, audit.local_run, {}, audited["started"], bound)]
    assert "/bin/true before-the-bound" in ended and "/bin/true after-the-bound" not in ended


def test_reads_are_recorded_below_the_volume_only_and_a_volume_not_mounted_is_refused(audited) -> None:
    claw, work = audited["claw"], audited["work"]
    create = cageaudit.render_audit_create(claw, uid=CONTAINER_UID, volume=True, subuid_file=audited["subuid"])
    refused = bash(create, check=False)
    assert refused.returncode == 1 and "volume is not mounted" in refused.stderr
    assert rules_of(claw) == []
    mount = Path(host_volume_dir(claw)) / "mnt"
    mount.mkdir(parents=True)
    run(["mount", "-t", "tmpfs", "-o", "size=1m", "t-audit-volume", str(mount)])
    data = Path(cagehost.volume_mount_path(claw))
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    (data / "on-volume").write_text("volume data")
    (work / "elsewhere").write_text("elsewhere")
    (data / "on-volume").chmod(0o644)
    (work / "elsewhere").chmod(0o644)
    bash(create)
    assert len(rules_of(claw)) == 3
    # From inside each directory: the host's volume root need not be open to this uid (by relative
    # names, as a claw in its cage reaches its volume without the host's path above it).
    assert as_uid(audited["uid"], "cat on-volume", data) == "volume data"
    assert as_uid(audited["uid"], "cat elsewhere", work) == "elsewhere"
    reads = [(e.paths, e.result) for e in trail(audited) if e.action == "read"]
    assert reads == [(["on-volume"], "ok")]


@pytest.mark.parametrize("arch", sorted(cageaudit.AUDIT_SYSCALLS))
def test_the_audit_tools_know_every_syscall_the_rules_name(arch) -> None:
    # auditctl refuses a rule naming a syscall its table lacks: a host would refuse to run its cages.
    require_tool("ausyscall")
    table = set(run(["ausyscall", arch, "--dump"]).stdout.split())
    for kind, names in cageaudit.AUDIT_SYSCALLS[arch].items():
        assert set(names) <= table, (arch, kind, set(names) - table)


@pytest.mark.parametrize("code", sorted(audittrail.ARCH_NAMES))
def test_the_trails_syscall_numbers_are_the_audit_tools(code) -> None:
    require_tool("ausyscall")
    arch = audittrail.ARCH_NAMES[code]
    dump = run(["ausyscall", arch, "--dump"]).stdout.splitlines()[1:]
    table = {int(n): name for n, name in (line.split() for line in dump if line.strip())}
    for number, name in audittrail.SYSCALL_NAMES[code].items():
        assert table[number] == name, (arch, number)
