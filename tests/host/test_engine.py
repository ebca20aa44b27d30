"""tools.engine: resolver handling (pure), and the start / no-op / restart / stop cycle driven on a
private engine in its own network namespace and directories (never the machine's main engine)."""

from __future__ import annotations

import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from components.hostconfig import NFT_TABLE
from tests.host.conftest import (
    busybox_rootfs_tar,
    child_pids,
    release_engine_files,
    require_root,
    require_tool,
    run,
    stop_pid,
)
from tools import engine as engine_tool
from tools.engine import EnginePaths, desired_files, host_resolvers


def test_host_resolvers_keep_ipv4_and_drop_loopback() -> None:
    resolv = (
        "# generated\nnameserver 127.0.0.53\nnameserver 10.255.255.53\nnameserver ::1\n"
        "nameserver 2001:db8::53\nsearch example\nnameserver 10.255.255.53\nnameserver bogus\n"
    )
    assert host_resolvers(resolv) == ["10.255.255.53"]
    assert host_resolvers("nameserver 127.0.0.53\n") == []


def test_desired_files_use_this_machines_resolvers_everywhere() -> None:
    daemon_json, rules = desired_files("nameserver 10.255.255.53\n")
    assert json.loads(daemon_json)["dns"] == ["10.255.255.53"]
    assert "elements = { 10.255.255.53 }" in rules
    assert "policy accept;" in rules.split("chain input")[1]  # host input left alone here
    daemon_json, _ = desired_files("nameserver 127.0.0.53\n")
    assert "dns" not in json.loads(daemon_json)  # Docker's own fallback instead of an unreachable stub


@pytest.fixture
def private_paths() -> Iterator[EnginePaths]:
    require_root()
    for tool in ("dockerd", "docker", "nsenter", "nft", "ip"):
        require_tool(tool)
    netns = f"cs-engine-{secrets.token_hex(3)}"
    root = Path(tempfile.mkdtemp(prefix="clawstaff-engine-"))
    root.chmod(0o711)  # userns-remap: the remapped root must traverse to its data directory
    run(["ip", "netns", "add", netns])
    paths = EnginePaths(
        daemon_json=root / "daemon.json",
        firewall=root / "firewall.nft",
        socket=root / "docker.sock",
        pidfile=root / "docker.pid",
        log=root / "dockerd.log",
        state=root / "engine.json",
        data_root=root / "data",
        exec_root=root / "exec",
        netns=netns,
    )
    try:
        yield paths
    finally:
        pid = engine_tool._running_pid(paths)
        if pid is not None:
            children = child_pids(pid)
            stop_pid(pid)
            for child in children:
                stop_pid(child)
        release_engine_files(root)
        subprocess.run(["rm", "-rf", str(root)], capture_output=True)
        subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def test_start_is_idempotent_restarts_on_change_and_stops(private_paths: EnginePaths) -> None:
    paths = private_paths
    assert engine_tool.status(paths, "nameserver 10.1.2.3\n")[0] == 1

    line = engine_tool.start(paths, "nameserver 10.1.2.3\n")
    assert line.startswith("engine: running") and line.endswith("[started]")
    assert "userns-remap=on" in line and "live-restore=on" in line and "insecure-registries=none" in line
    assert f"firewall=inet {NFT_TABLE} loaded" in line
    first_pid = engine_tool._running_pid(paths)
    assert first_pid is not None
    assert json.loads(paths.daemon_json.read_text())["dns"] == ["10.1.2.3"]
    listed = run(["nsenter", f"--net=/run/netns/{paths.netns}", "nft", "list", "table", "inet", NFT_TABLE]).stdout
    assert "cage_destination" in listed
    assert engine_tool.status(paths, "nameserver 10.1.2.3\n")[0] == 0

    # Same config: nothing restarts.
    assert engine_tool.start(paths, "nameserver 10.1.2.3\n").endswith("[unchanged]")
    assert engine_tool._running_pid(paths) == first_pid

    # Someone flushed our table: status says so, start puts it back without restarting dockerd.
    run(["nsenter", f"--net=/run/netns/{paths.netns}", "nft", "delete", "table", "inet", NFT_TABLE])
    assert engine_tool.status(paths, "nameserver 10.1.2.3\n")[0] == 3
    assert engine_tool.start(paths, "nameserver 10.1.2.3\n").endswith("[unchanged]")
    assert engine_tool._running_pid(paths) == first_pid
    assert engine_tool.firewall_loaded(paths)

    # Another config (the machine's resolver changed): status says stale, start restarts with it.
    assert engine_tool.status(paths, "nameserver 10.9.9.9\n")[0] == 3
    assert engine_tool.start(paths, "nameserver 10.9.9.9\n").endswith("[started]")
    second_pid = engine_tool._running_pid(paths)
    assert second_pid not in (None, first_pid)
    assert not Path(f"/proc/{first_pid}").exists()
    assert json.loads(paths.daemon_json.read_text())["dns"] == ["10.9.9.9"]

    assert engine_tool.stop(paths) == f"engine: stopped (pid {second_pid})"
    assert engine_tool.status(paths, "nameserver 10.9.9.9\n")[0] == 1
    assert engine_tool.stop(paths) == "engine: not running"


