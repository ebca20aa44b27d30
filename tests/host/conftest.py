"""Helpers for the real-tool host tests: tool lookup (fail in CI, skip elsewhere) and throwaway
network namespaces that are removed even when a test fails."""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools.engine import _alive  # one definition: the engine tool waits on dockerd the same way

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

# Probing helpers run inside namespaces with this interpreter (no extra packages needed).
LISTENER = r"""
import socket, sys, threading
def serve(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""

PROBE = r"""
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("open")
except OSError:
    print("blocked")
"""


def require_tool(name: str) -> str:
    """Path of a real tool: a missing tool fails the test in CI and skips it elsewhere."""
    path = shutil.which(name) or next(
        (str(p) for p in (Path("/usr/sbin") / name, Path("/sbin") / name) if p.exists()), None
    )
    if path:
        return path
    if IN_CI:
        pytest.fail(f"{name} is not installed: CI must install it (see .ci/run)")
    pytest.skip(f"{name} is not installed here (apt-get install it, or run `bash .ci/run`)")


def require_root() -> None:
    if os.geteuid() == 0:
        return
    if IN_CI:
        pytest.fail("host tests need root (network namespaces, nft, dockerd)")
    pytest.skip("host tests need root (network namespaces, nft, dockerd)")


def run(argv: list[str], **kw) -> subprocess.CompletedProcess:
    """Run a command; on failure, fail the test with its stderr (never a bare CalledProcessError)."""
    result = subprocess.run(argv, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        pytest.fail(f"`{' '.join(argv)}` exited {result.returncode}: {result.stderr.strip() or result.stdout.strip()}")
    return result


class Namespaces:
    """Creates network namespaces and remembers them, so teardown removes every one."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.processes: list[subprocess.Popen] = []

    def new(self, role: str) -> str:
        name = f"cs-{role}-{secrets.token_hex(3)}"
        run(["ip", "netns", "add", name])
        self.names.append(name)
        run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"])
        return name

    def exec(self, ns: str, *argv: str) -> subprocess.CompletedProcess:
        return run(["ip", "netns", "exec", ns, *argv])

    def listen(self, ns: str, *ports: int) -> None:
        """A TCP listener on 0.0.0.0 for each port in `ns`, stopped at teardown."""
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER, *map(str, ports)],
            stdout=subprocess.PIPE,
            text=True,
        )
        self.processes.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def probe(self, ns: str, address: str, port: int, timeout: float = 1.0) -> str:
        """'open' when a TCP connection from `ns` to address:port succeeds, else 'blocked'."""
        out = run(["ip", "netns", "exec", ns, sys.executable, "-c", PROBE, address, str(port), str(timeout)])
        return out.stdout.strip()

    def cleanup(self) -> None:
        for proc in self.processes:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for name in reversed(self.names):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def namespaces() -> Iterator[Namespaces]:
    require_root()
    require_tool("ip")
    spaces = Namespaces()
    try:
        yield spaces
    finally:
        spaces.cleanup()


def release_engine_files(root: Path) -> None:
    """Unmount whatever a test engine left mounted below `root` (overlays, netns files), deepest first."""
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts if line.split()[1].startswith(str(root))]
    for point in sorted(points, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def stop_pid(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM a process this test started, wait, SIGKILL only if it ignores the request."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid` (dockerd's managed containerd), to stop them too."""
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in children.read_text().split()] if children.exists() else []


def busybox_rootfs_tar() -> bytes:
    """A one-binary root filesystem for `docker import` (no registry here): Debian's busybox-static,
    which needs no libraries, plus /bin/sh."""
    busybox = Path(require_tool("busybox"))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(busybox, arcname="bin/busybox")
        link = tarfile.TarInfo("bin/sh")
        link.type, link.linkname = tarfile.SYMTYPE, "busybox"
        tar.addfile(link)
    return buffer.getvalue()
