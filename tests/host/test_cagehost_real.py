"""The cage's host-side scripts (components/hostscripts/, rendered by components/cagehost.py), run as
root on this machine.

Each test renders a script, runs it with bash exactly as Pulumi's command provider would (secrets on
stdin only) and then checks the kernel's view: cgroup files and a fork bomb that hits the limit, a
container that lands below the cage's cgroup, tmpfs mounts and file modes, an encrypted loop volume
whose backing file does not contain what was written. Every fixture removes what it made, also when
the test fails.
"""

from __future__ import annotations

import base64
import os
import shlex
import re
import secrets
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from components import cagehost, hostscripts
from components.conventions import host_key_dir, host_volume_dir
from components.hostconfig import LOCAL_CGROUP_DRIVER
from tests.host.conftest import IN_CI, require_root, require_tool, run

pytestmark = pytest.mark.host

MiB = 1024 * 1024
CONTAINER_UID = 65532
DRIVER = LOCAL_CGROUP_DRIVER  # this machine's engine has no systemd (the slice form runs on the VM tier)
SUBID_START = 300000  # the test's stand-in for dockremap's range (this host may run without userns-remap)


def unavailable(reason: str) -> None:
    """Like require_tool: a missing prerequisite fails in CI and skips elsewhere."""
    if IN_CI:
        pytest.fail(reason)
    pytest.skip(reason)


def claw_name(role: str) -> str:
    return f"t-{role}-{secrets.token_hex(3)}"