def test_cli_reports_bad_firewall_without_starting(private_paths: EnginePaths, monkeypatch, capsys) -> None:
    """Fail closed: when nft refuses the rules, dockerd is not started and nft's own message is shown."""
    monkeypatch.setattr(engine_tool, "render_nftables", lambda **kw: "table inet clawstaff { chain c { nonsense } }\n")
    paths = private_paths
    argv = [
        "start",
        "--netns",
        paths.netns,
        "--daemon-json",
        str(paths.daemon_json),
        "--firewall",
        str(paths.firewall),
        "--socket",
        str(paths.socket),
        "--pidfile",
        str(paths.pidfile),
        "--log",
        str(paths.log),
        "--state",
        str(paths.state),
        "--data-root",
        str(paths.data_root),
        "--exec-root",
        str(paths.exec_root),
    ]
    assert engine_tool.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"engine: nft refused {paths.firewall}:") and "syntax error" in err
    assert engine_tool._running_pid(paths) is None


def test_switching_to_userns_remap_carries_tagged_images(private_paths: EnginePaths) -> None:
    """An engine running without the hardened config (as a freshly installed docker.io does) keeps its
    locally built images across `start`, although userns-remap moves the data root."""
    require_tool("busybox")
    paths = private_paths
    for directory in (paths.data_root, paths.exec_root):
        directory.mkdir(parents=True, exist_ok=True)
    plain = paths.daemon_json.parent / "plain.json"
    plain.write_text("{}\n")
    subprocess.Popen(
        [
            "nsenter",
            f"--net=/run/netns/{paths.netns}",
            "dockerd",
            "--config-file",
            str(plain),
            "--pidfile",
            str(paths.pidfile),
            "-H",
            f"unix://{paths.socket}",
            "--data-root",
            str(paths.data_root),
            "--exec-root",
            str(paths.exec_root),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    before = engine_tool._wait_for_engine(paths)
    assert "name=userns" not in before["SecurityOptions"]
    docker = ["docker", "-H", f"unix://{paths.socket}"]
    subprocess.run(
        [*docker, "import", "-", "clawstaff-test/carried:1"],
        input=busybox_rootfs_tar(),
        check=True,
        capture_output=True,
    )

    line = engine_tool.start(paths, "nameserver 10.1.2.3\n")
    assert "userns-remap=on" in line and "carried 1 images" in line
    listed = run([*docker, "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]).stdout.split()
    assert "clawstaff-test/carried:1" in listed
    assert not list(Path("/var/tmp").glob("clawstaff-images-*.tar"))
