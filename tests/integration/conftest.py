"""Integration fixtures: the machine's real Docker engine and the project's real images.

An unreachable engine fails the test in CI (CI=true) and skips it elsewhere, with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
IMAGE_VERSION = (ROOT / "images" / "VERSION").read_text().strip()


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"{reason} (CI must provide it: .ci/run installs and starts docker.io)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_client():
    """A docker-py client to the local engine (DOCKER_HOST or the default socket)."""
    try:
        import docker
    except ImportError:
        _unavailable("the docker Python package is not installed (requirements-dev.txt)")
    try:
        client = docker.from_env(timeout=120)
        client.ping()
    except Exception as exc:  # docker-py raises several types for "no engine"
        _unavailable(f"no reachable Docker engine: {exc}")
    yield client
    client.close()


def _ensure_image(client, name: str) -> str:
    """The image ID of clawstaff/<name>:<version>, built with images/build.py if it is missing."""
    import docker.errors

    tag = f"clawstaff/{name}:{IMAGE_VERSION}"
    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        pass
    if os.geteuid() != 0:
        _unavailable(f"{tag} is not built and building it needs root (make images)")
    result = subprocess.run(
        [sys.executable, str(ROOT / "images" / "build.py"), name], capture_output=True, text=True, timeout=900
    )
    if result.returncode != 0:
        pytest.fail(f"building {tag} failed:\n{result.stderr[-3000:]}")
    return client.images.get(tag).id


@pytest.fixture(scope="session")
def claw_runtime_image(docker_client) -> str:
    return _ensure_image(docker_client, "claw-runtime")


@pytest.fixture(scope="session")
def egress_proxy_image(docker_client) -> str:
    return _ensure_image(docker_client, "egress-proxy")


@pytest.fixture
def run_to_completion(docker_client):
    """run(image, timeout=60, **docker_run_kwargs) -> (exit code, stdout, stderr); removes the container."""

    def run(image: str, *, timeout: int = 60, **kwargs) -> tuple[int, str, str]:
        container = docker_client.containers.run(image, detach=True, **kwargs)
        try:
            status = container.wait(timeout=timeout)
            out = container.logs(stdout=True, stderr=False).decode(errors="replace")
            err = container.logs(stdout=False, stderr=True).decode(errors="replace")
            return status["StatusCode"], out, err
        finally:
            container.remove(force=True)

    return run


@pytest.fixture
def hardened():
    """hardened(**extra) -> the docker run options of a cage (the README's isolation contract)."""

    def options(**extra) -> dict:
        base = dict(
            read_only=True,
            cap_drop=["ALL"],
            security_opt=["no-new-privileges"],
            tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=16m"},
            pids_limit=128,
            mem_limit="256m",
            labels={"clawstaff.test": "integration"},
        )
        return base | extra

    return options


@pytest.fixture(scope="session")
def isolation_bench(docker_client, claw_runtime_image, egress_proxy_image):
    """The `local` stack replayed onto this engine with the bench's outside world (tests/integration/
    bench.py); torn down at the end of the session (or earlier, by the teardown probes)."""
    import shutil

    from tests.integration import bench

    if os.geteuid() != 0:
        _unavailable("the isolation bench needs root (network namespaces, cgroups, loop devices)")
    for tool in ("ip", "nsenter", "unshare", "mount", "losetup", "mkfs.ext4", "grep", "sha256sum", "dockerd"):
        if shutil.which(tool) is None:
            _unavailable(f"{tool} is not installed (the isolation bench needs it)")
    scorecard = bench.Scorecard()
    instance = bench.start_bench(scorecard)
    try:
        yield instance
    finally:
        errors = instance.teardown()
        instance.outside.remove()
        scorecard.write()
        if errors:
            pytest.fail("the bench's teardown left resources behind: " + "; ".join(errors))