def bash(script: str, stdin: str = "", *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a rendered script as Pulumi's local Command does (`/bin/sh -c <create>`, secret on stdin)."""
    result = subprocess.run(
        ["/bin/sh", "-c", cagehost.shell_command(script)], input=stdin, capture_output=True, text=True, timeout=timeout
    )
    if check and result.returncode != 0:
        pytest.fail(f"script exited {result.returncode}: {result.stderr.strip()}")
    return result


def traced(script: str, stdin: str, trace: Path) -> tuple[subprocess.CompletedProcess, str]:
    """Run a script under strace, recording the argv and environment of every program it starts."""
    strace = require_tool("strace")
    result = subprocess.run(
        [
            strace,
            "-f",
            "-v",
            "-s",
            "65536",
            "-e",
            "trace=execve",
            "-o",
            str(trace),
            "/bin/sh",
            "-c",
            cagehost.shell_command(script),
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result, trace.read_text()


@pytest.fixture
def subid_files(tmp_path: Path) -> tuple[str, str]:
    """subuid/subgid files with a dockremap range, as dockerd --userns-remap=default writes them."""
    subuid, subgid = tmp_path / "subuid", tmp_path / "subgid"
    subuid.write_text(f"someone:100000:65536\ndockremap:{SUBID_START}:65536\n")
    subgid.write_text(f"dockremap:{SUBID_START + 1000}:65536\n")
    return str(subuid), str(subgid)


# --- 1. limits -------------------------------------------------------------------------------------


def cgroup_v2() -> bool:
    return (
        subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
        == "cgroup2fs"
    )


def controller_dir(controller: str, cgroup: str) -> Path:
    """The directory of `cgroup` in the hierarchy that has `controller` (v2: the unified tree)."""
    if cgroup_v2():
        return Path("/sys/fs/cgroup") / cgroup.lstrip("/")
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, options, *_ = line.split()
        if fstype == "cgroup" and controller in options.split(","):
            return Path(mount) / cgroup.lstrip("/")
    raise AssertionError(f"no cgroup v1 hierarchy with {controller}")


def every_cgroup_dir(cgroup: str) -> list[Path]:
    """`cgroup` in every mounted hierarchy (v1 controllers, named and unified ones), existing or not."""
    dirs = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if fstype in ("cgroup", "cgroup2"):
            dirs.append(Path(mount) / cgroup.lstrip("/"))
    return dirs


def remove_cgroup_tree(path: Path) -> None:
    """Teardown: kill what is left inside and remove the directories, deepest first."""
    if not path.is_dir():
        return
    for procs in path.rglob("cgroup.procs"):
        for pid in procs.read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
    for _ in range(50):
        dirs = sorted((p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        try:
            for d in [*dirs, path]:
                d.rmdir()
            return
        except OSError:
            time.sleep(0.1)


@pytest.fixture
def limited_cage() -> Iterator[str]:
    """A claw name whose cgroup is removed at teardown in every hierarchy, whatever the test did."""
    require_root()
    claw = claw_name("lim")
    yield claw
    for d in every_cgroup_dir(cagehost.cgroup_parent(claw, DRIVER)):
        remove_cgroup_tree(d)


def probe_cgroups(claw: str) -> list[Path]:
    """A leaf below the cage's cgroup in the pids, memory and cpu hierarchies (v2 forbids processes in
    a cgroup that hands controllers down, so probes never sit in the cage cgroup itself)."""
    leaves = {controller_dir(c, cagehost.cgroup_parent(claw, DRIVER)) / "probe" for c in ("pids", "memory", "cpu")}
    for leaf in leaves:
        leaf.mkdir(exist_ok=True)
    return sorted(leaves)


def run_in_cgroups(leaves: list[Path], code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """Run a Python snippet that is inside `leaves` from its first instruction."""

    def enter() -> None:
        for leaf in leaves:
            (leaf / "cgroup.procs").write_text(str(os.getpid()))

    return subprocess.run(
        [sys.executable, "-c", code, *args],
        preexec_fn=enter,  # noqa: PLW1509
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Forks children that sleep until the kernel refuses a fork; bounded by argv[1] attempts.
FORK_UNTIL_REFUSED = r"""
import errno, os, signal, sys, time
children, refused = [], None
try:
    for _ in range(int(sys.argv[1])):
        try:
            pid = os.fork()
        except OSError as e:
            refused = errno.errorcode.get(e.errno, str(e.errno))
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
finally:
    for pid in children:
        os.kill(pid, signal.SIGKILL)
    for pid in children:
        os.waitpid(pid, 0)
print(len(children), refused)
"""


def refused_forks(cgroup: Path) -> int:
    """Forks refused for the pids limit, over the cage's subtree (v1 and older v2 kernels count the
    event in the cgroup where the fork was tried, newer ones also in the one whose limit bit)."""
    return sum(
        int(re.search(r"^max (\d+)", events.read_text(), re.M).group(1))
        for events in [cgroup / "pids.events", *cgroup.rglob("*/pids.events")]
    )


BUSY_ONE_SECOND = r"""
import time
end = time.monotonic() + 1.0
while time.monotonic() < end:
    pass
print(time.process_time())
"""


def read(path: Path) -> str:
    return path.read_text().strip()


def test_limits_are_written_and_converge_on_rerun(limited_cage: str) -> None:
    claw = limited_cage
    bash(cagehost.render_limits_create(claw, cpus=Decimal("1.5"), memory=256 * MiB, pids=100, driver=DRIVER))
    # Pulumi re-runs create when an input changes: the new, smaller limits must apply.
    script = cagehost.render_limits_create(claw, cpus=Decimal("0.25"), memory=64 * MiB, pids=20, driver=DRIVER)
    bash(script)
    bash(script)
    parent = cagehost.cgroup_parent(claw, DRIVER)
    assert read(controller_dir("pids", parent) / "pids.max") == "20"
    if cgroup_v2():
        d = controller_dir("memory", parent)
        assert read(d / "memory.max") == str(64 * MiB)
        assert read(d / "memory.swap.max") == "0"
        assert read(d / "cpu.max") == "25000 100000"
        assert set(read(d / "cgroup.subtree_control").split()) >= {"cpu", "memory", "pids"}
    else:
        memory = controller_dir("memory", parent)
        assert read(memory / "memory.limit_in_bytes") == str(64 * MiB)
        if (memory / "memory.memsw.limit_in_bytes").exists():
            assert read(memory / "memory.memsw.limit_in_bytes") == str(64 * MiB)
        cpu = controller_dir("cpu", parent)
        assert (read(cpu / "cpu.cfs_quota_us"), read(cpu / "cpu.cfs_period_us")) == ("25000", "100000")


def test_pids_memory_and_cpu_limits_bite(limited_cage: str) -> None:
    claw = limited_cage
    bash(cagehost.render_limits_create(claw, cpus=Decimal("0.2"), memory=64 * MiB, pids=12, driver=DRIVER))
    leaves = probe_cgroups(claw)

    # A bounded fork bomb: the 12th task of the cage (the forker is the 1st) is refused with EAGAIN.
    result = run_in_cgroups(leaves, FORK_UNTIL_REFUSED, "200")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["11", "EAGAIN"]
    assert refused_forks(controller_dir("pids", cagehost.cgroup_parent(claw, DRIVER))) >= 1

    # 256 MiB of touched memory in a 64 MiB cage (no swap allowed): the OOM killer ends it.
    hog = run_in_cgroups(leaves, "b = b'x' * (256 << 20); print('survived')")
    assert hog.returncode == -signal.SIGKILL and "survived" not in hog.stdout

    # 0.2 CPUs: one second of busy looping gets about 0.2 s of CPU time.
    busy = run_in_cgroups(leaves, BUSY_ONE_SECOND)
    assert busy.returncode == 0, busy.stderr
    assert float(busy.stdout) < 0.45

    for leaf in leaves:
        leaf.rmdir()
    bash(cagehost.render_limits_delete(claw, driver=DRIVER))
    assert not any(d.exists() for d in every_cgroup_dir(cagehost.cgroup_parent(claw, DRIVER)))


def test_delete_refuses_while_a_process_is_inside_then_removes_everything(limited_cage: str) -> None:
    claw = limited_cage
    bash(cagehost.render_limits_create(claw, cpus=Decimal(1), memory=64 * MiB, pids=20, driver=DRIVER))
    leaves = probe_cgroups(claw)
    sleeper = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"],
        preexec_fn=lambda: [(leaf / "cgroup.procs").write_text(str(os.getpid())) for leaf in leaves],
    )
    try:
        refused = bash(cagehost.render_limits_delete(claw, driver=DRIVER), check=False)
        assert refused.returncode == 1
        assert "still holds 1 processes" in refused.stderr and "still running" in refused.stderr
        assert controller_dir("pids", cagehost.cgroup_parent(claw, DRIVER)).is_dir()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The empty probe leaves are removed with the cage's cgroup; a second delete is a no-op.
    bash(cagehost.render_limits_delete(claw, driver=DRIVER))
    bash(cagehost.render_limits_delete(claw, driver=DRIVER))
    assert not any(d.exists() for d in every_cgroup_dir(cagehost.cgroup_parent(claw, DRIVER)))


def test_delete_of_a_cage_never_created_succeeds() -> None:
    require_root()
    bash(cagehost.render_limits_delete(claw_name("none"), driver=DRIVER))


# --- 1b. limits with the real Docker engine --------------------------------------------------------


def docker(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([require_tool("docker"), *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        pytest.fail(f"docker {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}")
    return result


@pytest.fixture(scope="module")
def busybox_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-binary image imported from Debian's busybox-static (there is no Docker Hub here)."""
    require_root()
    require_tool("docker")
    info = subprocess.run(["docker", "info", "--format", "{{.CgroupDriver}}"], capture_output=True, text=True)
    if info.returncode != 0:
        unavailable(f"the Docker engine is not running: {info.stderr.strip()}")
    assert info.stdout.strip() == "cgroupfs", "cgroup_parent paths assume the cgroupfs driver"
    busybox = Path("/bin/busybox")
    if not busybox.exists() or not is_static(busybox):
        unavailable("busybox-static is not installed (apt-get install busybox-static)")
    tar_path = tmp_path_factory.mktemp("busybox") / "rootfs.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        for applet in ("sh", "sleep", "cat"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)
    tag = f"clawstaff-test/busybox:{secrets.token_hex(4)}"
    docker("import", str(tar_path), tag)
    yield tag
    docker("rmi", "-f", tag, check=False)


def is_static(path: Path) -> bool:
    ldd = subprocess.run(["ldd", str(path)], capture_output=True, text=True)
    return "not a dynamic executable" in ldd.stdout + ldd.stderr


@pytest.fixture
def container_names() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        docker("rm", "-f", name, check=False)


def test_a_container_below_the_cage_cgroup_is_held_to_its_pids_limit(
    limited_cage: str, busybox_image: str, container_names: list[str]
) -> None:
    claw = limited_cage
    bash(cagehost.render_limits_create(claw, cpus=Decimal("0.5"), memory=64 * MiB, pids=16, driver=DRIVER))
    name = f"clawstaff-test-{claw}"
    container_names.append(name)
    docker(
        "run",
        "-d",
        "--name",
        name,
        "--network",
        "none",
        "--cgroup-parent",
        cagehost.cgroup_parent(claw, DRIVER),
        busybox_image,
        "/bin/sleep",
        "300",
    )
    container_id = docker("inspect", "-f", "{{.Id}}", name).stdout.strip()
    pid = docker("inspect", "-f", "{{.State.Pid}}", name).stdout.strip()
    cgroups = Path(f"/proc/{pid}/cgroup").read_text()
    assert f"{cagehost.cgroup_parent(claw, DRIVER)}/{container_id}" in cgroups  # the container is below the cage

    parent = controller_dir("pids", cagehost.cgroup_parent(claw, DRIVER))
    own = parent / container_id
    assert read(own / "pids.max") == "max"  # Docker set no limit of its own: only the cage's can bite
    # Inside the container: start up to 40 sleepers; the cage allows 16 tasks in all.
    bomb = docker(
        "exec",
        name,
        "/bin/sh",
        "-c",
        "i=0; while [ $i -lt 40 ]; do /bin/sleep 300 & i=$((i+1)); done; echo all-started",
        check=False,
    )
    assert "all-started" not in bomb.stdout
    assert "can't fork" in bomb.stderr or "Resource temporarily unavailable" in bomb.stderr
    assert int(read(parent / "pids.current")) <= 16
    assert refused_forks(parent) >= 1

    refused = bash(cagehost.render_limits_delete(claw, driver=DRIVER), check=False)
    assert refused.returncode == 1 and "a container of this cage is still running" in refused.stderr

    docker("rm", "-f", name)
    deadline = time.monotonic() + 20
    while own.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    bash(cagehost.render_limits_delete(claw, driver=DRIVER))
    assert not any(d.exists() for d in every_cgroup_dir(cagehost.cgroup_parent(claw, DRIVER)))


# --- 2. key delivery -------------------------------------------------------------------------------


@pytest.fixture
def key_claw() -> Iterator[str]:
    require_root()
    claw = claw_name("key")
    yield claw
    subprocess.run(["rm", "-rf", "--", host_key_dir(claw)], check=False)


def findmnt(target: str, *columns: str) -> str:
    return subprocess.run(
        ["findmnt", "-n", "-o", ",".join(columns), "--mountpoint", target], capture_output=True, text=True
    ).stdout.strip()


def test_key_lands_on_tmpfs_readable_only_by_the_mapped_cage_user(
    key_claw: str, subid_files: tuple[str, str], tmp_path: Path
) -> None:
    claw = key_claw
    cage_key = base64.b64encode(secrets.token_bytes(64)).decode()
    script = cagehost.render_key_create(claw, uid=CONTAINER_UID, subuid_file=subid_files[0], subgid_file=subid_files[1])
    assert cage_key not in script
    result, trace = traced(script, cage_key + "\n", tmp_path / "trace")
    assert result.returncode == 0, result.stderr
    # No program the script started saw the key in its argv or environment; nothing printed it.
    assert "execve(" in trace and cage_key not in trace
    assert cage_key not in result.stdout + result.stderr
    assert result.stdout == ""  # Pulumi keeps a command's stdout in its state: nothing goes there

    assert findmnt(cagehost.KEY_TMPFS, "FSTYPE") == "tmpfs"
    options = findmnt(cagehost.KEY_TMPFS, "OPTIONS").split(",")
    assert {"nosuid", "nodev", "noexec"} <= set(options)
    key = Path(cagehost.host_key_path(claw))
    assert findmnt_of(key) == cagehost.KEY_TMPFS
    st, dst = key.stat(), key.parent.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
        0o400,
        SUBID_START + CONTAINER_UID,
        SUBID_START + 1000 + CONTAINER_UID,
    )
    assert (dst.st_mode & 0o7777, dst.st_uid) == (0o500, SUBID_START + CONTAINER_UID)
    assert key.read_text() == cage_key + "\n"  # what components.sealing.cage_key_file_text writes
    # The cage's (mapped) user can read it through the real path; its neighbour uid cannot.
    owner = subprocess.run(as_uid(SUBID_START + CONTAINER_UID, "cat", str(key)), capture_output=True, text=True)
    assert owner.returncode == 0 and owner.stdout == cage_key + "\n"
    other = subprocess.run(as_uid(SUBID_START + CONTAINER_UID + 1, "cat", str(key)), capture_output=True, text=True)
    assert other.returncode != 0 and "Permission denied" in other.stderr
    assert sorted(os.listdir(key.parent)) == ["key"]  # no temporary file left behind
    # Not on the disk-backed places a careless script would use. Files a script writes a key into are
    # small: files over 64 MiB (a VM's disk image, when the VM tier runs beside this one) are not read.
    for place in ("/tmp", "/var/tmp", "/run"):
        prune = ["(", "-name", "clawstaff", "-o", "-name", "pytest-of-root", ")", "-prune"]
        files = ["-o", "-type", "f", "-size", "-64M", "-print0"]
        grep = subprocess.run(
            f"find {place} -xdev {shlex.join(prune + files)} | xargs -0 -r grep -lsF -D skip -- {shlex.quote(cage_key)}",
            shell=True,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert grep.stdout == "", f"key found in {grep.stdout}"

    # Idempotent, and a re-run with a new key replaces it (rename: never half written).
    bash(script, cage_key + "\n")
    new_key = base64.b64encode(secrets.token_bytes(64)).decode()
    bash(script, new_key)
    assert key.read_text() == new_key + "\n" and key.stat().st_mode & 0o7777 == 0o400

    bash(cagehost.render_key_delete(claw))
    assert not key.parent.exists()
    bash(cagehost.render_key_delete(claw))  # delete twice: still fine


def as_uid(uid: int, *argv: str) -> list[str]:
    return [require_tool("setpriv"), f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


def findmnt_of(path: Path) -> str:
    return subprocess.run(
        ["findmnt", "-n", "-o", "TARGET", "-T", str(path)], capture_output=True, text=True
    ).stdout.strip()


@pytest.mark.parametrize(
    "stdin, message",
    [
        ("", "nothing on stdin"),
        ("not base64 !!", "not base64"),
        (base64.b64encode(b"short").decode(), "must decode to 64 bytes"),
    ],
)
def test_key_create_refuses_a_bad_key_without_echoing_it(
    key_claw: str, subid_files: tuple[str, str], stdin: str, message: str
) -> None:
    script = cagehost.render_key_create(
        key_claw, uid=CONTAINER_UID, subuid_file=subid_files[0], subgid_file=subid_files[1]
    )
    result = bash(script, stdin, check=False)
    assert result.returncode == 1 and message in result.stderr
    assert not stdin or stdin not in result.stderr
    assert not Path(cagehost.host_key_path(key_claw)).exists()


def test_key_create_fails_clearly_without_userns_remap(key_claw: str, tmp_path: Path) -> None:
    subuid = tmp_path / "subuid"
    subuid.write_text("someone:100000:65536\n")
    script = cagehost.render_key_create(key_claw, uid=CONTAINER_UID, subuid_file=str(subuid), subgid_file=str(subuid))
    result = bash(script, base64.b64encode(secrets.token_bytes(64)).decode(), check=False)
    assert result.returncode == 1 and "userns-remap is not configured" in result.stderr
    assert not Path(host_key_dir(key_claw)).exists()


def test_key_delete_of_a_cage_never_created_succeeds() -> None:
    require_root()
    bash(cagehost.render_key_delete(claw_name("none")))


# --- 3. encrypted volume ---------------------------------------------------------------------------


def loops_of(image: Path) -> list[str]:
    out = subprocess.run(["losetup", "-j", str(image), "-n", "-O", "NAME"], capture_output=True, text=True)
    return out.stdout.split()


@pytest.fixture
def volume_claw() -> Iterator[str]:
    """A claw whose volume is torn down at the end even if the test or the delete script failed."""
    require_root()
    for tool in ("mkfs.ext4", "losetup", "openssl", "python3", "setpriv", "unshare"):
        require_tool(tool)
    if not Path("/sys/fs/ext4/features/encryption").exists() or not Path("/dev/loop-control").exists():
        unavailable("this kernel has no ext4 encryption or no loop devices")
    claw = claw_name("vol")
    yield claw
    vdir = Path(host_volume_dir(claw))
    subprocess.run(["umount", "-l", str(vdir / "mnt")], capture_output=True)
    for loop in loops_of(vdir / "backing.img"):
        subprocess.run(["losetup", "-d", loop], capture_output=True)
    subprocess.run(["rm", "-rf", "--", str(vdir)], check=False)


def kek_stdin(claw: str) -> str:
    return cagehost.volume_kek_stdin(cagehost.derive_volume_kek("test sealing key, not a real one", claw))


def unwrap(vdir: Path, kek_text: str) -> str:
    """The volume key, unwrapped the way the create script does it (test-side check only)."""
    read_fd, write_fd = os.pipe()
    os.write(write_fd, kek_text.strip().encode())
    os.close(write_fd)
    try:
        out = subprocess.run(
            [
                "openssl",
                "enc",
                "-d",
                *cagehost.WRAP_CIPHER_ARGS.split(),
                "-pass",
                f"fd:{read_fd}",
                "-in",
                str(vdir / "volume-key.wrapped"),
            ],
            pass_fds=(read_fd,),
            capture_output=True,
            text=True,
        )
    finally:
        os.close(read_fd)
    assert out.returncode == 0, out.stderr
    return out.stdout


def fscrypt_helper(*args: str) -> str:
    return run(["python3", "-c", hostscripts.fscrypt_helper(), *args]).stdout.strip()


def test_volume_is_encrypted_capped_idempotent_and_shredded(
    volume_claw: str, subid_files: tuple[str, str], tmp_path: Path
) -> None:
    claw = volume_claw
    size = 64 * MiB
    kek = kek_stdin(claw)
    create = cagehost.render_volume_create(
        claw, size=size, uid=CONTAINER_UID, subuid_file=subid_files[0], subgid_file=subid_files[1]
    )
    assert kek.strip() not in create
    result, trace = traced(create, kek, tmp_path / "trace")
    assert result.returncode == 0, result.stderr

    vdir = Path(host_volume_dir(claw))
    image, mnt, data = vdir / "backing.img", vdir / "mnt", Path(cagehost.volume_mount_path(claw))
    volume_key = unwrap(vdir, kek)
    assert len(base64.b64decode(volume_key, validate=True)) == 64
    # Neither the KEK nor the volume key reached a program's argv or environment, or the output.
    for secret in (kek.strip(), volume_key):
        assert secret not in trace and secret not in result.stdout + result.stderr
    assert "execve(" in trace
    assert result.stdout == ""

    # Exactly `size` bytes, sparse, on one loop device, mounted nosuid,nodev,noexec.
    assert image.stat().st_size == size and image.stat().st_blocks * 512 < size // 2
    loops = loops_of(image)
    assert len(loops) == 1
    assert findmnt(str(mnt), "SOURCE") == loops[0]
    assert {"nosuid", "nodev", "noexec"} <= set(findmnt(str(mnt), "OPTIONS").split(","))
    st = data.stat()
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (
        0o700,
        SUBID_START + CONTAINER_UID,
        SUBID_START + 1000 + CONTAINER_UID,
    )
    assert (vdir / "volume-key.wrapped").stat().st_mode & 0o777 == 0o600

    # Encrypted at rest: a marker written through the encrypted dir is not in the backing file's
    # bytes, while the same kind of marker written outside it (a control) is.
    marker, control = f"CLAW-SECRET-{secrets.token_hex(8)}", f"CLAW-PLAIN-{secrets.token_hex(8)}"
    (data / "notes.txt").write_text(marker * 100)
    (mnt / "control.txt").write_text(control)
    run(["sync", "-f", str(mnt)])
    run(["sync"])
    raw = image.read_bytes()
    assert control.encode() in raw
    assert marker.encode() not in raw and b"notes.txt" not in raw
    (mnt / "control.txt").unlink()

    # The size is a hard cap: the cage's user fills the volume and gets ENOSPC; the host is untouched.
    # It starts inside the dir (as a bind mount would put it there): the parents are root-only.
    fill = subprocess.run(
        [
            "setpriv",
            f"--reuid={SUBID_START + CONTAINER_UID}",
            f"--regid={SUBID_START + 1000 + CONTAINER_UID}",
            "--clear-groups",
            "dd",
            "if=/dev/zero",
            "of=fill",
            "bs=1M",
            f"count={2 * size // MiB}",
        ],
        cwd=data,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert fill.returncode != 0 and "No space left on device" in fill.stderr
    assert (data / "fill").stat().st_size < size
    assert os.statvfs(str(mnt)).f_bavail == 0
    (data / "fill").unlink()

    # Idempotent: a second create changes nothing (same loop, one mount, same key, data readable).
    wrapped_before = (vdir / "volume-key.wrapped").read_bytes()
    bash(create, kek)
    assert loops_of(image) == loops
    assert findmnt(str(mnt), "SOURCE") == loops[0]
    assert (vdir / "volume-key.wrapped").read_bytes() == wrapped_before
    assert (data / "notes.txt").read_text() == marker * 100

    # After a reboot (no mount, no loop, no key in the kernel) create unwraps the stored key again;
    # a wrong KEK is refused and leaves the data locked.
    run(["umount", str(mnt)])
    run(["losetup", "-d", loops[0]])
    wrong = bash(create, kek_stdin("other-claw"), check=False)
    assert wrong.returncode == 1 and "cannot unwrap the volume key" in wrong.stderr
    assert not (data / "notes.txt").exists()  # names stay encrypted without the key
    bash(create, kek)
    assert (data / "notes.txt").read_text() == marker * 100

    # The delete script's first step on its own: taking the key out of the kernel locks the data at
    # once, although the volume stays mounted; create adds it back.
    key_id = fscrypt_helper("get_policy", str(data))
    fscrypt_helper("remove_key", key_id, str(mnt))
    assert not (data / "notes.txt").exists()
    bash(create, kek)
    assert (data / "notes.txt").read_text() == marker * 100

    # Delete refuses while another mount namespace (as a running container would) holds the volume.
    holder = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sleep", "60"])
    try:
        time.sleep(0.5)
        refused = bash(cagehost.render_volume_delete(claw), check=False)
        assert refused.returncode == 1 and "still mounted in another mount namespace" in refused.stderr
        assert (data / "notes.txt").exists()
    finally:
        holder.kill()
        holder.wait()

    loop = loops_of(image)
    bash(cagehost.render_volume_delete(claw))
    assert not vdir.exists()
    assert findmnt(str(mnt), "TARGET") == ""
    assert loops_of(image) == []
    assert all(str(image) not in line for line in run(["losetup", "-a"]).stdout.splitlines())
    assert all(
        not Path(f"/sys/block/{Path(d).name}/loop/backing_file").exists()
        or str(image) not in Path(f"/sys/block/{Path(d).name}/loop/backing_file").read_text()
        for d in loop
    )
    bash(cagehost.render_volume_delete(claw))  # delete twice: still fine


def test_volume_create_refuses_a_missing_kek_and_a_changed_size(volume_claw: str, subid_files: tuple[str, str]) -> None:
    claw = volume_claw
    kwargs = {"uid": CONTAINER_UID, "subuid_file": subid_files[0], "subgid_file": subid_files[1]}
    missing = bash(cagehost.render_volume_create(claw, size=32 * MiB, **kwargs), "", check=False)
    assert missing.returncode == 1 and "nothing on stdin" in missing.stderr
    assert not Path(host_volume_dir(claw)).exists()
    bash(cagehost.render_volume_create(claw, size=32 * MiB, **kwargs), kek_stdin(claw))
    resized = bash(cagehost.render_volume_create(claw, size=48 * MiB, **kwargs), kek_stdin(claw), check=False)
    assert resized.returncode == 1 and "resizing is not supported" in resized.stderr
    bash(cagehost.render_volume_delete(claw))
    assert not Path(host_volume_dir(claw)).exists()


def test_a_gvisor_claws_volume_lets_the_sandbox_root_walk_to_it_and_nobody_else(
    volume_claw: str, subid_files: tuple[str, str]
) -> None:
    """Under gVisor the sandbox's gofer, root of the daemon's user namespace (the first id of the
    dockremap range), makes the bind mount: it must walk from / to the claw's data directory. That group
    may walk the volume's directories (0710) and open the data as the claw's owner would be let in by its
    namespace root; another host user may not even walk in."""
    claw = volume_claw
    create = cagehost.render_volume_create(claw, size=32 * MiB, uid=CONTAINER_UID, subuid_file=subid_files[0],
                                           subgid_file=subid_files[1], sandbox_walk=True)  # fmt: skip
    bash(create, kek_stdin(claw))
    vdir = Path(host_volume_dir(claw))
    data = Path(cagehost.volume_mount_path(claw))
    sandbox_uid, sandbox_gid = SUBID_START, SUBID_START + 1000  # container root, mapped
    for d in (vdir.parent.parent, vdir.parent, vdir, vdir / "mnt"):
        st = d.stat()
        assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o710, 0, sandbox_gid), d
    walker = [require_tool("setpriv"), f"--reuid={sandbox_uid}", f"--regid={sandbox_gid}", "--clear-groups"]
    assert subprocess.run([*walker, "stat", "-c", "%a", str(data)], capture_output=True).returncode == 0
    listing = subprocess.run([*walker, "ls", str(vdir)], capture_output=True, text=True)
    assert listing.returncode != 0 and "Permission denied" in listing.stderr  # walk, not list
    for path in (data, vdir / "volume-key.wrapped"):
        other = subprocess.run(as_uid(54321, "stat", str(path)), capture_output=True, text=True)
        assert other.returncode != 0 and "Permission denied" in other.stderr, path
    # The runc form keeps the volume's own directories root's alone.
    bash(cagehost.render_volume_delete(claw))
    runc = cagehost.render_volume_create(claw, size=32 * MiB, uid=CONTAINER_UID, subuid_file=subid_files[0],
                                         subgid_file=subid_files[1])  # fmt: skip
    bash(runc, kek_stdin(claw))
    assert (vdir.stat().st_mode & 0o7777, vdir.stat().st_gid) == (0o700, 0)
    bash(cagehost.render_volume_delete(claw))


def test_volume_delete_of_a_volume_never_created_succeeds() -> None:
    require_root()
    bash(cagehost.render_volume_delete(claw_name("none")))
