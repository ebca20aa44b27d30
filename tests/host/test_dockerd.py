"""A real dockerd started with the production daemon.json, exactly as rendered, in its own network
namespace and directories (the machine's main engine is never touched), and what it then enforces."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.conventions import LABEL_CLAW, LABEL_ORG
from components.hostconfig import (
    LOCAL_CGROUP_DRIVER,
    LOG_MAX_FILE,
    LOG_MAX_SIZE,
    NOFILE_SOFT,
    daemon_config,
    render_daemon_json,
)
from tools.engine import raise_nofile_limit
from tests.host.conftest import (
    busybox_rootfs_tar,
    child_pids,
    release_engine_files,
    require_root,
    require_tool,
    run,
    stop_pid,
)

pytestmark = pytest.mark.host

IMAGE = "clawstaff-probe:busybox"


class Engine:
    def __init__(self, root: Path, socket: Path, netns: str, data_root: Path) -> None:
        self.root, self.socket, self.netns, self.data_root = root, socket, netns, data_root

    def docker(self, *argv: str, **kw) -> subprocess.CompletedProcess:
        return run(["docker", "-H", f"unix://{self.socket}", *argv], **kw)

    def info(self) -> dict:
        return json.loads(self.docker("info", "--format", "{{json .}}").stdout)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    require_root()
    for tool in ("dockerd", "docker", "nsenter", "ip"):
        require_tool(tool)
    netns = f"cs-dockerd-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="clawstaff-dockerd-"))
    root.chmod(0o711)  # userns-remap: the remapped root must traverse to its data directory
    config = root / "daemon.json"
    # The hosts' daemon.json but for the cgroup driver: this machine has no systemd, so runc cannot use
    # systemd's; the systemd form runs on the VM tier (tests/vm/test_vm_host.py, byte for byte).
    config.write_text(render_daemon_json(cgroup_driver=LOCAL_CGROUP_DRIVER))
    socket, data_root = root / "docker.sock", root / "data"
    log = open(root / "dockerd.log", "wb")
    run(["ip", "netns", "add", netns])
    proc = None
    try:
        # nsenter --net: only the network namespace; `ip netns exec` would remount /sys and hide cgroups.
        # Only flags that the rendered file does not set: dockerd refuses a directive given both ways,
        # so this also proves nothing in the file was overridden.
        proc = subprocess.Popen(
            [
                "nsenter",
                f"--net=/run/netns/{netns}",
                "dockerd",
                "--config-file",
                str(config),
                "--data-root",
                str(data_root),
                "--exec-root",
                str(root / "exec"),
                "--pidfile",
                str(root / "docker.pid"),
                "-H",
                f"unix://{socket}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=raise_nofile_limit,  # as the systemd units do (LimitNOFILE)
        )
        engine = Engine(root, socket, netns, data_root)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", f"unix://{socket}", "info"], capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(
                    "dockerd did not start with the rendered daemon.json:\n"
                    + (root / "dockerd.log").read_text(errors="replace")[-3000:]
                )
            time.sleep(0.5)
        yield engine
    finally:
        if proc is not None:
            # live-restore keeps containers alive when dockerd stops: remove them first.
            ids = subprocess.run(
                ["docker", "-H", f"unix://{socket}", "ps", "-aq"], capture_output=True, text=True
            ).stdout.split()
            if ids:
                subprocess.run(["docker", "-H", f"unix://{socket}", "rm", "-f", *ids], capture_output=True)
            dockerd_pid, children = proc.pid, child_pids(proc.pid)
            stop_pid(dockerd_pid)
            for child in children:  # the containerd dockerd started for itself
                stop_pid(child)
        log.close()
        release_engine_files(root)
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def test_docker_info_shows_the_hardening(engine: Engine) -> None:
    info = engine.info()
    assert "name=userns" in info["SecurityOptions"]
    assert "name=cgroupns" in info["SecurityOptions"]
    assert info["LiveRestoreEnabled"] is True
    assert info["LoggingDriver"] == "json-file"
    registries = info["RegistryConfig"]
    assert registries["InsecureRegistryCIDRs"] == ["127.0.0.0/8"]  # dockerd's built-in default, nothing added
    assert all(index["Secure"] for index in registries["IndexConfigs"].values())
    assert info["DockerRootDir"].endswith("/100000.100000")  # the remapped root's own data root


def test_no_tcp_socket(engine: Engine) -> None:
    """The engine's network namespace holds only dockerd: nothing listens on TCP there."""
    listening = run(["nsenter", f"--net=/run/netns/{engine.netns}", "ss", "-Hltn"]).stdout.strip()
    assert listening == ""


def test_default_bridge_has_icc_off_and_no_ipv6(engine: Engine) -> None:
    (bridge,) = json.loads(engine.docker("network", "inspect", "bridge").stdout)
    assert bridge["Options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert bridge["EnableIPv6"] is False


def test_user_networks_come_from_the_cage_pool(engine: Engine) -> None:
    engine.docker("network", "create", "--internal", "cg-pooltest")
    try:
        (network,) = json.loads(engine.docker("network", "inspect", "cg-pooltest").stdout)
        (ipam,) = network["IPAM"]["Config"]
        pool = daemon_config()["default-address-pools"][0]
        assert ipam["Subnet"].endswith(f"/{pool['size']}")
        assert ipam["Subnet"].startswith("198.1")
    finally:
        engine.docker("network", "rm", "cg-pooltest")


@pytest.fixture(scope="module")
def probe_container(engine: Engine) -> dict:
    """A container that floods its log past the rotation limit, then reports what it sees inside."""
    engine.docker(
        "import",
        "--change",
        'CMD ["/bin/sh"]',
        "-",
        IMAGE,
        input=busybox_rootfs_tar().decode("latin-1"),
        encoding="latin-1",
    )
    script = (
        # ~34 MB of log lines: more than three times max-size, so rotation must have happened.
        "busybox head -c 31000000 /dev/zero | busybox tr '\\0' x | busybox fold -w 1000; echo; "
        "echo NNP=$(busybox grep NoNewPrivs /proc/self/status | busybox cut -f2); "
        "echo UIDMAP=$(busybox cat /proc/self/uid_map); "
        "echo CORE=$(ulimit -c); "
        "echo NOFILE=$(ulimit -n); "
        "echo CGROUPS=$(busybox cut -d: -f3 /proc/self/cgroup | busybox sort -u)"
    )
    name = "probe-" + secrets.token_hex(3)
    engine.docker(
        "run",
        "--name",
        name,
        "--network",
        "none",
        "--label",
        f"{LABEL_CLAW}=probe-claw",
        "--label",
        f"{LABEL_ORG}=acme",
        IMAGE,
        "/bin/sh",
        "-c",
        script,
        timeout=180,
    )
    (inspected,) = json.loads(engine.docker("inspect", name).stdout)
    tail = engine.docker("logs", "--tail", "5", name).stdout.splitlines()
    report = dict(line.split("=", 1) for line in tail)
    return {"inspect": inspected, "report": report}


def test_log_options_apply_to_containers(probe_container: dict) -> None:
    log_config = probe_container["inspect"]["HostConfig"]["LogConfig"]
    assert log_config["Type"] == "json-file"
    assert log_config["Config"]["max-size"] == LOG_MAX_SIZE
    assert log_config["Config"]["max-file"] == LOG_MAX_FILE
    assert LABEL_CLAW in log_config["Config"]["labels"]


def test_logs_really_rotate_and_carry_the_cage_labels(probe_container: dict) -> None:
    log_path = Path(probe_container["inspect"]["LogPath"])
    files = sorted(log_path.parent.glob(log_path.name + "*"))
    assert len(files) > 1, "no rotation happened"
    assert len(files) <= int(LOG_MAX_FILE)
    assert log_path.stat().st_size <= 10 * 1024 * 1024 + 64 * 1024
    last = json.loads(log_path.read_text().splitlines()[-1])
    assert last["attrs"] == {LABEL_CLAW: "probe-claw", LABEL_ORG: "acme"}


def test_container_runs_remapped_without_new_privileges(probe_container: dict) -> None:
    report = probe_container["report"]
    assert report["NNP"] == "1"  # no-new-privileges from the daemon default
    inside, outside, _count = report["UIDMAP"].split()
    assert (inside, outside) == ("0", "100000")  # container root is host uid 100000
    assert report["CORE"] == "0"  # no core dumps of decrypted credentials
    assert report["NOFILE"] == str(NOFILE_SOFT)
    assert report["CGROUPS"] == "/"  # private cgroup namespace: the host's cgroup tree is invisible
